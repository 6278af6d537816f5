"""Where a layer kernel's time goes: the phase marks its blocks call, a no-op unless profiling.

The layer blocks (layer.py) call ``stamp = mark(kk, phase, stamp)`` after each phase of their
work. The kernels a run uses bind ``mark`` to ``no_mark``, inlined into nothing; a profiler
(tools/profile_step.py) binds it to ``clocked_mark(buf)``'s function, which adds the thread's CPU
time since ``stamp`` to ``buf[kk, phase]`` (int64 nanoseconds; phase < 0 only starts the clock).
Thread CPU time, not wall time: on a machine shared with other work a descheduled thread's wait
is not charged to the phase it interrupted, so the phases' shares hold under load.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# The phases of a layer kernel's block: buf's columns.
FWD_PROJ, FWD_REC, FWD_CELL, FWD_OTHER = 0, 1, 2, 3
BWD_CELL, BWD_REC, BWD_WGRAD, BWD_DX, BWD_OTHER = 4, 5, 6, 7, 8
PHASES = ("fwd input projection", "fwd recurrent product", "fwd pointwise", "fwd block other",
          "bwd pointwise", "bwd recurrent product", "bwd weight-gradient GEMMs", "bwd input gradient",
          "bwd block other")
_CLOCK_THREAD_CPUTIME_ID = 3  # Linux


@njit(inline="always")
def no_mark(kk, phase, stamp):
    return 0


@intrinsic
def thread_cpu_ns(typingctx):
    """The calling thread's CPU time in nanoseconds (clock_gettime, CLOCK_THREAD_CPUTIME_ID)."""
    def codegen(context, builder, sig, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        ts_t = ir.LiteralStructType([i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, ts_t.as_pointer()]),
                                            "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        builder.call(fn, [ir.Constant(i32, _CLOCK_THREAD_CPUTIME_ID), ts])
        s = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        ns = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(s, ir.Constant(i64, 1_000_000_000)), ns)

    return types.int64(), codegen


@intrinsic
def _add_at(typingctx, address, index, value):
    """((int64 *) address)[index] += value: a buffer known to the compiled code by its address only,
    so a profiling kernel needs no argument of its own for it."""
    def codegen(context, builder, sig, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        slot = builder.gep(ptr, [args[1]])
        builder.store(builder.add(builder.load(slot), args[2]), slot)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


def clocked_mark(buf: np.ndarray):
    """A ``mark`` that accumulates into ``buf`` (rows >= blocks, len(PHASES) columns, int64,
    C-contiguous, kept alive by the caller). Compiled uncached: its code holds buf's address."""
    if buf.dtype != np.int64 or not buf.flags.c_contiguous or buf.shape[1] != len(PHASES):
        raise ValueError("clocked_mark: buf must be C-contiguous int64 with one column per phase")
    address, width = buf.ctypes.data, buf.shape[1]

    @njit
    def mark(kk, phase, stamp):
        now = thread_cpu_ns()
        if phase >= 0:
            _add_at(address, kk * width + phase, now - stamp)
        return now

    return mark
