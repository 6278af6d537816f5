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
    dW_hh = sum_t da_t^T @ h_{t-1}  (one GEMM after the loop),  db_hh = sum_t,b da  (folded in)

The n block is why dxp and da differ and both are kept: dW_hh and db_hh must use da.
Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit

from .activations import STEP_MATH, sigmoid_act, tanh_act


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def gru_step(xp, bx, hW, bias, h_prev, h_next, gates, hn):
    """One row of one step. xp, bx (an input bias not yet in xp, b_ih or zeros), hW (= W_hh @ h_prev,
    no bias), bias (b_hh), gates: (3H,); h_prev, h_next, hn: (H,). Writes h_next, the
    post-activation gates r, z, n and hn = W_hn h + b_hn. Shared by gru_forward, the layer kernels
    (layer.py) and generation, so the recurrence is written once. (b_ih and b_hh cannot be merged: b_hn sits
    inside r * (...).)"""
    H = h_prev.shape[0]
    for j in range(H):
        r = sigmoid_act(xp[j] + bx[j] + hW[j] + bias[j])
        z = sigmoid_act(xp[H + j] + bx[H + j] + hW[H + j] + bias[H + j])
        a_n = hW[2 * H + j] + bias[2 * H + j]
        n = tanh_act(xp[2 * H + j] + bx[2 * H + j] + r * a_n)
        h_next[j] = n + z * (h_prev[j] - n)  # = (1 - z) n + z h_prev with one multiply
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = a_n


@njit(cache=True, error_model="numpy", nogil=True)
def gru_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, 3H) input projections x_t @ W_ih^T + b_ih
    W_hh: (3H, H), b_hh: (3H,)
    s0:   (1, B, H) initial h0
    returns hs (T+1, B, H) with hs[0] = h0; sT (1, B, H) = h_T;
            gates (T, B, 3H) post-activation r, z, n; hn (T, B, H) = W_hn h_{t-1} + b_hn
    """
    T, B, G = xp.shape
    H = G // 3
    hs = np.empty((T + 1, B, H), xp.dtype)
    gates = np.empty((T, B, G), xp.dtype)
    hn = np.empty((T, B, H), xp.dtype)
    hs[0] = s0[0]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, 3H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, G), xp.dtype)
    no_bias = np.zeros(G, xp.dtype)  # xp already holds b_ih
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, 3H)
        for b in range(B):
            gru_step(xp[t, b], no_bias, hW[b], b_hh, hs[t, b], hs[t + 1, b], gates[t, b], hn[t, b])
    sT = np.empty((1, B, H), xp.dtype)
    sT[0] = hs[T]
    return hs, sT, gates, hn


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def gru_step_backward(dh_out, dh_gemm, dh_skip, gates, hn, h_prev, dxp, da, db, dbx):
    """One row of one backward step. The gradient wrt h_t is dh_out + dh_gemm + dh_skip, where
    dh_gemm = da_{t+1} @ W_hh and dh_skip = dh_{t+1} * z_{t+1} (the direct path); summing here
    saves a pass. dh_skip is overwritten with this step's direct path dh * z.
    gates, dxp, da, db, dbx: (3H,); the rest (H,). db accumulates da (b_hh's gradient) and dbx
    the n block of dxp (b_ih's gradient is db with its n block replaced by dbx's)."""
    H = h_prev.shape[0]
    one = h_prev.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for j in range(H):
        r = gates[j]
        z = gates[H + j]
        n = gates[2 * H + j]
        dh = dh_out[j] + dh_gemm[j] + dh_skip[j]
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
        dbx[2 * H + j] += dn_pre
        dh_skip[j] = dh * z


@njit(cache=True, error_model="numpy", nogil=True)
def gru_backward(dh_out, dsT, W_hh, hs, gates, hn):
    """
    dh_out: (T, B, H) dL/dh_t for t = 1..T from above (layer above or decoder), not the recurrence
    dsT:    (1, B, H) dL/dh_T from whatever consumed the final state
    W_hh (3H, H); hs, gates, hn as returned by gru_forward
    returns dxp (T, B, 3H), dW_hh (3H, H), db_hh (3H,), ds0 (1, B, H)
    """
    T, B, H = dh_out.shape
    G = 3 * H
    dt = dh_out.dtype
    dxp = np.empty((T, B, G), dt)
    da = np.empty((T, B, G), dt)  # recurrent pre-activation gradients, for dW_hh
    db_hh = np.zeros(G, dt)
    dh_gemm = np.zeros((B, H), dt)
    dh_skip = dsT[0].copy()  # (B, H) the final-state gradient enters like a direct path
    dbx = np.zeros(G, dt)  # unused here (the caller sums dxp)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            gru_step_backward(dh_out[t, b], dh_gemm[b], dh_skip[b], gates[t, b], hn[t, b],
                              hs[t, b], dxp[t, b], da[t, b], db_hh, dbx)
        np.dot(da[t], W_hh, dh_gemm)  # (B, H) = (B, 3H) @ (3H, H)
    dW_hh = np.empty((G, H), dt)
    np.dot(da.reshape(T * B, G).T, hs[:T].reshape(T * B, H), dW_hh)  # (3H, T*B) @ (T*B, H)
    ds0 = np.empty((1, B, H), dt)
    ds0[0] = dh_gemm + dh_skip
    return dxp, dW_hh, db_hh, ds0


def gru_state_grads(dh_out, dxp, W_hh, cache):
    """Total dL/dh_s (T, B, H) float64 for s = 1..T: dh_out[s] plus what step s+1 sends back,
    da_{s+1} @ W_hh + dh_{s+1} * z_{s+1} (the formulas above), rebuilt from gru_backward's dxp
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
