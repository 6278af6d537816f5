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
from numba import njit, prange

from .activations import STEP_MATH, tanh_act
from .parallel import MR, block_weight_grads, matmul_packed, matmul_rec, pack_panels, scatter_row, zero_parts


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def rnn_step(xp, hW, bias, h_next):
    """One row of one step; all (H,). hW = W_hh @ h_prev without bias. Shared with generate."""
    for j in range(h_next.shape[0]):
        h_next[j] = tanh_act(xp[j] + hW[j] + bias[j])


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
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


# -- the batch-parallel pair: same arithmetic, streams split across threads (kernels/parallel.py) ----


@njit(cache=True, parallel=True, error_model="numpy")
def rnn_forward_par(x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, nchunks, tb):
    """rnn_forward for a whole layer with the streams split across threads and the input projection
    done per block of ``tb`` steps, exactly as lstm_forward_par (see it for x_in / table / ids).
    b_ih, b_hh (H,); s0 (1, B, H). Writes hs (T+1, B, H)."""
    T = hs.shape[0] - 1
    B = hs.shape[1]
    H = W_hh.shape[0]
    bias = b_ih + b_hh
    P = pack_panels(W_hh, True)  # W_hh^T in register-tile panels, once per chunk
    project = x_in.shape[0] > 0
    I = x_in.shape[2]
    P_ih = pack_panels(W_ih if project else W_ih[:0], True)  # W_ih^T panels (empty for the table)
    for k in prange(nchunks):
        r0 = k * B // nchunks
        r1 = (k + 1) * B // nchunks
        R = r1 - r0
        hW = np.empty((R, H), hs.dtype)
        tmp = np.empty((MR, P.shape[2]), hs.dtype)
        X = np.empty((tb * R if project else 0, I), hs.dtype)
        XP = np.empty((tb * R if project else 0, H), hs.dtype)
        for b in range(r0, r1):
            hs[0, b] = s0[0, b]
        for t0 in range(0, T if R > 0 else 0, tb):
            t1 = min(T, t0 + tb)
            if project:
                for t in range(t0, t1):
                    X[(t - t0) * R:(t - t0 + 1) * R] = x_in[t, r0:r1]
                matmul_packed(X[:(t1 - t0) * R], P_ih, XP[:(t1 - t0) * R], tmp)
            for t in range(t0, t1):
                matmul_rec(hs[t, r0:r1], P, W_hh, True, hW, tmp)  # (rows, H)
                for b in range(r0, r1):
                    xrow = XP[(t - t0) * R + b - r0] if project else table[ids[t, b]]
                    rnn_step(xrow, hW[b - r0], bias, hs[t + 1, b])


@njit(cache=True, parallel=True, error_model="numpy")
def rnn_backward_par(dh_out, dsT, W_hh, hs, x_in, W_ih, ids, dW_hh, dW_ih, db, dtab, dx, ds0, nchunks, tb):
    """rnn_backward for a whole layer, streams split across threads, weight gradients per block of
    ``tb`` steps, as lstm_backward_par (see it for the arguments)."""
    T, B, H = dh_out.shape
    project = x_in.shape[0] > 0
    I = x_in.shape[2]
    scatter = ids.shape[0] > 0
    P = pack_panels(W_hh, False)  # W_hh in register-tile panels, once per chunk
    P_ih = pack_panels(W_ih if dx.shape[0] > 0 else W_ih[:0], False)  # for dx = dX @ W_ih
    for k in prange(nchunks):
        r0 = k * B // nchunks
        r1 = (k + 1) * B // nchunks
        R = r1 - r0
        zero_parts(k, R, db, dtab, scatter, dW_hh, dW_ih, project)
        tmp = np.empty((MR, P.shape[2]), dh_out.dtype)
        dX = np.empty((tb * R, H), dh_out.dtype)
        Hp = np.empty((tb * R, H), dh_out.dtype)
        Xg = np.empty((tb * R if project else 0, I), dh_out.dtype)
        DX = np.empty((tb * R if dx.shape[0] > 0 else 0, I), dh_out.dtype)
        for b in range(r0, r1):
            ds0[0, b] = dsT[0, b]
        dh = ds0[0, r0:r1]
        for t1 in range(T if R > 0 else 0, 0, -tb):
            t0 = max(0, t1 - tb)
            n = (t1 - t0) * R
            for t in range(t1 - 1, t0 - 1, -1):
                j = (t - t0) * R
                for b in range(r0, r1):
                    rnn_step_backward(dh_out[t, b], dh[b - r0], hs[t + 1, b], dX[j + b - r0], db[k])
                    if scatter:
                        scatter_row(dtab[k, ids[t, b]], dX[j + b - r0])
                matmul_rec(dX[j:j + R], P, W_hh, False, dh, tmp)  # (rows, H)
            block_weight_grads(dX[:n], dX[:n], hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh[k], dW_ih[k],
                               P_ih, tmp, dx, t1 == T)
