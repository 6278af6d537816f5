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
the number of grams (about 40 for a 9-letter word at N = 5), and the sum also trained better than
a bag scaled to unit length (docs/results.md, "Tried and not kept").

A batch's bag is flat: ``buckets`` (M,) and ``rows`` (M,), the example each gram belongs to.
Dimensions: T steps, B batch, N the largest n, K buckets, C labels.
"""
from __future__ import annotations

import numpy as np

from .ngrams import MODULUS, SALT_BASE, ngram_ids


def bag(ids: np.ndarray, lengths: np.ndarray, vocab_size: int, max_n: int, buckets: int, salt: int = 0):
    """(buckets (M,), rows (M,)): every 1..N-gram of each framed sequence of ids (T, B) (valid up to
    lengths (B,); padding ignored), as its hash bucket and the column b it comes from. The 2..N-grams
    are the n-gram embeddings' own (``ngrams.ngram_ids``, which already starts each sequence at the
    marker V) of the text with its end marker appended; the 1-grams are each id's hash alone."""
    T, B = ids.shape
    lengths = np.asarray(lengths, np.int64)
    ended = np.zeros((T + 1, B), np.int64)                  # the text, then the end marker
    ended[:T] = ids
    ended[lengths, np.arange(B)] = vocab_size + 1
    inside = np.arange(T + 1)[:, None] <= lengths[None, :]   # steps up to the end marker
    scatter = pow(SALT_BASE, salt, MODULUS)
    columns = np.broadcast_to(np.arange(B), (T + 1, B))
    start = np.full(B, (vocab_size + 1) * scatter % MODULUS % buckets)
    out_buckets = [start, ((ended[inside] + 1) * scatter % MODULUS) % buckets]
    out_rows = [np.arange(B), columns[inside]]
    if max_n > 1:
        grams = ngram_ids(ended, vocab_size, max_n, buckets, salt)   # (N-1, T+1, B), -1 before the start
        valid = inside & (grams >= 0)
        out_buckets.append(grams[valid])
        out_rows.append(np.broadcast_to(columns, grams.shape)[valid])
    return np.concatenate(out_buckets), np.concatenate(out_rows)


def logits(table: np.ndarray, buckets: np.ndarray, rows: np.ndarray, batch: int, keep=None) -> np.ndarray:
    """(B, C): the sum over each example's grams of its table rows (times ``keep`` (M,), the
    dropout multipliers, when given)."""
    from ..kernels.embedding import scatter_add_rows

    out = np.zeros((batch, table.shape[1]), table.dtype)
    picked = table[buckets]
    scatter_add_rows(out, rows, picked if keep is None else picked * keep[:, None])
    return out


def backward(dtable: np.ndarray, buckets: np.ndarray, rows: np.ndarray, dlogits: np.ndarray, keep=None) -> np.ndarray:
    """dtable += each gram's share of dlogits (B, C): the row of its example (times ``keep``).
    Returns the distinct buckets written; a dropped gram (keep 0) writes nothing (sparse_grad.py)."""
    from ..kernels.embedding import scatter_add_rows

    if keep is not None:
        kept = keep != 0
        buckets, rows, keep = np.ascontiguousarray(buckets[kept]), rows[kept], keep[kept]
    d = dlogits[rows]
    scatter_add_rows(dtable, buckets, np.ascontiguousarray(d if keep is None else d * keep[:, None]))
    return np.unique(buckets)
