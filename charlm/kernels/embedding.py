"""Scatter-add of gradient rows by token id (the embedding / folded-table backward).

``np.add.at`` does the same but far slower (per-element ufunc dispatch); this is one pass.
"""
from numba import njit


@njit(cache=True, nogil=True)  # nogil: an ensemble's members run it on two Python threads at once
def scatter_add_rows(dst, ids, rows):
    """dst[ids[n]] += rows[n] for every n. dst (V, D), ids (N,) int, rows (N, D); serial so
    repeated ids never race and the sum order is fixed (bitwise reproducible)."""
    D = rows.shape[1]
    for n in range(ids.shape[0]):
        i = ids[n]
        for d in range(D):
            dst[i, d] += rows[n, d]
