"""Elman RNN layer: PyTorch's ``nn.RNN`` (nonlinearity="tanh") layout.

Forward, one step (xp_t = x_t @ W_ih^T + b_ih is done by the caller for all T steps at once):

    h_t = tanh(xp_t + h_{t-1} @ W_hh^T + b_hh)        (B, H)  the only GEMM per step

Backward, one step (dh = dh_out_t + dh coming back from step t+1):

    da = dh * (1 - h_t^2)                             = dxp_t
    dh_{t-1} = da @ W_hh                              (B, H)  the only GEMM per step
    dW_hh = sum_t da_t^T @ h_{t-1}  (GEMMs per block of steps),  db_hh = sum_t,b da  (folded in)

Nothing is cached beyond hs. Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit

from .activations import STEP_MATH, tanh_act


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def elman(xp, hW, bias, h_next):
    """h_next = tanh(xp + hW + bias); all (H,). hW = W_hh @ h_prev without bias. Jordan's layers
    (jordan.py) run the same arithmetic on the fed-back output."""
    for j in range(h_next.shape[0]):
        h_next[j] = tanh_act(xp[j] + hW[j] + bias[j])


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def rnn_step(xp, bx, bias, b_hh, hW, h_prev, c_prev, h_next, c_next, gates, hn):
    """One row of one step, in the interface every cell's step shares (kernels/cells.py): ``elman``
    on xp, hW and bias; the other arguments are not used."""
    elman(xp, hW, bias, h_next)


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def rnn_step_backward(dh_out, dh, dq, h_prev, h, c_prev, c, gates, hn, dxp, da, db, dbx):
    """One row of one backward step, in the shared interface (kernels/cells.py); all (H,).
    da = (dh_out + dh) * (1 - h^2) (the same array as dxp); db += da. dq, h_prev, c_prev, c,
    gates, hn, dxp and dbx are not used."""
    one = h.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for j in range(h.shape[0]):
        d = (dh_out[j] + dh[j]) * (one - h[j] * h[j])
        da[j] = d
        db[j] += d


def rnn_state_grads(dh_out, dxp, W_hh, cache):
    """Total dL/dh_s (T, B, H) float64 for s = 1..T: dh_out[s] plus what step s+1 sends back,
    dxp_{s+1} @ W_hh, rebuilt from the backward's dxp. Plain NumPy, for inspection."""
    D = np.array(dh_out, dtype=np.float64)
    D[:-1] += dxp[1:] @ W_hh
    return D
