"""LSTM layer: PyTorch's ``nn.LSTM`` layout, gate order i, f, g, o.

Forward, one step (xp_t = x_t @ W_ih^T + b_ih is done by the caller for all T steps at once):

    a   = xp_t + h_{t-1} @ W_hh^T + b_hh              (B, 4H)  the only GEMM per step
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward, one step (dh = dh_out_t + dh coming back from step t+1, dc from step t+1):

    dc  += dh * o * (1 - tanh(c_t)^2)
    da_i = dc * g * i(1 - i)        da_f = dc * c_{t-1} * f(1 - f)
    da_g = dc * i * (1 - g^2)       da_o = dh * tanh(c_t) * o(1 - o)
    dc_{t-1} = dc * f               dh_{t-1} = da @ W_hh           (B, H)  the only GEMM per step
    dW_hh = sum_t da_t^T @ h_{t-1}  (GEMMs per block of steps),  db_hh = sum_t,b da  (folded in)

The cache is (gates, cs): post-activation gates and all cell states; tanh(c_t) is recomputed in
backward (cheaper than storing it). Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit

from .activations import STEP_MATH, sigmoid_act, tanh_act


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def lstm_step(xp, bx, bias, b_hh, hW, h_prev, c_prev, h_next, c_next, gates, hn):
    """One row of one step, in the interface every cell's step shares (kernels/cells.py). xp,
    hW (= W_hh @ h_prev, no bias), bias (both biases, or what xp lacks of them), gates: (4H,);
    c_prev, h_next, c_next: (H,). Writes h_next, c_next and the post-activation gates i, f, g, o;
    bx, b_hh, h_prev and hn are not used."""
    H = c_prev.shape[0]
    for j in range(H):
        i = sigmoid_act(xp[j] + hW[j] + bias[j])
        f = sigmoid_act(xp[H + j] + hW[H + j] + bias[H + j])
        g = tanh_act(xp[2 * H + j] + hW[2 * H + j] + bias[2 * H + j])
        o = sigmoid_act(xp[3 * H + j] + hW[3 * H + j] + bias[3 * H + j])
        c = f * c_prev[j] + i * g
        c_next[j] = c
        h_next[j] = o * tanh_act(c)
        gates[j] = i
        gates[H + j] = f
        gates[2 * H + j] = g
        gates[3 * H + j] = o


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def lstm_step_backward(dh_out, dh, dc, h_prev, h, c_prev, c, gates, hn, dxp, da, db, dbx):
    """One row of one backward step, in the shared interface (kernels/cells.py). dh_out, dh (from
    step t+1): (H,); dc: (H,) gradient wrt c_t on entry (the second carry), overwritten with the
    gradient wrt c_{t-1}; gates (4H,); c = c_t, c_prev: (H,); da (4H,) receives the pre-activation
    gradient (the same array as dxp: the input and recurrent products enter alike); db (4H,)
    accumulates it (bias gradient). h_prev, h, hn, dxp and dbx are not used."""
    H = c.shape[0]
    one = c.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for j in range(H):
        i = gates[j]
        f = gates[H + j]
        g = gates[2 * H + j]
        o = gates[3 * H + j]
        tc = tanh_act(c[j])
        dh_t = dh_out[j] + dh[j]
        dc_t = dc[j] + dh_t * o * (one - tc * tc)
        da_i = dc_t * g * (i - i * i)
        da_f = dc_t * c_prev[j] * (f - f * f)
        da_g = dc_t * i * (one - g * g)
        da_o = dh_t * tc * (o - o * o)
        da[j] = da_i
        da[H + j] = da_f
        da[2 * H + j] = da_g
        da[3 * H + j] = da_o
        db[j] += da_i
        db[H + j] += da_f
        db[2 * H + j] += da_g
        db[3 * H + j] += da_o
        dc[j] = dc_t * f


def lstm_state_grads(dh_out, dxp, W_hh, cache):
    """Total dL/dh_s (T, B, H) float64 for s = 1..T: dh_out[s] plus what step s+1 sends back,
    dxp_{s+1} @ W_hh, rebuilt from the backward's dxp (h enters step s+1 only through the gates;
    c is a separate state). Plain NumPy, for inspection."""
    D = np.array(dh_out, dtype=np.float64)
    D[:-1] += dxp[1:] @ W_hh
    return D
