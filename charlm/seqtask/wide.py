"""The wide path of a classifier: a linear model over the bag of hashed n-grams of the whole text,
whose logits are added to the recurrent head's and trained with them (wide & deep, Cheng et al.
2016, https://arxiv.org/abs/1606.07792; the bag is fastText's classifier, Joulin et al. 2016,
https://arxiv.org/abs/1607.01759).

The recurrent encoder and a linear n-gram classifier reach about the same accuracy on word
language identification by different routes (a learned reading of the letters against a weighed
list of letter groups); summed logits let one cover what the other misses.

The text is framed by two markers, a start (id V) and an end (id V + 1), and every n-gram of the
framed ids with n = 1..N is hashed into one of K rows of a K x C table: "<th" (the word starts
with "th") and "ng>" (it ends with "ng") are grams of their own, as in a character n-gram
vectoriser with word-boundary padding. The hash of g_1..g_n is Horner's rule on (g_i + 1) with
base 1000003 modulo 2^31 - 1 (ngrams.py's arithmetic), times the member's salt factor, modulo K.

The bag is a sum, not a mean: a logistic regression on n-gram counts, so a longer text (more
evidence) gets larger logits. Under Adam a mean divides the path's effective learning rate by
the number of grams (about 40 for a 9-letter word at N = 5); measured alone on word language
identification over 12 epochs, the summed bag reached 0.856 dev accuracy, the same bag scaled to
unit length 0.850, the mean 0.780; beside the recurrent encoder, 0.866 summed against 0.857 scaled.

A batch's bag is flat: ``buckets`` (M,) and ``rows`` (M,), the example each gram belongs to.
Dimensions: T steps, B batch, N the largest n, K buckets, C labels.
"""
from __future__ import annotations

import numpy as np

from .ngrams import MODULUS, MULTIPLIER, SALT_BASE


def bag(ids: np.ndarray, lengths: np.ndarray, vocab_size: int, max_n: int, buckets: int, salt: int = 0):
    """(buckets (M,), rows (M,)): every 1..N-gram of each framed sequence of ids (T, B) (valid up to
    lengths (B,); padding ignored), as its hash bucket and the column b it comes from."""
    T, B = ids.shape
    lengths = np.asarray(lengths, np.int64)
    framed = np.zeros((T + 2, B), np.int64)
    framed[0] = vocab_size
    framed[1:T + 1] = ids
    framed[lengths + 1, np.arange(B)] = vocab_size + 1
    scatter = pow(SALT_BASE, salt, MODULUS)
    start = np.arange(T + 2)[:, None]
    h = np.zeros((T + 2, B), np.int64)
    out_buckets, out_rows = [], []
    for n in range(1, max_n + 1):
        P = T + 3 - n                        # start positions p with p + n <= T + 2
        if P <= 0:
            break
        h = (h[:P] * MULTIPLIER + framed[n - 1:n - 1 + P] + 1) % MODULUS   # the n-gram starting at p
        valid = start[:P] + n <= lengths[None, :] + 2                       # (P, B)
        out_buckets.append((h[valid] * scatter % MODULUS) % buckets)
        out_rows.append(np.broadcast_to(np.arange(B), (P, B))[valid])
    return np.concatenate(out_buckets), np.concatenate(out_rows)


def logits(table: np.ndarray, buckets: np.ndarray, rows: np.ndarray, batch: int, keep=None) -> np.ndarray:
    """(B, C): the sum over each example's grams of its table rows (times ``keep`` (M,), the
    dropout multipliers, when given)."""
    from ..kernels.embedding import scatter_add_rows

    out = np.zeros((batch, table.shape[1]), table.dtype)
    picked = table[buckets]
    scatter_add_rows(out, rows, picked if keep is None else picked * keep[:, None])
    return out


def backward(dtable: np.ndarray, buckets: np.ndarray, rows: np.ndarray, dlogits: np.ndarray, keep=None) -> None:
    """dtable += each gram's share of dlogits (B, C): the row of its example (times ``keep``)."""
    from ..kernels.embedding import scatter_add_rows

    d = dlogits[rows]
    scatter_add_rows(dtable, buckets, np.ascontiguousarray(d if keep is None else d * keep[:, None]))
