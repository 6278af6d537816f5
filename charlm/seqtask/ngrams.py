"""Hashed n-gram embeddings: the input of step t is the embedding of token t plus the embeddings
of the n-grams (n = 2..N) that end at token t, each hashed into one of K shared buckets (the
subword buckets of fastText, Bojanowski et al. 2017, https://arxiv.org/abs/1607.04606).

At the character level this hands the recurrent layers the letter sequences a linear n-gram
classifier weighs ("sch", "ij", "ção") at the step where they complete, so the network need not
discover them one character at a time from a few thousand words per class.

An n-gram may reach one step before the sequence: that step is a boundary marker (id V), so
"<th" (the word starts with "th") differs from "th" inside it; grams reaching further back are
left out. The hash of the ids g_1..g_n is the polynomial sum (g_i + 1) * 1000003^(n-i) modulo
the prime 2^31 - 1, then modulo K: fixed arithmetic, so a stored model hashes the same anywhere.
Collisions only make two n-grams share a vector. With a ``salt`` s (an ensemble's member s, see
ensemble.py), that hash is multiplied by 48271^s modulo the prime before the modulo K (48271 is the
MINSTD multiplier, a primitive root of 2^31 - 1): a bijection of the hashes that scatters the
buckets afresh, so two members rarely share a collision; salt 0 multiplies by 1 and leaves every
bucket as it was.

Dimensions: T steps, B batch, N the largest n, K buckets, E embedding width.
"""
from __future__ import annotations

import numpy as np

MULTIPLIER, MODULUS = 1_000_003, 2_147_483_647
SALT_BASE = 48_271


def ngram_ids(ids: np.ndarray, vocab_size: int, max_n: int, buckets: int, salt: int = 0) -> np.ndarray:
    """(N-1, T, B) bucket of the n-gram (n = 2..N) ending at each step of ids (T, B), or -1 where
    it would reach more than one step before the sequence. Padded steps get buckets too (of
    whatever ids they hold); the model never reads them. ``salt``: see the module docstring."""
    T, B = ids.shape
    marked = np.concatenate([np.full((1, B), vocab_size, np.int64), ids.astype(np.int64)])  # (T+1, B)
    h = marked[1:] + 1                   # (T, B) hash of the 1-gram ending at each step
    result = np.full((max_n - 1, T, B), -1, np.int64)
    scatter = pow(SALT_BASE, salt, MODULUS)   # < 2^31, so scatter * h < 2^62 fits in int64
    for n in range(2, min(max_n, T + 1) + 1):
        first = n - 2                    # the first step whose n-gram starts at the marker
        head = marked[:T - first] + 1    # token t-n+1 of steps t = first..T-1 (marked is 1 ahead)
        h[first:] = (head * pow(MULTIPLIER, n - 1, MODULUS) + h[first:]) % MODULUS
        result[n - 2, first:] = (h[first:] * scatter % MODULUS) % buckets
    return result


def embed(table: np.ndarray, grams: np.ndarray, x: np.ndarray, keep=None) -> None:
    """x (T, B, E) += keep[k] * table[grams[k]] for every n-gram order k where the bucket is >= 0;
    keep (N-1, T, B) are input-dropout multipliers, or None (all 1)."""
    for k in range(grams.shape[0]):
        valid = grams[k] >= 0                            # (T, B)
        rows = table[grams[k][valid]]
        x[valid] += rows if keep is None else rows * keep[k][valid][:, None]


def embed_backward(dtable: np.ndarray, grams: np.ndarray, dx: np.ndarray, mask: np.ndarray, keep=None) -> np.ndarray:
    """dtable += the rows of dx (T, B, E) (times ``keep``) at the valid steps (mask (T, B)), by
    bucket. Returns the distinct buckets written: a dropped n-gram (keep 0) writes nothing, as it
    was not seen (its share is zero anyway), so its row stays untouched (sparse_grad.py)."""
    from ..kernels.embedding import scatter_add_rows

    written = []
    for k in range(grams.shape[0]):
        use = mask & (grams[k] >= 0)
        if keep is not None:
            use &= keep[k] != 0
        rows = dx[use] if keep is None else dx[use] * keep[k][use][:, None]
        buckets = np.ascontiguousarray(grams[k][use])
        scatter_add_rows(dtable, buckets, np.ascontiguousarray(rows))
        written.append(buckets)
    return np.unique(np.concatenate(written))
