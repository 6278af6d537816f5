"""GRU layer: PyTorch's ``nn.GRU`` layout and cuDNN form, gate order r, z, n.

Forward, one step (xp_t = x_t @ W_ih^T + b_ih is done by the caller for all T steps at once):

    a   = h_{t-1} @ W_hh^T + b_hh                     (B, 3H)  the only GEMM per step
    r   = sigmoid(xp_r + a_r)
    z   = sigmoid(xp_z + a_z)
    n   = tanh(xp_n + r * a_n)                        a_n = W_hn h_{t-1} + b_hn is cached as hn
    h_t = (1 - z) * n + z * h_{t-1}

Backward, one step (dh = dh_out_t + dh coming back from step t+1):

    dn_pre = dh * (1 - z) * (1 - n^2)
    dz_pre = dh * (h_{t-1} - n) * z(1 - z)
    dr_pre = dn_pre * a_n * r(1 - r)
    dxp    = [dr_pre, dz_pre, dn_pre]                 gradient wrt the input projection
    da     = [dr_pre, dz_pre, dn_pre * r]             gradient wrt the recurrent pre-activation
    dh_{t-1} = da @ W_hh + dh * z                     (B, H)  the only GEMM per step
    dW_hh = sum_t da_t^T @ h_{t-1}  (GEMMs per block of steps),  db_hh = sum_t,b da  (folded in)

The n block is why dxp and da differ and both are kept: dW_hh and db_hh must use da.
Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit

from .activations import STEP_MATH, sigmoid_act, tanh_act


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def gru_step(xp, bx, bias, b_hh, hW, h_prev, c_prev, h_next, c_next, gates, hn):
    """One row of one step, in the interface every cell's step shares (kernels/cells.py). xp, bx
    (an input bias not yet in xp, b_ih or zeros), hW (= W_hh @ h_prev, no bias), b_hh, gates:
    (3H,); h_prev, h_next, hn: (H,). Writes h_next, the post-activation gates r, z, n and
    hn = W_hn h + b_hn. b_ih and b_hh cannot be merged (b_hn sits inside r * (...)), so the
    summed ``bias`` is not used; nor are c_prev and c_next."""
    H = h_prev.shape[0]
    for j in range(H):
        r = sigmoid_act(xp[j] + bx[j] + hW[j] + b_hh[j])
        z = sigmoid_act(xp[H + j] + bx[H + j] + hW[H + j] + b_hh[H + j])
        a_n = hW[2 * H + j] + b_hh[2 * H + j]
        n = tanh_act(xp[2 * H + j] + bx[2 * H + j] + r * a_n)
        h_next[j] = n + z * (h_prev[j] - n)  # = (1 - z) n + z h_prev with one multiply
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = a_n


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def gru_step_backward(dh_out, dh_gemm, dh_skip, h_prev, h, c_prev, c, gates, hn, dxp, da, db, dbx):
    """The backward of gru_step for one row (the interface of kernels/cells.py). dh_out + dh_gemm +
    dh_skip is the gradient wrt h_t: dh_gemm = da_{t+1} @ W_hh, and dh_skip, the second carry,
    the direct path dh_{t+1} * z_{t+1} (summed here, which saves a pass), which this step replaces
    by its own, dh * z. db accumulates da (b_hh's gradient) and dbx dxp (b_ih's): (3H,) as gates,
    dxp and da; the others (H,). h, c_prev and c are not read."""
    H = h_prev.shape[0]
    one = h_prev.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for j in range(H):
        dh = dh_out[j] + dh_gemm[j] + dh_skip[j]
        r = gates[j]
        z = gates[H + j]
        n = gates[2 * H + j]
        dn_pre = dh * (one - z) * (one - n * n)
        dz_pre = dh * (h_prev[j] - n) * (z - z * z)
        dr_pre = dn_pre * hn[j] * (r - r * r)
        dxp[j] = dr_pre
        dxp[H + j] = dz_pre
        dxp[2 * H + j] = dn_pre
        da[j] = dr_pre
        da[H + j] = dz_pre
        da[2 * H + j] = dn_pre * r
        db[j] += dr_pre
        db[H + j] += dz_pre
        db[2 * H + j] += dn_pre * r
        dbx[j] += dr_pre
        dbx[H + j] += dz_pre
        dbx[2 * H + j] += dn_pre
        dh_skip[j] = dh * z


def gru_state_grads(dh_out, dxp, W_hh, cache):
    """Total dL/dh_s (T, B, H) float64 for s = 1..T: dh_out[s] plus what step s+1 sends back,
    da_{s+1} @ W_hh + dh_{s+1} * z_{s+1} (the formulas above), rebuilt from the backward's dxp
    (da is dxp with its n block times r). Plain NumPy, for inspection."""
    gates = cache[0]                                   # (T, B, 3H) post-activation r, z, n
    H = W_hh.shape[1]
    D = np.array(dh_out, dtype=np.float64)
    da = dxp.copy()
    da[..., 2 * H:] *= gates[..., :H]
    rec = da @ W_hh                                    # (T, B, H)
    for s in range(D.shape[0] - 2, -1, -1):
        D[s] += rec[s + 1] + D[s + 1] * gates[s + 1, :, H:2 * H]
    return D
