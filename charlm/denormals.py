"""Subnormal floats flushed to zero on the threads that run the kernels (x86's FTZ and DAZ bits).

Why: a trained model makes numbers below float32's smallest normal (1.2e-38) all the time (a
confident softmax's far tails, saturated gates' derivatives, attention weights of distant
positions), and an x86 core takes a slow microcode path for every operation that reads or
writes one. An encoder-decoder's step, measured on the same batches, cost about a fifth more
processor time with the weights of a 15-minute run than with fresh ones; with these bits set the
two cost the same. A value that small changes no result a model reports (it is 1e-38 of the
numbers beside it), and float64 gradient checks never come near float64's own limit (2.2e-308).
TensorFlow flushes them on its threads for the same reason.

``flush_here()`` sets both bits of the calling thread's MXCSR and returns what it was, and
``restore_here(old)`` puts it back. runtime.thread_limits sets them for its block, before it
starts Numba's pool, and a thread inherits its creator's floating-point state (POSIX
``pthread_create``), so the pools charlm starts inside the block flush too; charlm's own block
pool sets them again in each thread's initialiser. Elsewhere than x86-64 both are no-ops.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

FLUSH_BITS = 0x8040    # MXCSR bit 15: flush results to zero (FTZ); bit 6: read inputs as zero (DAZ)
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")


def _csr_call(builder, name, slot):
    pointer = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [pointer]), name)
    builder.call(fn, [builder.bitcast(slot, pointer)])


@intrinsic
def _swap_csr(typingctx, bits, keep):
    """MXCSR = (MXCSR & keep) | bits; returns the value before (the SSE intrinsics read and load it)."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _csr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        old = builder.load(slot)
        builder.store(builder.or_(builder.and_(old, args[1]), args[0]), slot)
        _csr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return old
    return types.uint32(types.uint32, types.uint32), codegen


@njit(cache=True)
def _swap(bits, keep):
    return _swap_csr(bits, keep)


def flush_here() -> int | None:
    """Set FTZ and DAZ on the calling thread; returns its MXCSR before (None where unsupported)."""
    if not SUPPORTED:
        return None
    return int(_swap(np.uint32(FLUSH_BITS), np.uint32(0xFFFFFFFF)))


def restore_here(old: int | None) -> None:
    """Put back the calling thread's FTZ and DAZ bits as ``flush_here`` found them."""
    if old is None or not SUPPORTED:
        return
    _swap(np.uint32(old & FLUSH_BITS), np.uint32(~FLUSH_BITS & 0xFFFFFFFF))
