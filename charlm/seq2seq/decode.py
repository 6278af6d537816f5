"""Decoding the encoder-decoder: states of K hypotheses, one step at a time, and batched greedy decoding.

The interface beam search drives (charlm/decoding/beam.py's BeamModel): ``step(tokens, states)``
feeds one token to each of K hypotheses and returns their next-token log-probabilities (K, V)
float64 and new states, leaving ``states`` as it was; ``select(states, rows)`` picks hypotheses.
A state holds the row's encoder outputs and keys besides the decoder's own state, so hypotheses
of different sources can share one call. A step is the training loop's kernel run for one step
(decoder.py), without dropout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..seqtask.heads import log_softmax
from .decoder import forward_rows


@dataclass(frozen=True)
class States:
    """K hypotheses: every array's batch axis has K rows."""
    memory: np.ndarray    # (K, S, F) encoder outputs
    keys: np.ndarray      # (K, S, A)
    src_len: np.ndarray   # (K,) source lengths
    h: np.ndarray         # (K, H) the decoder's state
    c: np.ndarray         # (K, H) its second state (a copy of h for one-state cells)
    feed: np.ndarray      # (K, H) the last attentional vector (0 before the first step)


def encode(model, src_ids, src_lengths) -> States:
    """The states of B sources (src_ids (S, B) right-padded, any order), before their first token."""
    enc = model.encode_batch(src_ids, src_lengths)
    rows = np.argsort(enc.order, kind="stable")   # the caller's row b is the encoder's rows[b]
    h0, c0, top = model.bridge(enc, rows)
    memory, keys, src_len = model.attended(enc, rows, top)
    return States(memory, keys, src_len, h0, c0, np.zeros_like(h0))


def step(model, tokens, states: States):
    """(log_probs (K, V) float64, new States) after feeding tokens (K,) to ``states``."""
    p, E = model.params, model.config.embed
    tokens = np.asarray(tokens, np.int64)
    K = len(tokens)
    xp = np.ascontiguousarray((p["tgt_embedding.weight"][tokens] @ p["decoder.weight_ih"][:, :E].T)[None])
    fwd = forward_rows(model.cell, model.kind, p, xp, states.memory, states.keys, states.src_len, np.ones(K, np.int64),
                      states.h, states.c, states.feed, np.zeros((0, 0, 0), model.dtype), model.nchunks(K))
    feed = fwd["att"][0]   # no dropout here: what the output reads is what the next step reads
    logits = feed @ p["out.weight"].T + p["out.bias"]
    h = fwd["hs"][1]
    c = fwd["cs"][1] if fwd["cs"].size else h
    return log_softmax(logits.astype(np.float64)), States(states.memory, states.keys, states.src_len, h, c, feed)


def select(states: States, rows) -> States:
    """The states of hypotheses ``rows`` (indices, repeats allowed), in order."""
    rows = np.asarray(rows, np.int64)
    return States(states.memory[rows], states.keys[rows],
                  states.src_len[rows], states.h[rows], states.c[rows], states.feed[rows])


def greedy(model, src_ids, src_lengths, bos: int, eos: int, max_length: int, banned=()) -> list[list[int]]:
    """The likeliest token at every step, for a batch of sources at once: each source's ids up to,
    not including, ``eos`` (or ``max_length`` ids when it never comes). Finished rows leave the batch.
    ``banned`` ids (tokens never to be written, such as padding) are never chosen."""
    banned = np.asarray(sorted(set(int(b) for b in banned)), np.int64)
    states = encode(model, src_ids, src_lengths)
    alive = np.arange(len(states.src_len))
    outputs: list[list[int]] = [[] for _ in alive]
    tokens = np.full(len(alive), bos, np.int64)
    for _ in range(max_length):
        log_probs, states = step(model, tokens, states)
        log_probs[:, banned] = -np.inf
        best = log_probs.argmax(axis=1)
        going = best != eos
        for b, t in zip(alive[going].tolist(), best[going].tolist()):
            outputs[b].append(t)
        if not going.any():
            break
        if not going.all():
            states = select(states, np.flatnonzero(going))
        alive, tokens = alive[going], best[going]
    return outputs
