"""The recurrent GEMM: a register-blocked micro-kernel on weights packed once per call, shaped for the CPU.

Each time step multiplies a thread's few rows (16-64) by W_hh. OpenBLAS repacks W_hh on every call
and its kernels are tuned for large M, so these small-M shapes run at about half its large-matrix
rate. ``matmul_packed`` packs W_hh once per layer and chunk (T steps) into panels of NR columns
and runs an MR x NR register tile: MR rows x a few SIMD vectors of accumulators, one k-loop of
broadcast + FMA, written as LLVM IR (the loop vectoriser does not keep accumulators in registers
across k). Column panels are the outer loop so a panel (K x NR) stays in L1/L2 while every row
tile uses it (the same idea as oneDNN's packed RNN weights; ``charlm bench`` measures it,
tests/test_tile.py checks every shape against np.dot).

The tile's shape follows the instruction set Numba compiles for (``target_isa``: the CPU name and
features Numba gives LLVM, NUMBA_CPU_NAME / NUMBA_CPU_FEATURES included, asked of LLVM itself):
the accumulators must fit the vector registers, or the k-loop spills them.
- 512-bit vectors (AVX-512, 32 registers): 8 rows x 2 vectors (32 float32 columns), 16 accumulators;
- 256-bit vectors and FMA (AVX2, 16 registers): 4 rows x 3 vectors (24 float32 columns), 12
  accumulators + 3 panel vectors + 1 broadcast: measured ahead of 6 x 2, 5 x 2, 4 x 2 and 3 x 4
  on the recurrent shapes (rows a multiple of 4, as a thread's block of streams usually is);
- otherwise (AVX without FMA, SSE, other architectures): 4 rows x 2 vectors of up to 256 bits,
  multiplying and adding (llvm.fmuladd: fused only where the target can) instead of calling fma().
Numba's cache keys compiled code by that same CPU name and features, so a cache never mixes tiles.
``build(tile)`` compiles this module's kernels for another tile (uncached): the tests run every
tile on any x86 host that way.
"""
from types import FunctionType, SimpleNamespace
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .blas import gemm


class Tile(NamedTuple):
    name: str           # the instruction set it is shaped for
    vector_bytes: int   # one SIMD vector
    rows: int           # MR
    vectors: int        # SIMD vectors per row: NR = vectors * vector_bytes / itemsize columns
    fma: bool           # llvm.fma (one instruction on this target), else llvm.fmuladd


def choose(vector_bytes: int, fma: bool) -> Tile:
    """The tile for a target whose widest vector register holds ``vector_bytes``."""
    if vector_bytes >= 64:
        return Tile("avx512", 64, 8, 2, fma)
    if vector_bytes == 32 and fma:
        return Tile("avx2", 32, 4, 3, fma)
    # without FMA each product needs a register of its own besides the accumulators: 8 of them
    return Tile("avx" if vector_bytes == 32 else "plain", min(vector_bytes, 32), 4, 2, fma)


def target_isa() -> tuple[int, bool]:
    """(bytes of the widest vector LLVM keeps in one register, whether it has an FMA instruction)
    for the CPU and features Numba compiles for, found by compiling a 512-bit and a 256-bit FMA."""
    import llvmlite.binding as ll
    from numba.core import codegen, config

    codegen.initialize_llvm()
    triple = ll.get_process_triple()
    if not triple.startswith(("x86_64", "i386", "i686")):
        return 16, False  # registers read below are x86's; fmuladd still fuses where the target can
    name = config.CPU_NAME or ll.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    tm = ll.Target.from_triple(triple).create_target_machine(cpu=name, features=features, opt=2)
    asm = {lanes: tm.emit_assembly(ll.parse_assembly(_fma_probe(lanes))) for lanes in (16, 8)}
    width = 64 if "zmm" in asm[16] else 32 if "ymm" in asm[8] else 16
    return width, "vfmadd" in asm[8]


def _fma_probe(lanes: int) -> str:
    """A module with one function: llvm.fma on <lanes x float> arguments."""
    m = ir.Module("fma_probe")
    vty = ir.VectorType(ir.FloatType(), lanes)
    fnty = ir.FunctionType(vty, [vty] * 3)
    fn = ir.Function(m, fnty, "probe")
    b = ir.IRBuilder(fn.append_basic_block())
    b.ret(b.call(ir.Function(m, fnty, f"llvm.fma.v{lanes}f32"), fn.args))
    return str(m)


def make_tile(tile: Tile):
    """The micro-kernel intrinsic for ``tile``: _tile(K, A, a_off, lda, mr, P, p_off, C, c_off, ldc)
    sets C[c_off + i*ldc + j] = sum_k A[a_off + i*lda + k] * P[p_off + k*NR + j] for i < mr
    (<= MR), j < NR. Rows i >= mr read row mr - 1 and are not stored. Pointers come from the
    arrays' data plus element offsets."""
    MR, NV = tile.rows, tile.vectors

    @intrinsic
    def _tile(typingctx, K, A, a_off, lda, mr, P, p_off, C, c_off, ldc):
        if not (isinstance(C, types.Array) and C.dtype in (types.float32, types.float64)):
            return None
        dt = C.dtype

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)
            fty = context.get_value_type(dt)
            W = tile.vector_bytes // (4 if dt == types.float32 else 8)  # lanes of one vector
            vty = ir.VectorType(fty, W)
            vptr = vty.as_pointer()

            def base(i, off):
                data = context.make_array(sig.args[i])(context, builder, args[i]).data
                return builder.gep(data, [context.cast(builder, off, sig.args[i + 1], types.intp)])

            def as_i64(i):
                return context.cast(builder, args[i], sig.args[i], types.intp)

            K_, lda_, mr_, ldc_ = as_i64(0), as_i64(3), as_i64(4), as_i64(9)
            a_ptr, p_ptr, c_ptr = base(1, args[2]), base(5, args[6]), base(7, args[8])
            op = "fma" if tile.fma else "fmuladd"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.{op}.v{W}{'f32' if dt == types.float32 else 'f64'}")
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
            acc = [[builder.phi(vty) for _ in range(NV)] for _ in range(MR)]
            for row in acc:
                for a in row:
                    a.add_incoming(zero, entry)
            pk = builder.gep(p_ptr, [builder.mul(k, ir.Constant(i64, NV * W))])
            b = [builder.load(builder.bitcast(builder.gep(pk, [ir.Constant(i64, v * W)]), vptr), align=4)
                 for v in range(NV)]
            new = []
            for i in range(MR):
                a = builder.load(builder.gep(rows[i], [k]))
                a = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, ir.Undefined), a,
                                                                  ir.Constant(ir.IntType(32), 0)),
                                           ir.Constant(vty, ir.Undefined), splat)
                new.append([builder.call(fma, [a, b[v], acc[i][v]]) for v in range(NV)])
            k1 = builder.add(k, one)
            body_end = builder.block
            k.add_incoming(k1, body_end)
            for i in range(MR):
                for v in range(NV):
                    acc[i][v].add_incoming(new[i][v], body_end)
            builder.cbranch(builder.icmp_signed("<", k1, K_), loop, done)
            builder.position_at_end(done)
            out = [[builder.phi(vty) for _ in range(NV)] for _ in range(MR)]  # phis first in the block
            for i in range(MR):
                for v in range(NV):
                    out[i][v].add_incoming(zero, entry)
                    out[i][v].add_incoming(new[i][v], body_end)
            for i in range(MR):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, i), mr_)):
                    c_row = builder.gep(c_ptr, [builder.mul(ir.Constant(i64, i), ldc_)])
                    for v in range(NV):
                        builder.store(out[i][v], builder.bitcast(builder.gep(c_row, [ir.Constant(i64, v * W)]),
                                                                 vptr), align=4)
            return context.get_dummy_value()

        return types.void(K, A, a_off, lda, mr, P, p_off, C, c_off, ldc), codegen

    return _tile


TILE = choose(*target_isa())
MR = TILE.rows                                # rows per register tile
PANEL_BYTES = TILE.vector_bytes * TILE.vectors  # bytes of one row of a packed panel
_tile = make_tile(TILE)


@njit(cache=True)
def panel_width(dtype_example):
    """NR, the columns of one packed panel: the tile's vectors per row, in the array's dtype."""
    return PANEL_BYTES // dtype_example.itemsize


@njit(cache=True)
def pack_panels(B, transposed):
    """Pack the (K, N) right operand of ``matmul_packed`` into (ceil(N / NR), K, NR) panels, zero
    padded. B is given as (K, N), or as its transpose (N, K) when ``transposed`` (W_hh for the
    forward product h @ W_hh^T)."""
    P = np.empty(panel_shape(B, transposed), B.dtype)
    pack_panels_into(B, transposed, P)
    return P


@njit(cache=True)
def panel_shape(B, transposed):
    """(ceil(N / NR), K, NR): the shape of B packed by ``pack_panels`` (B as it takes it)."""
    K, N = (B.shape[1], B.shape[0]) if transposed else (B.shape[0], B.shape[1])
    NR = panel_width(B)
    return (N + NR - 1) // NR, K, NR


@njit(cache=True, nogil=True)
def pack_panels_into(B, transposed, P):
    """``pack_panels`` into P, allocated by the caller with its shape (NR read from it)."""
    pack_panel_range(B, transposed, P, 0, P.shape[0])


@njit(cache=True, nogil=True)
def pack_panel_range(B, transposed, P, j0, j1):
    """Panels j0 .. j1-1 of ``pack_panels_into`` (threads packing one weight share it out this way)."""
    _, K, NR = P.shape
    N = B.shape[0] if transposed else B.shape[1]
    # a panel row at a time, written contiguously: B's row (or NR rows' k-th elements, whose cache
    # lines serve the next k too) is read in order; a column at a time cost several times as much
    for j in range(j0, j1):
        c0, width = j * NR, min(NR, N - j * NR)
        if width < NR:
            P[j] = 0
        if transposed:
            for k in range(K):
                for jj in range(width):
                    P[j, k, jj] = B[c0 + jj, k]
        else:
            for k in range(K):
                for jj in range(width):
                    P[j, k, jj] = B[k, c0 + jj]


@njit(cache=True, nogil=True)
def pack_block(d, W, transposed, P):
    """Block d of packing a stack of weights (run_blocks): P[d] = pack_panels(W[d])."""
    pack_panels_into(W[d], transposed, P[d])


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


KERNELS = ("panel_width", "panel_shape", "pack_panels", "matmul_rec", "matmul_packed")


def build(tile: Tile) -> SimpleNamespace:
    """This module's kernels (KERNELS) and MR for ``tile``, compiled on first call and never
    cached: the same functions, their globals pointing at the other tile."""
    ns = dict(globals(), TILE=tile, MR=tile.rows, PANEL_BYTES=tile.vector_bytes * tile.vectors,
              _tile=make_tile(tile))
    for name in KERNELS:
        f = getattr(globals()[name], "py_func", globals()[name])
        ns[name] = njit(FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__))
    return SimpleNamespace(tile=tile, MR=tile.rows, **{name: ns[name] for name in KERNELS})


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: the intrinsic needs the compiler; NumPy twins
    def matmul_packed(A, P, C, tmp):  # noqa: F811
        K, N = P.shape[1], C.shape[1]
        C[...] = A @ P.transpose(1, 0, 2).reshape(K, -1)[:, :N]

    def matmul_rec(A, P, W, w_transposed, C, tmp):  # noqa: F811
        C[...] = A @ (W.T if w_transposed else W)
