"""The recurrent GEMM: a register-blocked micro-kernel on weights packed once per call.

Each time step multiplies a thread's few rows (16-64) by W_hh. OpenBLAS repacks W_hh on every call
and its kernels are tuned for large M, so these small-M shapes run at about half its large-matrix
rate. ``matmul_packed`` packs W_hh once per layer and chunk (T steps) into panels of NR columns
and runs an MR x NR register tile: 8 rows x 2 vectors (32 float32 or 16 float64 columns), 16
accumulator registers, one k-loop of broadcast + FMA, written as LLVM IR (the loop vectoriser
does not keep accumulators in registers across k). Column panels are the outer loop so a panel
(K x NR) stays in L1/L2 while every row tile uses it: about twice OpenBLAS's rate on these shapes
(``charlm bench`` measures it; tests/test_kernels.py checks the result against np.dot; the same
idea as oneDNN's packed RNN weights). The vectors are 512-bit: on a
CPU without AVX-512 (NUMBA_CPU_NAME=haswell and its features) LLVM splits each in two, so the
tile wants 32 accumulators in 16 ymm registers and spills them inside the k-loop: still correct
(the tests pass there), but a tile of 256-bit vectors (e.g. 6 rows x 2 vectors) would fit.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .blas import gemm

MR = 8  # rows per register tile


@intrinsic
def _tile(typingctx, K, A, a_off, lda, mr, P, p_off, C, c_off, ldc):
    """C[c_off + i*ldc + j] = sum_k A[a_off + i*lda + k] * P[p_off + k*NR + j] for i < mr (<= MR),
    j < NR = 2 SIMD vectors. Rows i >= mr read row mr - 1 and are not stored. Pointers come from
    the arrays' data plus element offsets."""
    if not (isinstance(C, types.Array) and C.dtype in (types.float32, types.float64)):
        return None
    dt = C.dtype

    def codegen(context, builder, sig, args):
        K_, A_, aoff, lda_, mr_, P_, poff, C_, coff, ldc_ = args
        i64 = ir.IntType(64)
        fty = context.get_value_type(dt)
        W = 16 if dt == types.float32 else 8  # one 512-bit vector
        vty = ir.VectorType(fty, W)
        vptr = vty.as_pointer()

        def base(i, off):
            data = context.make_array(sig.args[i])(context, builder, args[i]).data
            return builder.gep(data, [context.cast(builder, off, sig.args[i + 1], types.intp)])

        def as_i64(i):
            return context.cast(builder, args[i], sig.args[i], types.intp)

        K_, lda_, mr_, ldc_ = as_i64(0), as_i64(3), as_i64(4), as_i64(9)
        a_ptr, p_ptr, c_ptr = base(1, aoff), base(5, poff), base(7, coff)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                             "llvm.fma.v16f32" if W == 16 else "llvm.fma.v8f64")
        one = ir.Constant(i64, 1)
        last = builder.sub(mr_, one)
        rows = []
        for i in range(MR):
            ii = ir.Constant(i64, i)
            r = builder.select(builder.icmp_signed("<", ii, mr_), ii, last)
            rows.append(builder.gep(a_ptr, [builder.mul(r, lda_)]))
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * W)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), W), [0] * W)
        entry = builder.block
        loop = builder.append_basic_block("tile.k")
        done = builder.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", K_, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), entry)
        acc = [[builder.phi(vty) for _ in range(2)] for _ in range(MR)]
        for row in acc:
            for a in row:
                a.add_incoming(zero, entry)
        pk = builder.gep(p_ptr, [builder.mul(k, ir.Constant(i64, 2 * W))])
        b = [builder.load(builder.bitcast(builder.gep(pk, [ir.Constant(i64, v * W)]), vptr), align=4)
             for v in range(2)]
        new = []
        for i in range(MR):
            a = builder.load(builder.gep(rows[i], [k]))
            a = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, ir.Undefined), a,
                                                              ir.Constant(ir.IntType(32), 0)),
                                       ir.Constant(vty, ir.Undefined), splat)
            new.append([builder.call(fma, [a, b[v], acc[i][v]]) for v in range(2)])
        k1 = builder.add(k, one)
        body_end = builder.block
        k.add_incoming(k1, body_end)
        for i in range(MR):
            for v in range(2):
                acc[i][v].add_incoming(new[i][v], body_end)
        builder.cbranch(builder.icmp_signed("<", k1, K_), loop, done)
        builder.position_at_end(done)
        out = [[builder.phi(vty) for _ in range(2)] for _ in range(MR)]  # phis first in the block
        for i in range(MR):
            for v in range(2):
                out[i][v].add_incoming(zero, entry)
                out[i][v].add_incoming(new[i][v], body_end)
        for i in range(MR):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, i), mr_)):
                c_row = builder.gep(c_ptr, [builder.mul(ir.Constant(i64, i), ldc_)])
                for v in range(2):
                    builder.store(out[i][v], builder.bitcast(builder.gep(c_row, [ir.Constant(i64, v * W)]), vptr),
                                  align=4)
        return context.get_dummy_value()

    return types.void(K, A, a_off, lda, mr, P, p_off, C, c_off, ldc), codegen


@njit(cache=True)
def panel_width(dtype_example):
    """NR, the columns of one packed panel: two 512-bit vectors of the array's dtype."""
    return 128 // dtype_example.itemsize


@njit(cache=True)
def pack_panels(B, transposed):
    """Pack the (K, N) right operand of ``matmul_packed`` into (ceil(N / NR), K, NR) panels, zero
    padded. B is given as (K, N), or as its transpose (N, K) when ``transposed`` (W_hh for the
    forward product h @ W_hh^T)."""
    K, N = (B.shape[1], B.shape[0]) if transposed else (B.shape[0], B.shape[1])
    NR = panel_width(B)
    n_panels = (N + NR - 1) // NR
    P = np.zeros((n_panels, K, NR), B.dtype)
    for j in range(n_panels):
        for jj in range(min(NR, N - j * NR)):
            c = j * NR + jj
            if transposed:
                for k in range(K):
                    P[j, k, jj] = B[c, k]
            else:
                for k in range(K):
                    P[j, k, jj] = B[k, c]
    return P


@njit(cache=True)
def matmul_rec(A, P, W, w_transposed, C, tmp):
    """The recurrent product C = A @ op(W): the packed micro-kernel, or BLAS on W itself for fewer
    rows than half a register tile (batch-1 evaluation), where the tile would mostly compute
    clamped duplicate rows."""
    if A.shape[0] * 2 < MR:
        gemm(A, W, C, False, w_transposed, 0.0)
    else:
        matmul_packed(A, P, C, tmp)


@njit(cache=True)
def matmul_packed(A, P, C, tmp):
    """C = A @ B for B packed by ``pack_panels``. A (M, K) and C (M, N) with unit column stride
    (rows may be strided); tmp (MR, NR) scratch for the last, partial panel."""
    M, K = A.shape
    N = C.shape[1]
    n_panels, _, NR = P.shape
    sz = A.itemsize
    lda, ldc = A.strides[0] // sz, C.strides[0] // sz
    for j in range(n_panels):  # a panel stays in cache while every row tile uses it
        full = (j + 1) * NR <= N
        for i0 in range(0, M, MR):
            mr = min(MR, M - i0)
            if full:
                _tile(K, A, i0 * lda, lda, mr, P, j * K * NR, C, i0 * ldc + j * NR, ldc)
            else:
                _tile(K, A, i0 * lda, lda, mr, P, j * K * NR, tmp, 0, NR)
                for i in range(mr):
                    for jj in range(N - j * NR):
                        C[i0 + i, j * NR + jj] = tmp[i, jj]


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: the intrinsic needs the compiler; NumPy twins
    def matmul_packed(A, P, C, tmp):  # noqa: F811
        K, N = P.shape[1], C.shape[1]
        C[...] = A @ P.transpose(1, 0, 2).reshape(K, -1)[:, :N]

    def matmul_rec(A, P, W, w_transposed, C, tmp):  # noqa: F811
        C[...] = A @ (W.T if w_transposed else W)
