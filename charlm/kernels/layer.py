"""One recurrent layer, forward and backward, in one or two directions, on all cores: the driver
loop written once for every per-layer cell of the table; the arithmetic of one row of one step is
the cell's own step function, reached by the cell's id (dispatch.py).

Why this shape (kernels/parallel.py says more): the B streams are independent in the recurrence,
so each direction's streams are split into ``nchunks`` blocks and each block's whole recurrence
runs on one thread with single-threaded BLAS: no synchronisation per step; the D directions'
blocks run side by side (D * nchunks in all). Per block of ``tb`` steps a thread does the input
projection (one GEMM) in the forward, and the weight-gradient GEMMs while the gate gradients are
in cache in the backward, so no (T, B, G*H) array is ever stored whole. Per step: the recurrent
GEMM (the packed micro-kernel on W_hh, packed once per call), then the step function over the
block's rows. tests/serial_cells.py holds the serial reference these agree with.

Variable lengths: stream b has its own length L_b (``lengths``, non-increasing: the caller sorts);
the streams still running at step t are a prefix of each thread's streams, and only those enter
the GEMMs and the steps (layer_rows.py), so padding is never computed. The forward direction
reads position t at step t; the reverse one position L_b - 1 - t, so it starts at each stream's
own last token. D may stack the directions of several independent layers (an ensemble's
members, each reading its own columns of x_in), each layer's consecutive, forward first. Every
direction's states are stored by step (hs[d, t + 1] after step t; stream b's final state is
hs[d, L_b]); ``out`` and the gradients wrt the input are by position.

Dimensions: D directions, T steps, B streams, H hidden, G = gates * H, I input width, V vocabulary,
S states. Weights per direction in PyTorch's layout: W_ih (D, G, I), b_ih (D, G), W_hh (D, G, H),
b_hh (D, G). The cache arrays (written by the forward, read by the backward) are passed whether or
not the cell uses them, empty when it does not (``Cell.cache`` names the ones it uses):
    gates (D, T, B, G)     post-activation gates (lstm: i, f, g, o; gru: r, z, n)
    cs    (D, T+1, B, H)   the second state (the LSTM's cell state), cs[d, 0] = s0[d, 1]
    hn    (D, T, B, H)     W_hn h_{t-1} + b_hn (gru)

Compiled per cell and per block: ``layer_forward`` and ``layer_backward`` are Python functions that
pack the weights (a compiled packer per direction) and run a thread's block, ``_forward_block`` or
``_backward_block``, once per block on threads (blocks.py says why not a parallel loop). The
block is the cell's own copy of its template, built when the cell is first used (per_cell.py), so
a run compiles its own cell's step only (the id chain of dispatch.py compiled every cell's into
the kernel).
"""
import functools

import numpy as np

from .blocks import run_blocks
from .layer_rows import (active_rows, block_input_grads, block_rows, block_weight_grads, cache_row, copy_row,
                         gather_block, input_groups, position, scatter_row, thread_block, zero_parts)
from .per_cell import per_layer_cell, specialise
from .phase_clock import (BWD_CELL, BWD_DX, BWD_OTHER, BWD_REC, BWD_WGRAD, FWD_CELL, FWD_OTHER, FWD_PROJ, FWD_REC,
                          no_mark)
from .tile import MR, matmul_packed, matmul_rec, pack_block, panel_shape

# Placeholders the block templates below call; per_cell.specialise binds them to one cell's step pair and
# its Cell.input_apart in that cell's copy of the kernels.
cell_step = cell_step_backward = None
APART = False
mark = no_mark  # the phase clock (phase_clock.py): nothing, unless a profiler binds its own

_BLOCK = {"error_model": "numpy", "nogil": True}  # a thread's block: run_blocks calls it on several threads


def layer_forward(cell_id, x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, gates, cs, hn, out, lengths, nchunks,
                  tb):
    """A whole layer forward, input projection included. Writes hs (D, T+1, B, H) with hs[d, 0] =
    s0[d, 0], the cell's cache arrays and, when ``out`` (T, B, D*H) is not empty, every
    direction's output at its position (direction d in columns [d*H, (d+1)*H), 0 at padded steps).

    The layer's input, one of two ways:
      x_in (T, B, M*I) not empty: the input itself (embeddings or the layer below's outputs), M
          inputs side by side, each read by D/M consecutive directions (M = 1: one input every
          direction reads; an ensemble's members stacked as D = members x directions each read
          their own, layer_rows.input_groups). Each thread projects ``tb`` steps of its streams
          at a time, X @ W_ih^T (rows, I) @ (I, G);
      x_in empty (layer 0): ``table`` (D, V, G) = E @ W_ih^T, the embedding folded into W_ih, read
          at row ids[position, b] (T, B): the projection is a gather.
    s0 (D, S, B, H) the initial states; lengths (B,) int64, non-increasing, 1 <= L_b <= T.
    cell_id: the cell's row of the table (ValueError for one that is not a per-layer cell)."""
    block = _kernels(cell_id)["_forward_block"]
    bias = b_ih + b_hh  # for the cells that sum them (the GRU keeps them apart: b_hn sits inside r * (...))
    M, P, P_ih = _packed(x_in, W_ih, W_hh, x_in.size > 0, True)
    run_blocks(block, hs.shape[0] * nchunks, nchunks, M, x_in, table, ids, W_ih, b_ih, bias, b_hh, P, W_hh, P_ih, s0,
               hs, gates, cs, hn, out, lengths, tb, True)


def layer_backward(cell_id, dh_out, dsT, W_hh, hs, gates, cs, hn, x_in, W_ih, ids, dW_hh, dW_ih, db_hh, db_ih,
                   dtab, dx, ds0, dxp, lengths, nchunks, tb):
    """A whole layer backward. dh_out (T, B, D*H) dL/d(outputs) from above by position (direction d
    in columns [d*H, (d+1)*H); padded positions are not read); dsT (D, S, B, H) dL/d(final
    states), each at its stream's own length; W_hh, hs and the cache arrays as the forward wrote
    them; x_in, W_ih, ids, lengths as given to it.

    Thread kk = d * nchunks + k writes its partial sums, which the caller adds in order k = 0, 1,
    ... per direction: dW_hh[kk] (G, H); dW_ih[kk] (G, I) when x_in is not empty; db_hh[kk],
    db_ih[kk] (G,) the two bias gradients; dtab[kk] (V, G) when ids is not empty, the folded-table
    gradient (dtab[kk, ids[position, b]] += dxp).
    dx (D, T, B, I), when not empty, receives dL/dx_in of each direction by position (0 at padded
    ones); with D = 1 it may be dh_out itself (when I = H): a thread writes its streams' rows of a
    block of steps only after reading them, and never touches another thread's. ds0 (D, S, B, H)
    receives dL/d(initial states); dxp (D, T, B, G), when not empty, the gradients wrt the input
    projections by step (inspect)."""
    block = _kernels(cell_id)["_backward_block"]
    M, P, P_ih = _packed(x_in, W_ih, W_hh, dx.size > 0, False)
    run_blocks(block, hs.shape[0] * nchunks, nchunks, M, P, P_ih, dh_out, dsT, W_hh, hs, gates, cs, hn, x_in, W_ih,
               dW_hh, dW_ih, db_hh, db_ih, dtab, dx, ds0, dxp, ids, lengths, tb, False)


@functools.cache
def _kernels(cell_id):
    """The layer kernels of one cell, compiled (or loaded from Numba's cache) on first call."""
    return _specialised(cell_id, no_mark, True)


def profiled_kernels(cell_id, clock):
    """The layer kernels of one cell with ``clock`` as their phase mark (phase_clock.clocked_mark),
    compiled uncached: layer_forward and layer_backward run them while ``_kernels`` returns them."""
    return _specialised(cell_id, clock, False)


def _specialised(cell_id, clock, cache):
    cell = per_layer_cell(cell_id)
    steps = cell.kernels
    return specialise(cell, [(_forward_block, _BLOCK), (_backward_block, _BLOCK)],
                      {"cell_step": getattr(steps, f"{cell.name}_step"),
                       "cell_step_backward": getattr(steps, f"{cell.name}_step_backward"),
                       "APART": cell.input_apart, "mark": clock}, cache)


# The argument types layer_backward calls a backward block with (call_types.signature's codes)
_BACKWARD_TYPES = dict(kk="i0", nchunks="i0", M="i0", P="f4", P_ih="f4", dh_out="f3", dsT="f4", W_hh="f3", hs="f4",
                       gates="f4", cs="f4", hn="f4", x_in="f3", W_ih="f3", dW_hh="f3", dW_ih="f3", db_hh="f2",
                       db_ih="f2", dtab="f3", dx="f4", ds0="f4", dxp="f4", ids="i2", lengths="i1", tb="i0",
                       transposed="b")


def backward_block_signature(cell_id, dtype):
    """(the cell's backward block, the argument types layer_backward calls it with on ``dtype``
    arrays): what a helper process compiles ahead of the call (compile_aside.py)."""
    from .call_types import signature

    block = _kernels(cell_id)["_backward_block"]
    return block, signature(block, _BACKWARD_TYPES, dtype)


# The flags below (transposed, with_ih) come from Python, so each function compiles once for both
# values: a constant True or False passed in compiled code makes Numba compile the callee per value.

def _packed(x_in, W_ih, W_hh, with_ih, transposed):
    """(inputs M, W_hh packed, W_ih packed or empty) for the block's products: the forward's with
    W^T (``transposed``), the backward's with W. W_ih is packed when ``with_ih`` (the forward's
    input projection, the backward's dx), else an empty C array stands for it. In Python around
    the compiled packer: a compiled version of these few lines cost more than a second of a first
    run's compile time, against microseconds per call here."""
    D, _, I = W_ih.shape
    M = input_groups(D, x_in.shape[2] if x_in.size > 0 else 0, I)
    P = _pack_directions(W_hh, transposed)  # in register-tile panels, once per call
    P_ih = _pack_directions(W_ih if with_ih else np.empty((D, 0, I), W_ih.dtype), transposed)
    return M, P, P_ih


def _pack_directions(W, transposed):
    """tile.pack_panels of each W[d] (D, ., .), stacked: (D, panels, K, NR), the directions packed
    side by side into one array (a serial pack and a stack of copies cost 3 ms of a 50 ms
    encoder-decoder step on two cores, both threads but one idle)."""
    D = W.shape[0]
    P = np.empty((D,) + panel_shape(W[0], transposed), W.dtype)
    if P.size:
        run_blocks(pack_block, D, W, transposed, P)
    return P


def _forward_block(kk, nchunks, M, x_in, table, ids, W_ih, b_ih, bias, b_hh, P, W_hh, P_ih, s0, hs, gates, cs, hn,
                   out, lengths, tb, transposed):
    """Thread kk's part of the forward: direction d = kk // nchunks, its block of streams.
    ``transposed`` is True (the recurrent product is h @ W_hh^T), an argument for _packed's reason."""
    st = mark(kk, -1, 0)
    T, H, G, I, d, r0, r1, c0, reverse = thread_block(kk, nchunks, hs, W_ih, M)
    R, S = r1 - r0, s0.shape[1]
    project, wide = x_in.size > 0, out.size > 0
    hW = np.empty((R, G), hs.dtype)
    tmp = np.empty((MR, P.shape[3]), hs.dtype)
    spare = np.empty(G, hs.dtype)  # stands for the cache rows the cell does not use
    X = np.empty((tb * R if project else 0, I), hs.dtype)   # the block's inputs, rows compact
    XP = np.empty((tb * R if project else 0, G), hs.dtype)  # and their projections
    for b in range(r0, r1):
        copy_row(hs[d, 0, b], s0[d, 0, b])
        if S > 1:
            copy_row(cs[d, 0, b], s0[d, 1, b])
    st = mark(kk, FWD_OTHER, st)
    for t0 in range(0, lengths[r0] if R > 0 else 0, tb):  # up to the longest of these streams
        t1 = min(lengths[r0], t0 + tb)
        if project:
            n = gather_block(x_in, c0, lengths, reverse, t0, t1, r0, r1, X)
            matmul_packed(X[:n], P_ih[d], XP[:n], tmp)
            st = mark(kk, FWD_PROJ, st)
        j = 0
        for t in range(t0, t1):
            a = active_rows(lengths, r0, r1, t)
            matmul_rec(hs[d, t, r0:r0 + a], P[d], W_hh[d], transposed, hW[:a], tmp)  # (rows, G): h @ W_hh^T
            st = mark(kk, FWD_REC, st)
            for i in range(a):
                b = r0 + i
                p = position(lengths, reverse, t, b)
                xrow = XP[j + i] if project else table[d, ids[p, b]]
                cell_step(xrow, b_ih[d], bias[d], b_hh[d], hW[i], hs[d, t, b],
                          cache_row(cs, d, t, b, spare), hs[d, t + 1, b], cache_row(cs, d, t + 1, b, spare),
                          cache_row(gates, d, t, b, spare), cache_row(hn, d, t, b, spare))
                if wide:
                    copy_row(out[p, b, d * H:(d + 1) * H], hs[d, t + 1, b])
            j += a
            st = mark(kk, FWD_CELL, st)
    if wide:
        for b in range(r0, r1):
            for t in range(lengths[b], T):
                out[t, b, d * H:(d + 1) * H] = 0
    mark(kk, FWD_OTHER, st)


def _backward_block(kk, nchunks, M, P, P_ih, dh_out, dsT, W_hh, hs, gates, cs, hn, x_in, W_ih, dW_hh, dW_ih, db_hh,
                    db_ih, dtab, dx, ds0, dxp, ids, lengths, tb, transposed):
    """Thread kk's part of the backward: direction d = kk // nchunks, its block of streams.
    ``transposed`` is False (the recurrent product is da @ W_hh), an argument for _packed's reason."""
    st = mark(kk, -1, 0)
    # (I from W_ih: dx may be wanted without x_in, inspect's state gradients)
    T, H, G, I, d, r0, r1, c0, reverse = thread_block(kk, nchunks, hs, W_ih, M)
    R, S = r1 - r0, dsT.shape[1]
    project, scatter, keep = x_in.size > 0, ids.size > 0, dxp.size > 0
    zero_parts(kk, R, db_hh, dtab, scatter, dW_hh, dW_ih, project)
    db_ih[kk, :] = 0
    tmp = np.empty((MR, P.shape[3]), dh_out.dtype)
    spare = np.empty(G, dh_out.dtype)
    dX = np.empty((tb * R, G), dh_out.dtype)   # the block's gradients wrt the input projections
    dA = np.empty((tb * R, G), dh_out.dtype) if APART else dX  # and wrt the recurrent pre-activations
    Hp = np.empty((tb * R, H), dh_out.dtype)   # h_{t-1} of the block, rows compact
    Xg = np.empty((tb * R if project else 0, I), dh_out.dtype)
    DX = np.empty((tb * R if dx.size > 0 else 0, I), dh_out.dtype)
    # the carries (see kernels/cells.py): dh (the recurrent GEMM writes it) and dq
    carry = np.zeros((2, R, H), dh_out.dtype)
    for i in range(R):
        for s in range(S):
            copy_row(carry[s, i], dsT[d, s, r0 + i])
        if dx.size > 0:
            for t in range(lengths[r0 + i], T):
                dx[d, t, r0 + i] = 0
    Tk = lengths[r0] if R > 0 else 0
    st = mark(kk, BWD_OTHER, st)
    for t1 in range(Tk, 0, -tb):
        t0 = max(0, t1 - tb)
        n = block_rows(lengths, r0, r1, t0, t1)
        j = n
        for t in range(t1 - 1, t0 - 1, -1):
            a = active_rows(lengths, r0, r1, t)
            j -= a
            for i in range(a):
                b = r0 + i
                p = position(lengths, reverse, t, b)
                cell_step_backward(dh_out[p, b, d * H:(d + 1) * H], carry[0, i], carry[1, i], hs[d, t, b],
                                   hs[d, t + 1, b], cache_row(cs, d, t, b, spare), cache_row(cs, d, t + 1, b, spare),
                                   cache_row(gates, d, t, b, spare), cache_row(hn, d, t, b, spare), dX[j + i],
                                   dA[j + i], db_hh[kk], db_ih[kk])
                if scatter:
                    scatter_row(dtab[kk, ids[p, b]], dX[j + i])
                if keep:
                    copy_row(dxp[d, t, b], dX[j + i])
            st = mark(kk, BWD_CELL, st)
            matmul_rec(dA[j:j + a], P[d], W_hh[d], transposed, carry[0, :a], tmp)  # (rows, H) = (rows, G) @ (G, H)
            st = mark(kk, BWD_REC, st)
        block_weight_grads(dA[:n], dX[:n], hs[d], x_in, c0, lengths, reverse, t0, t1, r0, r1, Hp, Xg, dW_hh[kk],
                           dW_ih[kk], t1 == Tk)
        st = mark(kk, BWD_WGRAD, st)
        if dx.size > 0:
            block_input_grads(dX[:n], P_ih[d], DX[:n], tmp, dx[d], lengths, reverse, t0, t1, r0, r1)
            st = mark(kk, BWD_DX, st)
    for i in range(R):
        b = r0 + i
        copy_row(ds0[d, 0, b], carry[0, i])
        if S > 1:
            copy_row(ds0[d, 1, b], carry[1, i])
        else:  # a carry kept past the GEMM (the GRU's direct path) joins dh0
            for j in range(H):
                ds0[d, 0, b, j] += carry[1, i, j]
    if not APART:  # b_ih's gradient is b_hh's (dxp = da)
        copy_row(db_ih[kk], db_hh[kk])
    mark(kk, BWD_OTHER, st)
