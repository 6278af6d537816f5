"""Matrix products split across Numba threads, each thread calling single-threaded BLAS.

Why not let OpenBLAS thread its own GEMMs? Because a training step is hundreds of small GEMMs
(one per time step and layer, 32-64 rows), and every multithreaded BLAS call is a fork/join
whose idle worker spins: on 2 cores shared with anything else, one descheduled worker stalls
the step (measured here under load: 64-row GEMM 60 GFLOP/s on one thread, 2 GFLOP/s on two).
Instead charlm splits the *work*: the rows of the batch are independent in the recurrence, so
each thread runs the whole recurrence over its block of streams (no synchronisation per step),
and the large GEMMs are split by rows (``matmul_rows``) or by the summed dimension with a fixed-
order reduction (``matmul_tn``). ``charlm.runtime.set_threads`` therefore limits the BLAS pools to
one thread and gives Numba the cores.

``nchunks`` is the number of blocks (normally the Numba thread count); results depend on it only
through the order of floating-point sums (``matmul_tn``'s reduction), never on scheduling.
Every function here has a serial twin in NumPy; tests/test_bench.py checks they agree.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

ensure_blas()  # SciPy's BLAS, which Numba's own np.dot calls through numba_xxgemm


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Numba's C entry to SciPy's (column-major, Fortran) ?gemm, the one its np.dot uses, called on
    array data pointers with explicit leading dimensions and beta. Resolved by symbol name, so
    functions that use it can be cached."""
    if not (isinstance(c, types.Array) and c.dtype in (types.float32, types.float64)):
        return None
    dtype = c.dtype

    def codegen(context, builder, sig, args):
        ll_char = ir.IntType(8)
        intp_t = context.get_value_type(types.intp)
        vp = cgutils.voidptr_t
        fnty = ir.FunctionType(ir.IntType(32), [ll_char, ll_char, ll_char, intp_t, intp_t, intp_t, vp, vp, intp_t,
                                                vp, intp_t, vp, vp, intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        kind = ir.Constant(ll_char, ord("s" if dtype == types.float32 else "d"))

        def scalar_ptr(i):
            v = context.cast(builder, args[i], sig.args[i], dtype)
            return builder.bitcast(cgutils.alloca_once_value(builder, v), vp)

        def data_ptr(i):
            ary = context.make_array(sig.args[i])(context, builder, args[i])
            return builder.bitcast(ary.data, vp)

        def as_intp(i):
            return context.cast(builder, args[i], sig.args[i], types.intp)

        call_args = [kind, builder.trunc(as_intp(0), ll_char), builder.trunc(as_intp(1), ll_char),
                     as_intp(2), as_intp(3), as_intp(4), scalar_ptr(5), data_ptr(6), as_intp(7), data_ptr(8),
                     as_intp(9), scalar_ptr(10), data_ptr(11), as_intp(12)]
        return builder.call(fn, call_args)

    return types.int32(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), codegen


@njit(cache=True)
def gemm(A, B, C, trans_a, trans_b, beta):
    """C = op(A) @ op(B) + beta * C for row-major 2-D arrays whose rows may be strided (unit column
    stride); op(X) = X.T when trans_X. One BLAS call, no copies; beta = 1 accumulates."""
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    if M == 0 or N == 0:
        return
    sz = C.itemsize
    if A.strides[1] != sz or B.strides[1] != sz or C.strides[1] != sz:
        raise ValueError("gemm: arrays need a unit column stride")
    # Row-major C (M, N) is column-major C^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M).
    t, n = 116, 110  # ord("t"), ord("n")
    _xxgemm(t if trans_b else n, t if trans_a else n, N, M, K, 1.0, B, max(B.strides[0] // sz, 1),
            A, max(A.strides[0] // sz, 1), beta, C, max(C.strides[0] // sz, 1))


def block_steps(rows: int, target: int = 512) -> int:
    """Time steps per block so that a thread's block holds about ``target`` rows (see the cells'
    *_par kernels): enough rows for an efficient GEMM, small enough to stay out of main memory."""
    return max(1, target // max(rows, 1))


@njit(cache=True, parallel=True)
def matmul_rows(A, B, out, nchunks):
    """out = A @ B with the rows of A split into ``nchunks`` blocks, one per thread.
    A (N, K), B (K, M) C- or F-contiguous (a transposed weight is fine), out (N, M) C-contiguous."""
    N = A.shape[0]
    for k in prange(nchunks):
        r0 = k * N // nchunks
        r1 = (k + 1) * N // nchunks
        if r1 > r0:
            np.dot(A[r0:r1], B, out[r0:r1])


@njit(cache=True, parallel=True, error_model="numpy")
def matmul_rows_bias(A, B, bias, out, nchunks):
    """out = A @ B + bias (the decoder): rows split; the bias is added while a block is in cache."""
    N = A.shape[0]
    M = out.shape[1]
    for k in prange(nchunks):
        r0 = k * N // nchunks
        r1 = (k + 1) * N // nchunks
        if r1 > r0:
            np.dot(A[r0:r1], B, out[r0:r1])
            for n in range(r0, r1):
                for m in range(M):
                    out[n, m] += bias[m]


@njit(cache=True, parallel=True, error_model="numpy")
def matmul_tn(A, B, out, partial, nchunks):
    """out = A^T @ B, the weight-gradient GEMM (sum over N positions), with N split into ``nchunks``
    blocks: block 0 writes ``out``, block k > 0 writes ``partial[k - 1]``, then the blocks are added
    in a fixed order (rows of ``out`` split across threads).
    A (N, M), B (N, K) C-contiguous; out (M, K) C-contiguous; partial (>= nchunks - 1, M, K) scratch."""
    N = A.shape[0]
    M = out.shape[0]
    K = out.shape[1]
    for k in prange(nchunks):
        r0 = k * N // nchunks
        r1 = (k + 1) * N // nchunks
        if k == 0:
            np.dot(A[r0:r1].T, B[r0:r1], out)
        else:
            np.dot(A[r0:r1].T, B[r0:r1], partial[k - 1])
    if nchunks > 1:
        for k in prange(nchunks):
            m0 = k * M // nchunks
            m1 = (k + 1) * M // nchunks
            for j in range(1, nchunks):
                for m in range(m0, m1):
                    for q in range(K):
                        out[m, q] += partial[j - 1, m, q]


@njit(cache=True, parallel=True, error_model="numpy")
def sum_blocks(parts, out):
    """out[v] = sum_k parts[k, v] in order k = 0, 1, ... (reduces per-thread partial tables).
    parts (nchunks, V, D), out (V, D); rows of out split across threads."""
    nchunks, V, D = parts.shape
    nt = min(nchunks, V) if V > 0 else 1
    for k in prange(nt):
        v0 = k * V // nt
        v1 = (k + 1) * V // nt
        for v in range(v0, v1):
            for d in range(D):
                out[v, d] = parts[0, v, d]
            for j in range(1, nchunks):
                for d in range(D):
                    out[v, d] += parts[j, v, d]


# -- pieces shared by the cells' *_par kernels ------------------------------------------------------


@njit(cache=True, error_model="numpy")
def zero_parts(k, R, db, dtab, scatter, dW_hh, dW_ih, project):
    """Zero what thread k accumulates into (its first block overwrites the weight gradients)."""
    db[k, :] = 0
    if scatter:
        dtab[k, :, :] = 0
    if R == 0:  # a thread with no streams (more blocks than streams) still owns its parts
        dW_hh[k, :, :] = 0
        if project:
            dW_ih[k, :, :] = 0


@njit(cache=True, error_model="numpy")
def scatter_row(dst, src):
    for j in range(src.shape[0]):
        dst[j] += src[j]


@njit(cache=True, error_model="numpy")
def block_weight_grads(dA, dX, hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh, dW_ih, dx, first):
    """One thread's block of steps [t0, t1) x streams [r0, r1): dW_hh += dA^T @ h_{t-1},
    dW_ih += dX^T @ x_in and dx = dX @ W_ih (when x_in / dx are not empty). dA are the gradients
    of the recurrent pre-activations, dX of the input projections (equal except for the GRU)."""
    R = r1 - r0
    n = (t1 - t0) * R
    beta = 0.0 if first else 1.0
    for t in range(t0, t1):
        Hp[(t - t0) * R:(t - t0 + 1) * R] = hs[t, r0:r1]
    gemm(dA, Hp[:n], dW_hh, True, False, beta)
    if x_in.shape[0] > 0:
        for t in range(t0, t1):
            Xg[(t - t0) * R:(t - t0 + 1) * R] = x_in[t, r0:r1]
        gemm(dX, Xg[:n], dW_ih, True, False, beta)
    if dx.shape[0] > 0:
        gemm(dX, W_ih, DX[:n], False, False, 0.0)
        for t in range(t0, t1):
            dx[t, r0:r1] = DX[(t - t0) * R:(t - t0 + 1) * R]
