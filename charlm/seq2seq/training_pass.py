"""One training batch through the encoder-decoder: the forward pass kept for the backward, the loss, the backward."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..seqtask.heads import dropout_mask
from .decoder import run_backward, run_forward


@dataclass
class Pass:
    """What the backward reads of one forward; the decoder's rows sorted by target length."""
    enc: object           # model.Encoded (not imported: model.py imports this module)
    order: np.ndarray     # decoder row i is the caller's row order[i]
    rows: np.ndarray      # ... and the encoder's sorted row rows[i]
    lengths: np.ndarray   # (B,) target lengths, non-increasing
    valid: np.ndarray     # (T, B) True at the steps a row runs
    ids: np.ndarray       # (T, B) target input ids, 0 at padding
    emb: np.ndarray       # (T, B, E) their embeddings, after dropout
    keep: np.ndarray | None   # the embeddings' dropout mask
    drop: np.ndarray      # (T, B, H) the attentional vectors' dropout mask, or empty
    memory: np.ndarray    # (S, B, F) the encoder outputs in the decoder's order
    keys: np.ndarray      # (S, B, A)
    src_len: np.ndarray   # (B,)
    bridge: tuple         # (h0, c0, top) of model.bridge
    fwd: dict             # the decoder loop's arrays (decoder.run_forward)
    logits: np.ndarray    # (N, V) at the valid steps, step-major


def run_pass(model, src_ids, src_lengths, tgt_in, tgt_lengths, rng):
    """Model.forward: (logits (T, B, V), alpha (T, B, S), Pass)."""
    c, p = model.config, model.params
    enc = model.encode_batch(src_ids, src_lengths, rng)
    tgt_len = np.asarray(tgt_lengths, np.int64)
    if tgt_len.shape != enc.order.shape or tgt_len.min() < 1:
        raise ValueError("tgt_lengths must hold one positive length per source")
    order = np.argsort(-tgt_len, kind="stable")
    rows = np.argsort(enc.order, kind="stable")[order]
    lengths = np.ascontiguousarray(tgt_len[order])
    T, B, H, dt = int(lengths[0]), len(lengths), c.hidden, model.dtype
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
    xp = np.ascontiguousarray(emb @ p["decoder.weight_ih"][:, :c.embed].T)
    fwd = run_forward(model.cell, model.kind, p, xp, memory, keys, src_len, lengths, h0, c0, np.zeros((B, H), dt),
                      drop, model.nchunks(B))
    flat = fwd["feed"][valid] @ p["out.weight"].T + p["out.bias"]
    inverse = np.argsort(order, kind="stable")
    logits = np.zeros((T, B, c.tgt_vocab), dt)
    logits[valid] = flat
    state = Pass(enc, order, rows, lengths, valid, ids, emb, keep, drop, memory, keys, src_len, (h0, c0, top), fwd,
                 flat)
    return logits[:, inverse], fwd["alpha"][:, inverse], state


def loss(model, state: Pass, tgt_out):
    """(mean cross-entropy over the valid target tokens, (dL/dlogits (N, V), its column sums)).
    Overwrites state.logits with the gradient."""
    from ..kernels.loss import cross_entropy_grad_par

    T = state.valid.shape[0]
    targets = np.ascontiguousarray(np.asarray(tgt_out)[:T][:, state.order][state.valid], dtype=np.int64)
    dlogits = state.logits
    db = np.empty(dlogits.shape[1], dlogits.dtype)
    total = cross_entropy_grad_par(dlogits, targets, 1.0 / len(targets), db, model.nchunks(len(targets)))
    return total / len(targets), (dlogits, db)


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
    grads = run_backward(model.cell, model.kind, p, fwd, dfeed, state.memory, state.keys, state.src_len, state.lengths,
                         state.drop, model.nchunks(len(state.lengths)))
    # every weight gradient of the loop: one GEMM over the valid steps of all rows
    dxp, da, dpre = grads["dxp"][valid], grads["da"][valid], grads["dpre"][valid]
    prev = np.concatenate([np.zeros_like(fwd["feed"][:1]), fwd["feed"][:-1]])   # a_{t-1}, a_0 = 0
    g["decoder.weight_ih"][:, :E] = dxp.T @ state.emb[valid]
    g["decoder.weight_ih"][:, E:] = dxp.T @ prev[valid]
    g["decoder.weight_hh"][...] = da.T @ fwd["hs"][:-1][valid]
    g["decoder.bias_ih"][...] = dxp.sum(axis=0)
    g["decoder.bias_hh"][...] = da.sum(axis=0)
    g["combine.weight"][...] = dpre.T @ fwd["hc"][valid]
    g["combine.bias"][...] = dpre.sum(axis=0)
    if c.attention == "additive":
        g["attention.query.weight"][...] = grads["dq"][valid].T @ fwd["hs"][1:][valid]
        g["attention.v.weight"][0] = grads["dv"]
    demb = dxp @ p["decoder.weight_ih"][:, :E]
    if state.keep is not None:
        demb *= state.keep[valid]
    scatter_add_rows(g["tgt_embedding.weight"], state.ids[valid], demb)
    h0, _, top = state.bridge
    dfinals = model.bridge_backward(state.enc, state.rows, grads["dh0"], grads["dc0"], h0, top)
    dout = model.attended_backward(state.enc, state.rows, state.memory, grads, dfinals)
    model.encoder_backward(state.enc, dout, dfinals)
