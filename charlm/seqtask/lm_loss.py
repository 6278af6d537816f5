"""An auxiliary language-model loss on the encoder (semi-supervised sequence learning, Dai & Le
2015, https://arxiv.org/abs/1511.01432, here trained jointly with the task rather than before it).

From the top layer's forward output at step t a linear head predicts token t+1, and at a
sequence's last step the boundary id V (the end); with ``lm_weight`` w the training loss is
task loss + w * (mean next-token loss over the valid steps). It makes the encoder learn each
class's character transitions from the same examples, beyond what the label alone asks.

The reverse direction predicts token t-1 (the start, id V, at step 0) through a second head, but
only without n-grams: with them, the input at step t already holds the n-grams ending at t, which
contain token t-1, so that prediction would read its answer off the input.

Padded steps carry zero weight: they change neither the loss nor any gradient. Evaluation scores
the task alone; the heads (``lm_head.*``, ``lm_head_reverse.*``, V+1 rows) are stored with the
model and never read by a prediction.

Dimensions: T steps, B batch, H hidden per direction, V vocabulary (+1: the boundary).
"""
from __future__ import annotations

import numpy as np

from .heads import cross_entropy

HEADS = ("lm_head", "lm_head_reverse")


def lm_directions(config) -> int:
    """How many directions carry a language-model head (0 when the loss is off)."""
    if not config.lm_weight:
        return 0
    return 2 if config.directions == 2 and not config.ngrams else 1


def lm_shapes(config) -> list[tuple[str, tuple[int, ...]]]:
    V1, H = config.vocab_size + 1, config.hidden
    return [(f"{HEADS[d]}.{kind}", shape) for d in range(lm_directions(config))
            for kind, shape in (("weight", (V1, H)), ("bias", (V1,)))]


def lm_targets(ids, lengths, boundary: int, d: int):
    """(T, B) the token each valid step predicts: direction 0 the next one, 1 the previous one,
    ``boundary`` past either edge; padded steps get ``boundary`` too (their weight is 0)."""
    T, B = ids.shape
    t = np.arange(T)[:, None]
    shifted = np.full((T, B), boundary, np.int64)
    if d == 0:
        shifted[:-1] = ids[1:]
        return np.where(t < lengths[None, :] - 1, shifted, boundary)
    shifted[1:] = ids[:-1]
    return np.where((t >= 1) & (t < lengths[None, :]), shifted, boundary)


def lm_loss(params, out, ids, lengths, mask, config):
    """Sum over the LM directions of the mean next/previous-token loss over valid steps.
    out (T, B, D*H) the top layer's outputs (0 at padded steps); ids (T, B); lengths (B,);
    mask (T, B). Returns (loss, dL/d(out) (T, B, D*H), {head parameter name: gradient})."""
    T, B, F = out.shape
    H = config.hidden
    weights = mask.reshape(-1).astype(np.float64)
    total, dout, grads = 0.0, np.zeros_like(out), {}
    for d in range(lm_directions(config)):
        W, b = params[f"{HEADS[d]}.weight"], params[f"{HEADS[d]}.bias"]
        h = out[:, :, d * H:(d + 1) * H].reshape(T * B, H)
        targets = lm_targets(ids, lengths, config.vocab_size, d).reshape(-1)
        loss, dlogits = cross_entropy(h @ W.T + b, targets, weights)              # (T*B, V+1)
        total += loss
        dout[:, :, d * H:(d + 1) * H] = (dlogits @ W).reshape(T, B, H)
        grads[f"{HEADS[d]}.weight"] = dlogits.T @ h
        grads[f"{HEADS[d]}.bias"] = dlogits.sum(axis=0)
    return total, dout, grads
