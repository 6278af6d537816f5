"""One training batch through the encoder-decoder: the forward pass kept for the backward, the loss, the backward."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..seqtask.heads import dropout_mask
from .decoder import backward_rows, forward_rows
from .products import t_times, times


@dataclass
class Pass:
    """What the backward reads of one forward; the decoder's rows in ``balanced_rows`` order."""
    enc: object           # model.Encoded (not imported: model.py imports this module)
    order: np.ndarray     # decoder row i is the caller's row order[i]
    rows: np.ndarray      # ... and the encoder's sorted row rows[i]
    lengths: np.ndarray   # (B,) target lengths, non-increasing within each block of rows
    valid: np.ndarray     # (T, B) True at the steps a row runs
    ids: np.ndarray       # (T, B) target input ids, 0 at padding
    emb: np.ndarray       # (T, B, E) their embeddings, after dropout
    keep: np.ndarray | None   # the embeddings' dropout mask
    drop: np.ndarray      # (T, B, H) the attentional vectors' dropout mask, or empty
    memory: np.ndarray    # (B, S, F) the encoder outputs in the decoder's order
    keys: np.ndarray      # (B, S, A)
    src_len: np.ndarray   # (B,)
    bridge: tuple         # (h0, c0, top) of model.bridge
    fwd: dict             # the decoder loop's arrays (decoder.forward_rows)
    logits: np.ndarray    # (N, V) at the valid steps, step-major


def balanced_rows(lengths, nchunks: int) -> np.ndarray:
    """The decoder's row order: rows dealt longest first to the ``nchunks`` blocks of rows its loops
    split the batch into (kernels/parallel.chunk), in turn, so that every block gets as many steps
    to run as the others, each block's rows longest first (the loops need the rows running at a
    step to be a prefix of their block). Sorted whole, the block of the longest rows would run
    alone at the end."""
    from ..kernels.parallel import chunk

    ranked = np.argsort(-np.asarray(lengths), kind="stable")
    sizes = [b - a for a, b in (chunk(k, len(ranked), nchunks) for k in range(nchunks))]
    blocks: list = [[] for _ in sizes]
    k = 0
    for row in ranked.tolist():
        while len(blocks[k]) == sizes[k]:
            k = (k + 1) % nchunks
        blocks[k].append(row)
        k = (k + 1) % nchunks
    return np.array([row for block in blocks for row in block], np.int64)


def run_pass(model, src_ids, src_lengths, tgt_in, tgt_lengths, rng):
    """Model.forward: (logits (T, B, V), alpha (T, B, S), Pass)."""
    c, p = model.config, model.params
    enc = model.encode_batch(src_ids, src_lengths, rng)
    tgt_len = np.asarray(tgt_lengths, np.int64)
    if tgt_len.shape != enc.order.shape or tgt_len.min() < 1:
        raise ValueError("tgt_lengths must hold one positive length per source")
    order = balanced_rows(tgt_len, model.nchunks(len(tgt_len)))
    rows = np.argsort(enc.order, kind="stable")[order]
    lengths = np.ascontiguousarray(tgt_len[order])
    T, B, H, dt = int(lengths.max()), len(lengths), c.hidden, model.dtype
    valid = np.arange(T)[:, None] < lengths[None, :]
    ids = np.where(valid, np.asarray(tgt_in)[:T][:, order], 0)
    h0, c0, top = model.bridge(enc, rows)
    memory, keys, src_len = model.attended(enc, rows, top)
    emb = p["tgt_embedding.weight"][ids]
    drop_p = c.dropout if rng is not None else 0.0
    keep = dropout_mask(emb.shape, drop_p, rng, dt) if drop_p else None
    if keep is not None:
        emb *= keep
    drop = dropout_mask((T, B, H), drop_p, rng, dt) if drop_p else np.zeros((0, 0, 0), dt)
    xp = times(emb, p["decoder.weight_ih"][:, :c.embed].T, model.nchunks(T * B))
    fwd = forward_rows(model.cell, model.kind, p, xp, memory, keys, src_len, lengths, h0, c0, np.zeros((B, H), dt),
                      drop, model.nchunks(B))
    flat = fwd["feed"][valid] @ p["out.weight"].T + p["out.bias"]
    inverse = np.argsort(order, kind="stable")
    logits = np.zeros((T, B, c.tgt_vocab), dt)
    logits[valid] = flat
    state = Pass(enc, order, rows, lengths, valid, ids, emb, keep, drop, memory, keys, src_len, (h0, c0, top), fwd,
                 flat)
    return logits[:, inverse], fwd["alpha"][:, inverse], state


def loss(model, state: Pass, tgt_out):
    """(mean loss over the valid target tokens, (dL/dlogits (N, V), its column sums)). Overwrites
    state.logits with the gradient. The loss is the cross-entropy against the targets smoothed by
    ``label_smoothing`` e: (1 - e) on the target, e spread evenly over the V tokens, so that
    loss = (1 - e) * nll + e * mean_v(-log p_v) and its gradient is p - (1 - e) onehot - e / V."""
    from ..kernels.loss import cross_entropy_grad_par

    T = state.valid.shape[0]
    targets = np.ascontiguousarray(np.asarray(tgt_out)[:T][:, state.order][state.valid], dtype=np.int64)
    dlogits = state.logits
    N, V = dlogits.shape
    e = model.config.label_smoothing
    spread = _mean_nll(dlogits) if e else 0.0
    db = np.empty(V, dlogits.dtype)
    total = cross_entropy_grad_par(dlogits, targets, 1.0 / N, db, model.nchunks(N))
    if e:
        dlogits[np.arange(N), targets] += dlogits.dtype.type(e / N)
        dlogits -= dlogits.dtype.type(e / (V * N))
        db[...] = dlogits.sum(axis=0, dtype=np.float64)
        total = (1 - e) * total + e * spread
    return total / N, (dlogits, db)


def _mean_nll(logits) -> float:
    """sum over rows of mean_v(-log softmax(logits)_v), in float64: logsumexp minus the mean logit."""
    x = logits.astype(np.float64)
    top = x.max(axis=1)
    lse = top + np.log(np.exp(x - top[:, None]).sum(axis=1))
    return float((lse - x.mean(axis=1)).sum())


@njit(cache=True)
def step_inputs(emb, att, hs, valid):
    """(N, E + 2H): [e_t; a_{t-1}; h_{t-1}] at the N valid steps, step-major (as ``a[valid]``),
    a_{-1} = 0: what the decoder cell's weights multiplied, gathered in one pass."""
    T, B, E = emb.shape
    H = hs.shape[2]
    out = np.empty((np.count_nonzero(valid), E + 2 * H), emb.dtype)
    n = 0
    for t in range(T):
        for b in range(B):
            if valid[t, b]:
                out[n, :E] = emb[t, b]
                if t > 0:
                    out[n, E:E + H] = att[t - 1, b]
                else:
                    out[n, E:E + H] = 0
                out[n, E + H:] = hs[t, b]
                n += 1
    return out


def backward(model, state: Pass, dlogits) -> None:
    """Every parameter's gradient into model.grads (overwritten)."""
    from ..kernels.embedding import scatter_add_rows

    c, p, g = model.config, model.params, model.grads
    model.grad_flat[...] = 0
    dl, db = dlogits
    fwd, valid, E = state.fwd, state.valid, c.embed
    feed = fwd["feed"][valid]
    g["out.weight"][...] = dl.T @ feed
    g["out.bias"][...] = db
    dfeed = np.zeros(fwd["feed"].shape, dl.dtype)
    dfeed[valid] = dl @ p["out.weight"]
    grads = backward_rows(model.cell, model.kind, p, fwd, dfeed, state.memory, state.keys, state.src_len, state.lengths,
                         state.drop, model.nchunks(len(state.lengths)))
    # every weight gradient of the loop: one product over the valid steps of all rows
    dxp, dpre = grads["dxp"][valid], grads["dpre"][valid]
    k = model.nchunks(len(dxp))
    inputs = step_inputs(state.emb, fwd["att"], fwd["hs"], valid)
    In = E + c.hidden
    if model.cell.input_apart:
        da = grads["da"][valid]
        g["decoder.weight_ih"][...] = t_times(dxp, inputs[:, :In], k)
        g["decoder.weight_hh"][...] = t_times(da, inputs[:, In:], k)
        g["decoder.bias_hh"][...] = da.sum(axis=0)
    else:   # one gradient of both pre-activations: one product for both weights, one sum for both biases
        both = t_times(dxp, inputs, k)
        g["decoder.weight_ih"][...] = both[:, :In]
        g["decoder.weight_hh"][...] = both[:, In:]
    g["decoder.bias_ih"][...] = dxp.sum(axis=0)
    if not model.cell.input_apart:
        g["decoder.bias_hh"][...] = g["decoder.bias_ih"]
    g["combine.weight"][...] = t_times(dpre, fwd["hc"][valid], k)
    g["combine.bias"][...] = dpre.sum(axis=0)
    if c.attention == "additive":
        g["attention.query.weight"][...] = t_times(grads["dq"][valid], fwd["hs"][1:][valid], k)
        g["attention.v.weight"][0] = grads["dv"]
    demb = times(dxp, p["decoder.weight_ih"][:, :E], k)
    if state.keep is not None:
        demb *= state.keep[valid]
    scatter_add_rows(g["tgt_embedding.weight"], state.ids[valid], demb)
    h0, _, top = state.bridge
    dfinals = model.bridge_backward(state.enc, state.rows, grads["dh0"], grads["dc0"], h0, top)
    dout = model.attended_backward(state.enc, state.rows, state.memory, grads, dfinals)
    model.encoder_backward(state.enc, dout, dfinals)
