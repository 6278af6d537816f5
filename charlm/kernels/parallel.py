"""Matrix products split across threads, each thread calling single-threaded BLAS.

Why not let OpenBLAS thread its own GEMMs? Because a training step is hundreds of small GEMMs
(one per time step and layer, 32-64 rows), and every multithreaded BLAS call is a fork/join
whose idle worker spins: on 2 cores shared with anything else, one descheduled worker stalls
the step (under load a 64-row GEMM on two BLAS threads can run far slower than on one).
Instead charlm splits the *work*: the rows of the batch are independent in the recurrence, so
each thread runs the whole recurrence over its block of streams (no synchronisation per step),
and the large GEMMs are split by rows (``matmul_rows``) or by the summed dimension with a fixed-
order reduction (``matmul_tn``). ``charlm.runtime.thread_limits`` therefore limits the BLAS pools
to one thread and gives Numba the cores, for the duration of a training, evaluation or sampling call.

``nchunks`` is the number of blocks (normally the Numba thread count); results depend on it only
through the order of floating-point sums (``matmul_tn``'s reduction), never on scheduling.
Every function here has a serial twin in NumPy; tests/test_bench.py checks they agree.
"""
import numpy as np
from numba import njit

from .blocks import run_blocks


@njit(cache=True)
def chunk(k, N, nchunks):
    """Rows [r0, r1) of block k when N rows are split into ``nchunks`` blocks (sizes differ by 1
    at most)."""
    return k * N // nchunks, (k + 1) * N // nchunks


def block_steps(rows: int, target: int = 512) -> int:
    """Time steps per block so that a thread's block holds about ``target`` rows (see the layer
    kernels, layer.py): enough rows for an efficient GEMM, small enough to stay out of main memory."""
    return max(1, target // max(rows, 1))


def matmul_rows(A, B, out, nchunks):
    """out = A @ B with the rows of A split into ``nchunks`` blocks, one per thread.
    A (N, K), B (K, M) C- or F-contiguous (a transposed weight is fine), out (N, M) C-contiguous."""
    run_blocks(_rows_block, nchunks, A, B, out, nchunks)


def matmul_rows_bias(A, B, bias, out, nchunks):
    """out = A @ B + bias (the decoder): rows split; the bias is added while a block is in cache."""
    run_blocks(_rows_bias_block, nchunks, A, B, bias, out, nchunks)


def matmul_tn(A, B, out, partial, nchunks):
    """out = A^T @ B, the weight-gradient GEMM (sum over N positions), with N split into ``nchunks``
    blocks: block 0 writes ``out``, block k > 0 writes ``partial[k - 1]``, then the blocks are added
    in a fixed order (rows of ``out`` split across threads).
    A (N, M), B (N, K) C-contiguous; out (M, K) C-contiguous; partial (>= nchunks - 1, M, K) scratch."""
    run_blocks(_tn_block, nchunks, A, B, out, partial, nchunks)
    if nchunks > 1:
        run_blocks(_add_partials, nchunks, out, partial, nchunks)


def sum_blocks(parts, out):
    """out[v] = sum_k parts[k, v] in order k = 0, 1, ... (reduces per-thread partial tables).
    parts (nchunks, V, D), out (V, D); rows of out split across threads."""
    V = parts.shape[1]
    nt = min(parts.shape[0], V) if V > 0 else 1
    run_blocks(_sum_block, nt, parts, out, nt)


def block_signature(name, dtype):
    """(the block ``name`` of this module, and the argument types its runner calls it with for
    ``dtype`` C-contiguous arrays): what a helper process compiles ahead of the call
    (compile_aside.py)."""
    from .call_types import signature

    block = {"_rows_block": _rows_block, "_tn_block": _tn_block, "_add_partials": _add_partials,
             "_sum_block": _sum_block}[name]
    types = dict(k="i0", A="f2", B="f2", out="f2", partial="f3", parts="f3", nchunks="i0", nt="i0")
    return block, signature(block, types, dtype)


# The blocks (run_blocks calls each once per block k, on several threads at once: nogil)

@njit(cache=True, nogil=True)
def _rows_block(k, A, B, out, nchunks):
    r0, r1 = chunk(k, A.shape[0], nchunks)
    if r1 > r0:
        np.dot(A[r0:r1], B, out[r0:r1])


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_bias_block(k, A, B, bias, out, nchunks):
    r0, r1 = chunk(k, A.shape[0], nchunks)
    if r1 > r0:
        np.dot(A[r0:r1], B, out[r0:r1])
        for n in range(r0, r1):
            for m in range(out.shape[1]):
                out[n, m] += bias[m]


@njit(cache=True, nogil=True)
def _tn_block(k, A, B, out, partial, nchunks):
    r0, r1 = chunk(k, A.shape[0], nchunks)
    np.dot(A[r0:r1].T, B[r0:r1], out if k == 0 else partial[k - 1])


@njit(cache=True, nogil=True, error_model="numpy")
def _add_partials(k, out, partial, nchunks):
    """Rows [m0, m1) of out += partial[0] + partial[1] + ... in that order."""
    M, K = out.shape
    m0, m1 = chunk(k, M, nchunks)
    for j in range(1, nchunks):
        for m in range(m0, m1):
            for q in range(K):
                out[m, q] += partial[j - 1, m, q]


@njit(cache=True, nogil=True, error_model="numpy")
def _sum_block(k, parts, out, nt):
    nchunks, V, D = parts.shape
    v0, v1 = chunk(k, V, nt)
    for v in range(v0, v1):
        for d in range(D):
            out[v, d] = parts[0, v, d]
        for j in range(1, nchunks):
            for d in range(D):
                out[v, d] += parts[j, v, d]
