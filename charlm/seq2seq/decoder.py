"""The decoder's time loops, forward and backward: a recurrent cell fed its previous attentional vector.

One step t of row b (y the target ids, e the embeddings, a_0 = ``feed0``):

    x_t  = [e(y_t); a_{t-1}]                           the input: teacher forcing + input feeding
    h_t  = cell(x_t, h_{t-1})                          any per-layer cell, by id (kernels/dispatch.py)
    alpha_t, ctx_t = attend(h_t, encoder outputs)      attention.py
    a_t  = tanh(W_c [h_t; ctx_t] + b_c)                the attentional vector, fed to the next step
    logits_t = W_o (a_t * drop_t) + b_o                (the caller's GEMM, after the loop)

Dropout (mask drop_t) is on the output's copy of a_t only: the copy fed to the next step is whole,
since a fresh mask at every step on a recurrent path is noise the recurrence accumulates.

Input feeding makes the loop serial in t, and each step needs three products over the rows
(a_{t-1} and h_{t-1} into the gates, [h_t; ctx_t] into the combination) with per-row work between
them (the cell, the attention). It is written as the layer kernels are (kernels/layer.py): the
rows are independent, so they are split into ``nchunks`` blocks and each block's whole loop runs
on one thread, its products the register-tile kernel on weights packed once per call, as the
layers' recurrent product is (kernels/tile.py; single-threaded BLAS for a single step or a few
rows), and the rest compiled loops over its rows: no synchronisation per step, and no Python per
step. Whatever is a product over all steps at once stays outside: the embeddings' share of the
gates before the loop, the output layer and every weight gradient after it (one product each, the
large ones split across the threads by rows or by sums: products.py).

Each block's rows are sorted by target length, longest first (``tgt_len`` non-increasing within
the block): the rows running at step t are a prefix of each block (layer_rows.active_rows) and
only they are computed; a row's source length ``src_len`` may be anything, and attention reads no
source position past it.

Arrays, by step (the encoder's by row): T steps, B rows, S source positions, H hidden, G = gates *
H, F encoder width, A attention width. xp (T, B, G) the embeddings' share of the input projection on entry (no bias),
the whole projection after; hs (T+1, B, H) with hs[0] = h0; cs (T+1, B, H) the second state (empty
unless the cell has one); gates, hn the cell's cache (kernels/cells.py; empty when unused); q (T, B,
A) W_2 h_t (additive attention; else empty); alpha (T, B, S); hc (T, B, H+F) [h_t; ctx_t]; att (T,
B, H) a_t; feed (T, B, H) a_t * drop_t, what the output layer reads (drop empty: no dropout).
"""
import numpy as np
from numba import njit, prange

from ..kernels.activations import tanh_act
from ..kernels.blas import gemm
from ..kernels.dispatch import cell_step, cell_step_backward, known_input_apart
from ..kernels.layer_rows import active_rows
from ..kernels.parallel import chunk
from ..kernels.tile import MR, matmul_packed, pack_panel_range, panel_shape, panel_width
from .attention import attend, attend_backward


@njit(cache=True)
def _row(a, t, b, spare):
    """Row [t, b] of a cache array, or ``spare`` when the cell does not use it (empty)."""
    if a.size == 0:
        return spare
    return a[t, b]


@njit(cache=True)
def _panels(W, transposed, pack):
    """Room for W (or W^T when ``transposed``) packed into panels for the register-tile product
    (filled by ``_pack``), or empty."""
    if not pack:
        return np.zeros((0, 0, 0), W.dtype)
    return np.empty(panel_shape(W, transposed), W.dtype)


@njit(cache=True)
def _pack(k, nchunks, W, transposed, P):
    """Block k of the panels of W into P (``_panels``): the threads pack the loop's weights side by
    side before it starts, a millisecond of a step that one thread spent alone."""
    n = P.shape[0]
    pack_panel_range(W, transposed, P, k * n // nchunks, (k + 1) * n // nchunks)


@njit(cache=True, parallel=True)
def _packed(nchunks, transposed, pack, W1, W2, W3):
    """A loop's three weights in panels (``_panels``; empty unless ``pack``), the threads each
    packing a share of every weight's panels."""
    P1, P2, P3 = _panels(W1, transposed, pack), _panels(W2, transposed, pack), _panels(W3, transposed, pack)
    for k in prange(nchunks):
        _pack(k, nchunks, W1, transposed, P1)
        _pack(k, nchunks, W2, transposed, P2)
        _pack(k, nchunks, W3, transposed, P3)
    return P1, P2, P3


@njit(cache=True)
def _product(A, P, W, transposed, C, beta, scratch, tmp):
    """C = A @ op(W) + beta * C (beta 0 or 1): the register-tile kernel on the panels P when there
    are any and rows enough to fill a tile, else one BLAS call. scratch (>= rows, N) holds the
    product before it is added (beta 1); tmp (MR, NR) the tile kernel's."""
    if P.size == 0 or A.shape[0] * 2 < MR:
        gemm(A, W, C, False, transposed, beta)
    elif beta == 0:
        matmul_packed(A, P, C, tmp)
    else:
        M = A.shape[0]
        matmul_packed(A, P, scratch[:M], tmp)
        for i in range(M):
            for j in range(C.shape[1]):
                C[i, j] += scratch[i, j]


@njit(cache=True, parallel=True, error_model="numpy")
def decoder_forward(cell_id, kind, xp, W_if, b_ih, b_hh, W_hh, enc, keys, W_q, v, W_c, b_c, drop, h0, c0, feed0,
                    src_len, tgt_len, hs, cs, gates, hn, q, alpha, hc, att, feed, nchunks):
    """The whole loop over the target (see the module docstring for the arrays). W_if (G, H) the
    columns of the cell's W_ih that read a_{t-1}; b_ih, b_hh (G,); W_hh (G, H); enc (B, S, F), keys
    (B, S, A); W_q (A, H) and v (A,) (additive, else empty); W_c (H, H+F), b_c (H,); h0, c0, feed0
    (B, H) (c0 read only by a cell with two states)."""
    T, B, G = xp.shape
    H = W_hh.shape[1]
    known_input_apart(cell_id)  # an id the compiled chains do not know is refused before any work
    bias = b_ih + b_hh   # for the cells that sum them (the GRU reads them apart)
    two = cs.size > 0
    dropping = drop.size > 0
    # one step (a decoding step) would spend more on packing than it saves
    P_if, P_hh, P_c = _packed(nchunks, True, T > 1, W_if, W_hh, W_c)
    for k in prange(nchunks):
        r0, r1 = chunk(k, B, nchunks)
        R = r1 - r0
        hW = np.empty((R, G), xp.dtype)
        fW = np.empty((R, G), xp.dtype)
        tmp = np.empty((MR, panel_width(xp)), xp.dtype)
        pre = np.empty((R, H), xp.dtype)
        spare = np.empty(G, xp.dtype)
        for b in range(r0, r1):
            hs[0, b] = h0[b]
            if two:
                cs[0, b] = c0[b]
        for t in range(tgt_len[r0] if R > 0 else 0):
            a = active_rows(tgt_len, r0, r1, t)
            prev = feed0[r0:r0 + a] if t == 0 else att[t - 1, r0:r0 + a]
            _product(prev, P_if, W_if, True, xp[t, r0:r0 + a], 1.0, fW, tmp)
            _product(hs[t, r0:r0 + a], P_hh, W_hh, True, hW[:a], 0.0, fW, tmp)
            for i in range(a):
                b = r0 + i
                cell_step(cell_id, xp[t, b], b_ih, bias, b_hh, hW[i], hs[t, b], _row(cs, t, b, spare),
                          hs[t + 1, b], _row(cs, t + 1, b, spare), _row(gates, t, b, spare), _row(hn, t, b, spare))
            if kind == 1:
                gemm(hs[t + 1, r0:r0 + a], W_q, q[t, r0:r0 + a], False, True, 0.0)
            for i in range(a):
                b = r0 + i
                hc[t, b, :H] = hs[t + 1, b]
                attend(kind, hs[t + 1, b], _row(q, t, b, spare), keys[b], enc[b], v, src_len[b], alpha[t, b],
                       hc[t, b, H:])
            _product(hc[t, r0:r0 + a], P_c, W_c, True, pre[:a], 0.0, fW, tmp)
            for i in range(a):
                b = r0 + i
                for j in range(H):
                    x = tanh_act(pre[i, j] + b_c[j])
                    att[t, b, j] = x
                    feed[t, b, j] = x * drop[t, b, j] if dropping else x


@njit(cache=True, parallel=True, error_model="numpy")
def decoder_backward(cell_id, kind, dfeed, W_if, W_hh, enc, keys, W_q, v, W_c, src_len, tgt_len, hs, cs, gates, hn,
                     q, alpha, hc, att, dxp, da, dpre, dq, dkeys, denc, dv, dh0, dc0, dfeed0, nchunks):
    """The loop backward. dfeed (T, B, H): dL/d(att) from the output layer (through the dropout
    mask) at every running row of every step (others are not read); the gradient each step's
    input sends back is added into it. The forward's arrays as it wrote them. Writes, at running
    rows only: dxp, da (T, B, G) the gradients wrt the cell's input projection and recurrent
    pre-activation (da empty unless the cell keeps them apart: then they are one), dpre (T, B,
    H) wrt W_c [h; ctx] + b_c, dq (T, B, A) wrt q (additive); adds into dkeys (B, S, A), denc (B,
    S, F) (zeroed by the caller), dv[k] (A,) per block (kind 1; summed by the caller); writes
    dh0, dc0, dfeed0 (B, H)."""
    T, B, G = dxp.shape
    H = W_hh.shape[1]
    S = alpha.shape[2]
    apart = known_input_apart(cell_id)
    two = cs.size > 0
    one = dxp.dtype.type(1)
    P_c, P_hh, P_if = _packed(nchunks, False, T > 1, W_c, W_hh, W_if)
    for k in prange(nchunks):
        r0, r1 = chunk(k, B, nchunks)
        R = r1 - r0
        dhc = np.empty((R, hc.shape[2]), dxp.dtype)
        dh = np.empty((R, H), dxp.dtype)
        carry = np.zeros((2, R, H), dxp.dtype)   # the cell's two carries (kernels/cells.py)
        dalpha = np.empty(S, dxp.dtype)
        tmp = np.empty((MR, panel_width(dxp)), dxp.dtype)
        fW = np.empty((R, H), dxp.dtype)
        spare = np.empty(G, dxp.dtype)
        db = np.zeros(G, dxp.dtype)               # the step's bias sums: the caller sums dxp, da instead
        dbx = np.zeros(G, dxp.dtype)
        dv[k, :] = 0
        for t in range(tgt_len[r0] - 1 if R > 0 else -1, -1, -1):
            a = active_rows(tgt_len, r0, r1, t)
            for i in range(a):
                b = r0 + i
                for j in range(H):
                    dpre[t, b, j] = dfeed[t, b, j] * (one - att[t, b, j] * att[t, b, j])
            _product(dpre[t, r0:r0 + a], P_c, W_c, False, dhc[:a], 0.0, fW, tmp)
            for i in range(a):
                b = r0 + i
                dh[i] = dhc[i, :H]
                if kind == 1:
                    dq[t, b] = 0
                attend_backward(kind, dhc[i, H:], hs[t + 1, b], _row(q, t, b, spare), keys[b], enc[b], v,
                                src_len[b], alpha[t, b], dh[i], _row(dq, t, b, spare), dkeys[b], denc[b], dv[k],
                                dalpha)
            if kind == 1:
                gemm(dq[t, r0:r0 + a], W_q, dh[:a], False, False, 1.0)
            for i in range(a):
                b = r0 + i
                cell_step_backward(cell_id, dh[i], carry[0, i], carry[1, i], hs[t, b], hs[t + 1, b],
                                   _row(cs, t, b, spare), _row(cs, t + 1, b, spare), _row(gates, t, b, spare),
                                   _row(hn, t, b, spare), dxp[t, b], da[t, b] if apart else dxp[t, b], db, dbx)
            rec = da[t, r0:r0 + a] if apart else dxp[t, r0:r0 + a]
            _product(rec, P_hh, W_hh, False, carry[0, :a], 0.0, fW, tmp)
            if t > 0:
                _product(dxp[t, r0:r0 + a], P_if, W_if, False, dfeed[t - 1, r0:r0 + a], 1.0, fW, tmp)
            else:
                _product(dxp[0, r0:r0 + a], P_if, W_if, False, dfeed0[r0:r0 + a], 0.0, fW, tmp)
        for i in range(R):
            b = r0 + i
            dh0[b] = carry[0, i]
            if two:
                dc0[b] = carry[1, i]
            else:  # a carry kept past the GEMM (the GRU's direct path) joins dh0
                for j in range(H):
                    dh0[b, j] += carry[1, i, j]


def _attention_weights(kind, params, dt):
    """(W_q, v) as the kernels take them: W_2 and v for additive attention, empty for general."""
    if kind == 1:
        return params["attention.query.weight"], np.ascontiguousarray(params["attention.v.weight"][0])
    return np.zeros((0, 0), dt), np.zeros(0, dt)


def _swap(a):
    """(S, B, X) <-> (B, S, X), contiguous."""
    return np.ascontiguousarray(a.transpose(1, 0, 2))


def run_forward(cell, kind, params, xp, enc, keys, src_len, tgt_len, h0, c0, feed0, drop, nchunks):
    """``forward_rows`` on encoder outputs and keys given by step, (S, B, F) and (S, B, A)."""
    return forward_rows(cell, kind, params, xp, _swap(enc), _swap(keys), src_len, tgt_len, h0, c0, feed0, drop,
                        nchunks)


def run_backward(cell, kind, params, fwd, dfeed, enc, keys, src_len, tgt_len, drop, nchunks):
    """``backward_rows`` on encoder outputs and keys given by step; dkeys and denc by step too."""
    g = backward_rows(cell, kind, params, fwd, dfeed, _swap(enc), _swap(keys), src_len, tgt_len, drop, nchunks)
    g["dkeys"], g["denc"] = _swap(g["dkeys"]), _swap(g["denc"])
    return g


def forward_rows(cell, kind, params, xp, enc, keys, src_len, tgt_len, h0, c0, feed0, drop, nchunks):
    """Allocate the loop's arrays, run ``decoder_forward`` and return them by name (its
    arguments' names); xp is overwritten (see the kernel). enc and keys by row, (B, S, F) and
    (B, S, A) (model.attended)."""
    T, B, G = xp.shape
    H, dt = h0.shape[1], xp.dtype
    W_ih = params["decoder.weight_ih"]
    W_if = np.ascontiguousarray(W_ih[:, W_ih.shape[1] - H:])
    W_q, v = _attention_weights(kind, params, dt)
    out = {name: np.empty(shape, dt) for name, shape in cell.cache_shapes(T, B, H).items()}
    out.update(hs=np.empty((T + 1, B, H), dt), q=np.empty((T, B, W_q.shape[0]) if kind == 1 else (0, 0, 0), dt),
               alpha=np.zeros((T, B, enc.shape[1]), dt), hc=np.empty((T, B, H + enc.shape[2]), dt),
               att=np.empty((T, B, H), dt), feed=np.empty((T, B, H), dt))
    decoder_forward(cell.id, kind, xp, W_if, params["decoder.bias_ih"], params["decoder.bias_hh"],
                    params["decoder.weight_hh"], enc, keys, W_q, v, params["combine.weight"], params["combine.bias"],
                    drop, h0, c0, feed0, src_len, tgt_len, out["hs"], out["cs"], out["gates"], out["hn"], out["q"],
                    out["alpha"], out["hc"], out["att"], out["feed"], nchunks)
    return out


def backward_rows(cell, kind, params, fwd, dfeed, enc, keys, src_len, tgt_len, drop, nchunks):
    """``decoder_backward`` on the arrays ``forward_rows`` returned (fwd); dfeed, dL/d(feed) from
    the output layer, is overwritten. Returns its outputs by name, dv summed over the blocks."""
    T, B, H = fwd["att"].shape
    _, S, A = keys.shape
    dt = dfeed.dtype
    G = params["decoder.weight_hh"].shape[0]
    W_ih = params["decoder.weight_ih"]
    W_if = np.ascontiguousarray(W_ih[:, W_ih.shape[1] - H:])
    W_q, v = _attention_weights(kind, params, dt)
    g = dict(dxp=np.empty((T, B, G), dt), da=np.empty((T, B, G) if cell.input_apart else (0, 0, 0), dt),
             dpre=np.empty((T, B, H), dt), dq=np.empty((T, B, A) if kind == 1 else (0, 0, 0), dt),
             dkeys=np.zeros((B, S, A), dt), denc=np.zeros(enc.shape, dt), dv=np.empty((nchunks, v.shape[0]), dt),
             dh0=np.empty((B, H), dt), dc0=np.empty((B, H), dt), dfeed0=np.empty((B, H), dt))
    if drop.size:   # the output's share passes the mask; what the next step's input sends back does not
        dfeed *= drop
    decoder_backward(cell.id, kind, dfeed, W_if, params["decoder.weight_hh"], enc, keys, W_q, v,
                     params["combine.weight"], src_len, tgt_len, fwd["hs"], fwd["cs"], fwd["gates"], fwd["hn"],
                     fwd["q"], fwd["alpha"], fwd["hc"], fwd["att"], *g.values(), nchunks)
    g["dv"] = g["dv"].sum(axis=0)
    if not cell.input_apart:
        g["da"] = g["dxp"]
    return g
