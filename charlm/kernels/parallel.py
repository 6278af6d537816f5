"""Matrix products split across Numba threads, each thread calling single-threaded BLAS.

Why not let OpenBLAS thread its own GEMMs? Because a training step is hundreds of small GEMMs
(one per time step and layer, 32-64 rows), and every multithreaded BLAS call is a fork/join
whose idle worker spins: on 2 cores shared with anything else, one descheduled worker stalls
the step (measured here under load: 64-row GEMM 60 GFLOP/s on one thread, 2 GFLOP/s on two).
Instead charlm splits the *work*: the rows of the batch are independent in the recurrence, so
each thread runs the whole recurrence over its block of streams (no synchronisation per step),
and the large GEMMs are split by rows (``matmul_rows``) or by the summed dimension with a fixed-
order reduction (``matmul_tn``). ``charlm.runtime.thread_limits`` therefore limits the BLAS pools
to one thread and gives Numba the cores, for the duration of a training, evaluation or sampling call.

``nchunks`` is the number of blocks (normally the Numba thread count); results depend on it only
through the order of floating-point sums (``matmul_tn``'s reduction), never on scheduling.
Every function here has a serial twin in NumPy; tests/test_bench.py checks they agree.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# SciPy's BLAS (behind numba_xxgemm, which Numba's own np.dot calls too) is imported by
# charlm.runtime.kernel_threads before any kernel here runs, not at import: sampling needs no
# BLAS, and importing SciPy would cost ``charlm sample`` ~0.2 s.


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


# -- the recurrent GEMM: a register-blocked micro-kernel on weights packed once per chunk ------------
#
# Each time step multiplies a thread's few rows (16-64) by W_hh. OpenBLAS repacks W_hh on every call
# and its kernels are tuned for large M: 35-57 GFLOP/s here for these shapes against 80-105 for big
# ones. ``matmul_packed`` packs W_hh once per layer and chunk (T steps) into panels of NR columns
# and runs an MR x NR register tile: 8 rows x 2 vectors (32 float32 or 16 float64 columns), 16
# accumulator registers, one k-loop of broadcast + FMA, written as LLVM IR (the loop vectoriser
# does not keep accumulators in registers across k). Column panels are the outer loop so a panel
# (K x NR) stays in L1/L2 while every row tile uses it. Measured single-threaded here: 113-131
# GFLOP/s on (32, 256..2048) @ (256..2048, 512..2048), OpenBLAS 50-57 (tests/test_kernels.py checks
# it against np.dot; the same idea as oneDNN's packed RNN weights). The vectors are 512-bit: on a
# CPU without AVX-512 (NUMBA_CPU_NAME=haswell and its features) LLVM splits each in two, so the
# tile wants 32 accumulators in 16 ymm registers and spills them inside the k-loop: still correct
# (the tests pass there), but a tile of 256-bit vectors (e.g. 6 rows x 2 vectors) would fit.

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


def block_steps(rows: int, target: int = 512) -> int:
    """Time steps per block so that a thread's block holds about ``target`` rows (see the layer
    kernels, layer.py): enough rows for an efficient GEMM, small enough to stay out of main memory."""
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


# -- pieces of the layer kernels (layer.py) ---------------------------------------------------------


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
def block_weight_grads(dA, dX, hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh, dW_ih, P_ih, tmp, dx, first):
    """One thread's block of steps [t0, t1) x streams [r0, r1): dW_hh += dA^T @ h_{t-1},
    dW_ih += dX^T @ x_in and dx = dX @ W_ih (when x_in / dx are not empty; P_ih is W_ih packed by
    pack_panels). dA are the gradients of the recurrent pre-activations, dX of the input
    projections (equal except for the GRU). The two weight-gradient GEMMs stay with BLAS: packing
    their operands per block costs more than the micro-kernel saves."""
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
        matmul_packed(dX, P_ih, DX[:n], tmp)
        for t in range(t0, t1):
            dx[t, r0:r1] = DX[(t - t0) * R:(t - t0 + 1) * R]


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: the intrinsics need the compiler; NumPy twins
    def gemm(A, B, C, trans_a, trans_b, beta):  # noqa: F811
        r = (A.T if trans_a else A) @ (B.T if trans_b else B)
        C[...] = r + beta * C if beta else r

    def matmul_packed(A, P, C, tmp):  # noqa: F811
        K, N = P.shape[1], C.shape[1]
        C[...] = A @ P.transpose(1, 0, 2).reshape(K, -1)[:, :N]

    def matmul_rec(A, P, W, w_transposed, C, tmp):  # noqa: F811
        C[...] = A @ (W.T if w_transposed else W)
