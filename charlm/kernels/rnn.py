"""Elman RNN layer: PyTorch's ``nn.RNN`` (nonlinearity="tanh") layout.

Forward, one step (xp_t = x_t @ W_ih^T + b_ih is done by the caller for all T steps at once):

    h_t = tanh(xp_t + h_{t-1} @ W_hh^T + b_hh)        (B, H)  the only GEMM per step

Backward, one step (dh = dh_out_t + dh coming back from step t+1):

    da = dh * (1 - h_t^2)                             = dxp_t
    dh_{t-1} = da @ W_hh                              (B, H)  the only GEMM per step
    dW_hh = sum_t da_t^T @ h_{t-1}  (one GEMM after the loop),  db_hh = sum_t,b da  (folded in)

Nothing is cached beyond hs. Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit

from .activations import STEP_MATH, tanh_act


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def rnn_step(xp, hW, bias, h_next):
    """One row of one step; all (H,). hW = W_hh @ h_prev without bias. Shared with generate."""
    for j in range(h_next.shape[0]):
        h_next[j] = tanh_act(xp[j] + hW[j] + bias[j])


@njit(cache=True, error_model="numpy", nogil=True)
def rnn_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, H) input projections x_t @ W_ih^T + b_ih
    W_hh: (H, H), b_hh: (H,)
    s0:   (1, B, H) initial h0
    returns hs (T+1, B, H) with hs[0] = h0; sT (1, B, H) = h_T
    """
    T, B, H = xp.shape
    hs = np.empty((T + 1, B, H), xp.dtype)
    hs[0] = s0[0]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, H), xp.dtype)
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, H)
        for b in range(B):
            rnn_step(xp[t, b], hW[b], b_hh, hs[t + 1, b])
    sT = np.empty((1, B, H), xp.dtype)
    sT[0] = hs[T]
    return hs, sT


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def rnn_step_backward(dh_out, dh, h, da, db):
    """One row of one backward step; all (H,). da = (dh_out + dh) * (1 - h^2); db += da."""
    one = h.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for j in range(h.shape[0]):
        d = (dh_out[j] + dh[j]) * (one - h[j] * h[j])
        da[j] = d
        db[j] += d


@njit(cache=True, error_model="numpy", nogil=True)
def rnn_backward(dh_out, dsT, W_hh, hs):
    """
    dh_out: (T, B, H) dL/dh_t for t = 1..T from above (layer above or decoder), not the recurrence
    dsT:    (1, B, H) dL/dh_T from whatever consumed the final state
    W_hh (H, H); hs as returned by rnn_forward
    returns dxp (T, B, H), dW_hh (H, H), db_hh (H,), ds0 (1, B, H)
    """
    T, B, H = dh_out.shape
    dt = dh_out.dtype
    dxp = np.empty((T, B, H), dt)
    db_hh = np.zeros(H, dt)
    ds0 = dsT.copy()
    dh = ds0[0]  # (B, H) gradient wrt h_t from step t+1; ends as dh0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            rnn_step_backward(dh_out[t, b], dh[b], hs[t + 1, b], dxp[t, b], db_hh)
        np.dot(dxp[t], W_hh, dh)  # (B, H) = (B, H) @ (H, H)
    dW_hh = np.empty((H, H), dt)
    np.dot(dxp.reshape(T * B, H).T, hs[:T].reshape(T * B, H), dW_hh)  # (H, T*B) @ (T*B, H)
    return dxp, dW_hh, db_hh, ds0


def rnn_state_grads(dh_out, dxp, W_hh, cache):
    """Total dL/dh_s (T, B, H) float64 for s = 1..T: dh_out[s] plus what step s+1 sends back,
    dxp_{s+1} @ W_hh, rebuilt from rnn_backward's dxp. Plain NumPy, for inspection."""
    D = np.array(dh_out, dtype=np.float64)
    D[:-1] += dxp[1:] @ W_hh
    return D
