"""A barrier for the threads of one parallel region (``prange`` iterations that run at once).

The two-thread generation loop (kernels/generate.py) meets after every layer and after the
decoder, a few hundred nanoseconds of work apart, so a barrier through the OS would cost more than
the work. This one spins on an atomic counter (a few hundred ns between cores) and yields the CPU
after a while, so a descheduled partner on a busy machine costs a time slice, not a spinning core.
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SPINS = 4000  # barrier polls before each sched_yield


@intrinsic
def _atomic_add(typingctx, arr, i, v):
    """arr[i] += v atomically (sequentially consistent); returns the old value. arr int64."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], sig.args[2], types.int64), "seq_cst")
    return types.int64(arr, i, v), codegen


@intrinsic
def _atomic_load(typingctx, arr, i):
    """arr[i], read atomically (sequentially consistent). arr int64."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.load_atomic(ptr, "seq_cst", 8)
    return types.int64(arr, i), codegen


@intrinsic
def _sched_yield(typingctx):
    """libc's sched_yield(): give the core to another runnable thread."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(cache=True)
def barrier(sync, nthreads):
    """Wait until all ``nthreads`` threads have arrived. sync (2,) int64 zeros, shared by the
    threads: [arrived, generation]."""
    gen = _atomic_load(sync, 1)
    if _atomic_add(sync, 0, 1) == nthreads - 1:  # the last one in resets and releases the others
        _atomic_add(sync, 0, -nthreads)
        _atomic_add(sync, 1, 1)
        return
    spins = 0
    while _atomic_load(sync, 1) == gen:
        spins += 1
        if spins >= SPINS:
            _sched_yield()
            spins = 0
