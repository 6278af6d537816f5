"""The encoder-decoder's large products outside its time loops, split across the kernel threads.

While charlm trains or decodes, every BLAS pool runs one thread (charlm/runtime.py says why), so a
NumPy product there runs on one core. A batch's weight gradients (one product over all its steps
each) and its attention keys are the largest products of a step after the loops themselves; the
row-split and sum-split products of kernels/parallel.py give them every core. Results depend on
``nchunks`` only through the order of the sums (as the loops' own do).
"""
from __future__ import annotations

import numpy as np

from ..kernels.parallel import matmul_rows, matmul_tn


def _operand(a):
    """A C- or F-contiguous array as the compiled products take it (a copy only if neither)."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


def times(A, B, nchunks: int):
    """A @ B for A (..., K) and B (K, M): (..., M), the rows of A split into ``nchunks`` blocks."""
    flat = np.ascontiguousarray(A).reshape(-1, A.shape[-1])
    out = np.empty((flat.shape[0], B.shape[1]), flat.dtype)
    if flat.shape[0]:
        matmul_rows(flat, _operand(B), out, max(1, min(nchunks, flat.shape[0])))
    return out.reshape(A.shape[:-1] + (B.shape[1],))


def t_times(A, B, nchunks: int):
    """A^T @ B for A (N, M) and B (N, K): (M, K), the weight-gradient product, its sum over N split
    into ``nchunks`` blocks added in a fixed order."""
    A, B = np.ascontiguousarray(A), np.ascontiguousarray(B)
    chunks = max(1, min(nchunks, A.shape[0]))
    out = np.empty((A.shape[1], B.shape[1]), A.dtype)
    if not A.shape[0]:
        out[...] = 0
        return out
    matmul_tn(A, B, out, np.empty((chunks - 1, A.shape[1], B.shape[1]), A.dtype), chunks)
    return out
