"""One recurrent layer, forward and backward, on all cores: the driver loop written once for every
per-layer cell of the table, switched on the cell's id; the arithmetic of one row of one step is
the cell's own step function (lstm_step, gru_step, rnn_step and their backward, in their files).

Why this shape (kernels/parallel.py says more): the B streams are independent in the recurrence,
so they are split into ``nchunks`` blocks and each block's whole recurrence runs on one thread
with single-threaded BLAS: no synchronisation per step. Per block of ``tb`` steps a thread does the
input projection (one GEMM) in the forward, and the weight-gradient GEMMs while the gate gradients
are in cache in the backward, so no (T, B, G*H) array is ever stored whole. Per step: the
recurrent GEMM (the packed micro-kernel on W_hh, packed once per call), then the step function
over the block's rows. The serial ``<cell>_forward`` / ``<cell>_backward`` are the reference these
agree with (tests/test_bench.py).

Dimensions: T steps, B streams, H hidden, G = gates * H, I input width, V vocabulary.

The cache arrays (written by the forward, read by the backward) are passed whether or not the
cell uses them, as (0, 0, 0) arrays when it does not (``Cell.cache`` names the ones it uses):
    gates (T, B, G)     post-activation gates (lstm: i, f, g, o; gru: r, z, n)
    cs    (T+1, B, H)   cell states, cs[0] = c0 (lstm)
    hn    (T, B, H)     W_hn h_{t-1} + b_hn (gru)
"""
import numpy as np
from numba import njit, prange

from .cells import CELLS
from .gru import gru_step, gru_step_backward
from .lstm import lstm_step, lstm_step_backward
from .blas import gemm
from .rnn import rnn_step, rnn_step_backward
from .tile import MR, matmul_packed, matmul_rec, pack_panels

LSTM, GRU = CELLS["lstm"].id, CELLS["gru"].id   # every other per-layer id runs the Elman step


@njit(cache=True, parallel=True, error_model="numpy")
def layer_forward(cell_id, x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, gates, cs, hn, nchunks, tb):
    """A whole layer forward, input projection included. Writes hs (T+1, B, H) with hs[0] = h0 and
    the cell's cache arrays (see the module docstring).

    The layer's input, one of two ways:
      x_in (T, B, I) not empty: the input itself (embeddings or the layer below's outputs). Each
          thread projects ``tb`` steps of its streams at a time, X @ W_ih^T (tb*rows, I) @ (I, G);
      x_in empty (layer 0): ``table`` (V, G) = E @ W_ih^T, the embedding folded into W_ih, read
          at row ids[t, b] (T, B): the projection is a gather.
    W_ih (G, I), b_ih (G,), W_hh (G, H), b_hh (G,): PyTorch's layout; s0 (S, B, H) = (h0[, c0])."""
    T = hs.shape[0] - 1
    B = hs.shape[1]
    G = W_hh.shape[0]
    bias = b_ih + b_hh  # the GRU keeps them apart: b_hn sits inside r * (...)
    P = pack_panels(W_hh, True)  # W_hh^T in register-tile panels, once per call
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
            if cell_id == LSTM:
                cs[0, b] = s0[1, b]
        for t0 in range(0, T if R > 0 else 0, tb):
            t1 = min(T, t0 + tb)
            if project:
                for t in range(t0, t1):
                    X[(t - t0) * R:(t - t0 + 1) * R] = x_in[t, r0:r1]
                matmul_packed(X[:(t1 - t0) * R], P_ih, XP[:(t1 - t0) * R], tmp)
            for t in range(t0, t1):
                matmul_rec(hs[t, r0:r1], P, W_hh, True, hW, tmp)  # (rows, G)
                for b in range(r0, r1):
                    xrow = XP[(t - t0) * R + b - r0] if project else table[ids[t, b]]
                    if cell_id == LSTM:
                        lstm_step(xrow, hW[b - r0], bias, cs[t, b], hs[t + 1, b], cs[t + 1, b], gates[t, b])
                    elif cell_id == GRU:
                        gru_step(xrow, b_ih, hW[b - r0], b_hh, hs[t, b], hs[t + 1, b], gates[t, b], hn[t, b])
                    else:
                        rnn_step(xrow, hW[b - r0], bias, hs[t + 1, b])


@njit(cache=True, parallel=True, error_model="numpy")
def layer_backward(cell_id, dh_out, dsT, W_hh, hs, gates, cs, hn, x_in, W_ih, ids, dW_hh, dW_ih, db_hh, db_ih,
                   dtab, dx, ds0, nchunks, tb):
    """A whole layer backward. dh_out (T, B, H) dL/dh_t from above, dsT (S, B, H) dL/d(final state);
    W_hh, hs and the cache arrays as the forward wrote them; x_in, W_ih, ids as given to it.

    Thread k writes its partial sums, which the caller adds in order k = 0, 1, ...:
      dW_hh[k] (G, H); dW_ih[k] (G, I) when x_in is not empty; db_hh[k], db_ih[k] (G,) the two
      bias gradients; dtab[k] (V, G) when ids is not empty, the folded-table gradient
      (dtab[k, ids[t, b]] += dxp[t, b]).
    dx (T, B, I), when not empty, receives dL/dx_in; it may be dh_out itself (when I = H): a thread
    writes its streams' rows of a block of steps only after reading them, and never touches
    another thread's. ds0 (S, B, H) receives dL/d(initial state)."""
    T, B, H = dh_out.shape
    G = W_hh.shape[0]
    project = x_in.shape[0] > 0
    I = x_in.shape[2]
    scatter = ids.shape[0] > 0
    gru = cell_id == GRU
    P = pack_panels(W_hh, False)  # W_hh in register-tile panels, once per call
    P_ih = pack_panels(W_ih if dx.shape[0] > 0 else W_ih[:0], False)  # for dx = dX @ W_ih
    for k in prange(nchunks):
        r0 = k * B // nchunks
        r1 = (k + 1) * B // nchunks
        R = r1 - r0
        zero_parts(k, R, db_hh, dtab, scatter, dW_hh, dW_ih, project)
        db_ih[k, :] = 0
        tmp = np.empty((MR, P.shape[2]), dh_out.dtype)
        dX = np.empty((tb * R, G), dh_out.dtype)   # the block's gradients wrt the input projections
        # and wrt the recurrent pre-activations, which only the GRU's n block makes different
        dA = np.empty((tb * R, G), dh_out.dtype) if gru else dX
        Hp = np.empty((tb * R, H), dh_out.dtype)   # h_{t-1} of the block, rows contiguous
        Xg = np.empty((tb * R if project else 0, I), dh_out.dtype)
        DX = np.empty((tb * R if dx.shape[0] > 0 else 0, I), dh_out.dtype)
        dh_skip = np.empty((R if gru else 0, H), dh_out.dtype)  # the GRU's direct path dh * z
        for b in range(r0, r1):
            for s in range(ds0.shape[0]):
                ds0[s, b] = dsT[s, b]
            if gru:  # the final-state gradient enters like a direct path; the GEMM part starts at 0
                dh_skip[b - r0] = dsT[0, b]
                ds0[0, b] = 0
        dh = ds0[0, r0:r1]                  # (rows, H) gradient wrt h_t from step t+1 (the GEMM part)
        dc = ds0[ds0.shape[0] - 1, r0:r1]   # the LSTM's gradient wrt c_t
        for t1 in range(T if R > 0 else 0, 0, -tb):
            t0 = max(0, t1 - tb)
            n = (t1 - t0) * R
            for t in range(t1 - 1, t0 - 1, -1):
                j = (t - t0) * R
                for b in range(r0, r1):
                    i = j + b - r0
                    if cell_id == LSTM:
                        lstm_step_backward(dh_out[t, b], dh[b - r0], dc[b - r0], gates[t, b], cs[t + 1, b], cs[t, b],
                                           dX[i], db_hh[k])
                    elif gru:
                        gru_step_backward(dh_out[t, b], dh[b - r0], dh_skip[b - r0], gates[t, b], hn[t, b], hs[t, b],
                                          dX[i], dA[i], db_hh[k], db_ih[k])
                    else:
                        rnn_step_backward(dh_out[t, b], dh[b - r0], hs[t + 1, b], dX[i], db_hh[k])
                    if scatter:
                        scatter_row(dtab[k, ids[t, b]], dX[i])
                matmul_rec(dA[j:j + R], P, W_hh, False, dh, tmp)  # (rows, H) = (rows, G) @ (G, H)
            block_weight_grads(dA[:n], dX[:n], hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh[k], dW_ih[k],
                               P_ih, tmp, dx, t1 == T)
        if gru:
            for b in range(r0, r1):
                for j in range(H):
                    ds0[0, b, j] = dh[b - r0, j] + dh_skip[b - r0, j]
        # b_ih's gradient is b_hh's, except the GRU's n block (dxp there, not da: step_backward wrote it)
        for g in range(2 * (G // 3) if gru else G):
            db_ih[k, g] = db_hh[k, g]


# -- pieces of both directions ----------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def zero_parts(k, R, db, dtab, scatter, dW_hh, dW_ih, project):
    """Zero what thread k accumulates into (its first block overwrites the weight gradients)."""
    db[k, :] = 0
    if scatter:
        dtab[k, :, :] = 0
    if R == 0:  # a thread with no streams (more blocks than streams) still owns its parts
        dW_hh[k, :, :] = 0
        if project:
            dW_ih[k, :, :] = 0


@njit(cache=True, error_model="numpy")
def scatter_row(dst, src):
    for j in range(src.shape[0]):
        dst[j] += src[j]


@njit(cache=True, error_model="numpy")
def block_weight_grads(dA, dX, hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh, dW_ih, P_ih, tmp, dx, first):
    """One thread's block of steps [t0, t1) x streams [r0, r1): dW_hh += dA^T @ h_{t-1},
    dW_ih += dX^T @ x_in and dx = dX @ W_ih (when x_in / dx are not empty; P_ih is W_ih packed by
    pack_panels). dA are the gradients of the recurrent pre-activations, dX of the input
    projections (equal except for the GRU). The two weight-gradient GEMMs stay with BLAS: packing
    their operands per block costs more than the micro-kernel saves."""
    R = r1 - r0
    n = (t1 - t0) * R
    beta = 0.0 if first else 1.0
    for t in range(t0, t1):
        Hp[(t - t0) * R:(t - t0 + 1) * R] = hs[t, r0:r1]
    gemm(dA, Hp[:n], dW_hh, True, False, beta)
    if x_in.shape[0] > 0:
        for t in range(t0, t1):
            Xg[(t - t0) * R:(t - t0 + 1) * R] = x_in[t, r0:r1]
        gemm(dX, Xg[:n], dW_ih, True, False, beta)
    if dx.shape[0] > 0:
        matmul_packed(dX, P_ih, DX[:n], tmp)
        for t in range(t0, t1):
            dx[t, r0:r1] = DX[(t - t0) * R:(t - t0 + 1) * R]
