"""Pooling over valid steps, and the softmax cross-entropy losses, each with its backward.

out (T, B, F) are the encoder's outputs (0 at padded steps), F = D*H; mask (T, B) marks the
valid steps; lengths (B,). Nothing here sees a padded step: pooling reads valid steps only and
the per-token loss averages over valid tokens only.
"""
from __future__ import annotations

import numpy as np


def pool(kind: str, out, lengths, mask, directions: int):
    """(B, F) features of each sequence, and what ``pool_backward`` needs.

    mean: the average of the outputs over the valid steps.
    max: the element-wise maximum over the valid steps.
    final: the forward direction's output at the last valid step beside the reverse direction's
           at step 0, i.e. both directions' final h of the top layer (PyTorch's h_n[-2:])."""
    T, B, F = out.shape
    rows = np.arange(B)
    if kind == "mean":
        return out.sum(axis=0) / lengths[:, None].astype(out.dtype), None
    if kind == "max":
        masked = np.where(mask[:, :, None], out, -np.inf)
        arg = masked.argmax(axis=0)                                   # (B, F) step of each max
        return np.take_along_axis(out, arg[None], axis=0)[0], arg
    H = F // directions
    feats = out[lengths - 1, rows].copy()                             # forward: last valid step
    if directions == 2:
        feats[:, H:] = out[0, :, H:]                                  # reverse: ends at step 0
    return feats, None


def pool_backward(kind: str, dfeats, out_shape, lengths, mask, arg, directions: int):
    """dL/d(out) (T, B, F), zero at padded steps, from dL/d(features) (B, F)."""
    T, B, F = out_shape
    dout = np.zeros(out_shape, dfeats.dtype)
    rows = np.arange(B)
    if kind == "mean":
        dout[...] = (dfeats / lengths[:, None].astype(dfeats.dtype))[None] * mask[:, :, None]
    elif kind == "max":
        np.put_along_axis(dout, arg[None], dfeats[None], axis=0)
    else:
        H = F // directions
        dout[lengths - 1, rows, :H] = dfeats[:, :H]
        if directions == 2:
            dout[0, :, H:] += dfeats[:, H:]
    return dout


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits, labels, weights=None, smoothing: float = 0.0):
    """Mean cross-entropy over rows (weighted: sum w·loss / sum w) and dL/dlogits.
    logits (N, C), labels (N,) int, weights (N,) or None. ``smoothing`` e puts (1 - e) on the label
    and spreads e evenly over the C classes (PyTorch's label_smoothing): a row's loss is
    (1 - e)·(−log p_label) + e·mean_c(−log p_c), its gradient p − (1 − e)·onehot − e/C."""
    logp = log_softmax(logits.astype(np.float64))
    n = logits.shape[0]
    nll = -logp[np.arange(n), labels]
    if smoothing:
        nll = (1.0 - smoothing) * nll - smoothing * logp.mean(axis=1)
    w = np.ones(n) if weights is None else weights.astype(np.float64)
    total = w.sum()
    loss = float((nll * w).sum() / total)
    dlogits = np.exp(logp)
    dlogits[np.arange(n), labels] -= 1.0 - smoothing
    if smoothing:
        dlogits -= smoothing / logits.shape[1]
    dlogits *= (w / total)[:, None]
    return loss, dlogits.astype(logits.dtype)


def dropout_mask(shape, p: float, rng, dtype):
    """Inverted dropout: kept units scaled by 1/(1-p), so nothing changes at inference."""
    keep = 1.0 - p
    return ((rng.random(shape) < keep) / keep).astype(dtype)
