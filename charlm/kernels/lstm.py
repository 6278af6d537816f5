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
    dW_hh = sum_t da_t^T @ h_{t-1}  (one GEMM after the loop),  db_hh = sum_t,b da  (folded in)

The cache is (gates, cs): post-activation gates and all cell states; tanh(c_t) is recomputed in
backward (cheaper than storing it). Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit, prange

from .activations import STEP_MATH, sigmoid_act, tanh_act
from .parallel import MR, block_weight_grads, matmul_packed, matmul_rec, pack_panels, scatter_row, zero_parts


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def lstm_step(xp, hW, bias, c_prev, h_next, c_next, gates):
    """One row of one step. xp, hW (= W_hh @ h_prev, no bias), bias, gates: (4H,); c_prev,
    h_next, c_next: (H,). Writes h_next, c_next and the post-activation gates i, f, g, o.
    Shared by lstm_forward and generate, so the recurrence is written once."""
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


@njit(cache=True, error_model="numpy")
def lstm_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, 4H) input projections x_t @ W_ih^T + b_ih
    W_hh: (4H, H), b_hh: (4H,)
    s0:   (2, B, H) initial (h0, c0)
    returns hs (T+1, B, H) with hs[0] = h0; sT (2, B, H) = (h_T, c_T);
            gates (T, B, 4H) post-activation i, f, g, o; cs (T+1, B, H) with cs[0] = c0
    """
    T, B, G = xp.shape
    H = G // 4
    hs = np.empty((T + 1, B, H), xp.dtype)
    cs = np.empty((T + 1, B, H), xp.dtype)
    gates = np.empty((T, B, G), xp.dtype)
    hs[0] = s0[0]
    cs[0] = s0[1]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, 4H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, G), xp.dtype)
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, 4H)
        for b in range(B):
            lstm_step(xp[t, b], hW[b], b_hh, cs[t, b], hs[t + 1, b], cs[t + 1, b], gates[t, b])
    sT = np.empty((2, B, H), xp.dtype)
    sT[0] = hs[T]
    sT[1] = cs[T]
    return hs, sT, gates, cs


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def lstm_step_backward(dh_out, dh, dc, gates, c, c_prev, da, db):
    """One row of one backward step. dh_out, dh (from step t+1): (H,); dc: (H,) gradient wrt c_t
    on entry, overwritten with the gradient wrt c_{t-1}; gates (4H,); c = c_t, c_prev: (H,);
    da (4H,) receives the pre-activation gradient; db (4H,) accumulates it (bias gradient)."""
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


@njit(cache=True, error_model="numpy")
def lstm_backward(dh_out, dsT, W_hh, hs, gates, cs):
    """
    dh_out: (T, B, H) dL/dh_t for t = 1..T from above (layer above or decoder), not the recurrence
    dsT:    (2, B, H) dL/d(h_T, c_T) from whatever consumed the final state
    W_hh (4H, H); hs, gates, cs as returned by lstm_forward
    returns dxp (T, B, 4H), dW_hh (4H, H), db_hh (4H,), ds0 (2, B, H)
    """
    T, B, H = dh_out.shape
    G = 4 * H
    dt = dh_out.dtype
    dxp = np.empty((T, B, G), dt)
    db_hh = np.zeros(G, dt)
    ds0 = dsT.copy()
    dh = ds0[0]  # (B, H) gradient wrt h_t from step t+1; ends as dh0
    dc = ds0[1]  # (B, H) gradient wrt c_t; ends as dc0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            lstm_step_backward(dh_out[t, b], dh[b], dc[b], gates[t, b], cs[t + 1, b], cs[t, b],
                               dxp[t, b], db_hh)
        np.dot(dxp[t], W_hh, dh)  # (B, H) = (B, 4H) @ (4H, H)
    dW_hh = np.empty((G, H), dt)
    np.dot(dxp.reshape(T * B, G).T, hs[:T].reshape(T * B, H), dW_hh)  # (4H, T*B) @ (T*B, H)
    return dxp, dW_hh, db_hh, ds0


# -- the batch-parallel pair: same arithmetic, streams split across threads (kernels/parallel.py) ----


@njit(cache=True, parallel=True, error_model="numpy")
def lstm_forward_par(x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, cs, gates, nchunks, tb):
    """A whole LSTM layer forward (input projection included) with the B streams split into
    ``nchunks`` blocks, each block's recurrence on one thread with single-threaded BLAS: no
    synchronisation per step. Same arithmetic as lstm_forward; writes hs, cs, gates as it returns them.

    The layer's input, one of two ways:
      x_in (T, B, I) not empty: the input itself (embeddings or the layer below's outputs). Each
          thread projects ``tb`` steps of its streams at a time, X @ W_ih^T (tb*rows, I) @ (I, 4H),
          so the (T, B, 4H) projection is never stored whole;
      x_in empty (layer 0): ``table`` (V, 4H) = E @ W_ih^T, the embedding folded into W_ih, read
          at row ids[t, b]: the projection is a gather.
    b_ih, b_hh (4H,) are added in the step; W_ih (4H, I); W_hh (4H, H); s0 (2, B, H)."""
    T = hs.shape[0] - 1
    B = hs.shape[1]
    G = W_hh.shape[0]
    H = G // 4
    bias = b_ih + b_hh
    P = pack_panels(W_hh, True)  # W_hh^T in register-tile panels, once per chunk
    project = x_in.shape[0] > 0
    I = x_in.shape[2]
    P_ih = pack_panels(W_ih if project else W_ih[:0], True)  # W_ih^T panels (empty for the table)
    for k in prange(nchunks):
        r0 = k * B // nchunks
        r1 = (k + 1) * B // nchunks
        R = r1 - r0
        hW = np.empty((R, G), hs.dtype)
        tmp = np.empty((MR, P.shape[2]), hs.dtype)
        X = np.empty((tb * R if project else 0, I), hs.dtype)   # the block's inputs, rows contiguous
        XP = np.empty((tb * R if project else 0, G), hs.dtype)  # and their projections
        for b in range(r0, r1):
            hs[0, b] = s0[0, b]
            cs[0, b] = s0[1, b]
        for t0 in range(0, T if R > 0 else 0, tb):
            t1 = min(T, t0 + tb)
            if project:
                for t in range(t0, t1):
                    X[(t - t0) * R:(t - t0 + 1) * R] = x_in[t, r0:r1]
                matmul_packed(X[:(t1 - t0) * R], P_ih, XP[:(t1 - t0) * R], tmp)
            for t in range(t0, t1):
                matmul_rec(hs[t, r0:r1], P, W_hh, True, hW, tmp)  # (rows, 4H)
                for b in range(r0, r1):
                    xrow = XP[(t - t0) * R + b - r0] if project else table[ids[t, b]]
                    lstm_step(xrow, hW[b - r0], bias, cs[t, b], hs[t + 1, b], cs[t + 1, b], gates[t, b])


@njit(cache=True, parallel=True, error_model="numpy")
def lstm_backward_par(dh_out, dsT, W_hh, hs, gates, cs, x_in, W_ih, ids, dW_hh, dW_ih, db, dtab, dx, ds0,
                      nchunks, tb):
    """A whole LSTM layer backward with the streams split into ``nchunks`` blocks, one thread each;
    the weight-gradient GEMMs run per block of ``tb`` steps while its gate gradients are in cache
    (dxp is never stored whole). Same arithmetic as lstm_backward.

    dh_out (T, B, H) from above, dsT (2, B, H); W_hh, hs, gates, cs as for lstm_backward; x_in, W_ih
    as given to lstm_forward_par. Thread k writes its partial sums dW_hh[k] (4H, H), dW_ih[k]
    (4H, I) (x_in not empty), db[k] (4H,) (= its part of both bias gradients) and, when ids (T, B)
    is not empty, the folded-table gradient dtab[k] (V, 4H) (dtab[k, ids[t, b]] += dxp[t, b]);
    the caller adds the parts in order. dx (T, B, I), when not empty, receives dL/dx_in; it may be
    dh_out itself (when I = H): a thread writes its streams' rows of a block of steps only after
    reading them, and never touches another thread's. ds0 (2, B, H) receives dL/d(h0, c0)."""
    T, B, H = dh_out.shape
    G = 4 * H
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
        dX = np.empty((tb * R, G), dh_out.dtype)   # the block's gate gradients (= dxp rows)
        Hp = np.empty((tb * R, H), dh_out.dtype)   # h_{t-1} of the block, rows contiguous
        Xg = np.empty((tb * R if project else 0, I), dh_out.dtype)
        DX = np.empty((tb * R if dx.shape[0] > 0 else 0, I), dh_out.dtype)
        for b in range(r0, r1):
            ds0[0, b] = dsT[0, b]
            ds0[1, b] = dsT[1, b]
        dh = ds0[0, r0:r1]  # (rows, H) gradient wrt h_t from step t+1; ends as dh0
        dc = ds0[1, r0:r1]
        for t1 in range(T if R > 0 else 0, 0, -tb):
            t0 = max(0, t1 - tb)
            n = (t1 - t0) * R
            for t in range(t1 - 1, t0 - 1, -1):
                j = (t - t0) * R
                for b in range(r0, r1):
                    lstm_step_backward(dh_out[t, b], dh[b - r0], dc[b - r0], gates[t, b], cs[t + 1, b], cs[t, b],
                                       dX[j + b - r0], db[k])
                    if scatter:
                        scatter_row(dtab[k, ids[t, b]], dX[j + b - r0])
                matmul_rec(dX[j:j + R], P, W_hh, False, dh, tmp)  # (rows, H) = (rows, 4H) @ (4H, H)
            block_weight_grads(dX[:n], dX[:n], hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh[k], dW_ih[k],
                               P_ih, tmp, dx, t1 == T)
