"""BLAS's GEMM called from compiled code on strided row blocks, without copies.

Numba's own ``np.dot`` wants contiguous operands; the layer kernels multiply blocks of rows of
larger arrays (a thread's streams, a block of steps) and accumulate into weight gradients, so they
call the same ?gemm Numba's np.dot uses, with explicit leading dimensions and beta.
"""
import numba
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# SciPy's BLAS (behind numba_xxgemm, which Numba's own np.dot calls too) is imported by
# charlm.runtime.kernel_threads before any kernel here runs, not at import: sampling needs no
# BLAS, and importing SciPy would slow the start of ``charlm sample``.


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Numba's C entry to SciPy's (column-major, Fortran) ?gemm, the one its np.dot uses, called on
    array data pointers with explicit leading dimensions and beta. Resolved by symbol name, so
    functions that use it can be cached. SciPy must be imported first (runtime.kernel_threads)."""
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


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: the intrinsic needs the compiler; a NumPy twin
    def gemm(A, B, C, trans_a, trans_b, beta):  # noqa: F811
        r = (A.T if trans_a else A) @ (B.T if trans_b else B)
        C[...] = r + beta * C if beta else r
