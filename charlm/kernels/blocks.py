"""Running a kernel's independent blocks side by side: compiled serial functions on Python threads.

The parallel kernels split their work into blocks (a direction's block of streams, a block of rows:
parallel.py says why) that share nothing but read-only inputs, so they need no parallel loop of
Numba's: each block is a serial ``@njit(nogil=True)`` function, and ``run_blocks`` calls it once per
block from Numba's thread count of Python threads, the caller being one of them. Why not ``prange``:
a parallel function costs several times its body's compile time (Numba's parallel passes, then the
body compiled as a separate function and the whole of it optimised again in the caller), and
those compilations were most of a first run on an empty cache; a thread's start costs tens of
microseconds per call, against milliseconds of work in each block.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ..denormals import flush_here

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()
_first_call: dict = {}  # kernel -> what to wait for before its first call (compile_aside.py)
_here = threading.local()  # .only: run_blocks keeps every block on the calling thread (on_this_thread)
# a forked child has none of its parent's threads: it starts pools of its own
os.register_at_fork(after_in_child=_pools.clear)


def run_blocks(kernel, n: int, *args) -> None:
    """``kernel(k, *args)`` for k = 0 .. n-1, on up to Numba's thread count of threads at once (the
    calling thread one of them); blocks are handed out in order as threads come free. The first
    exception a block raised is raised here after every thread has stopped."""
    if _first_call:
        wait = _first_call.get(kernel)
        if wait is not None:
            wait()  # a helper process compiles it into the cache: once it has, the call below loads it
            _first_call.pop(kernel, None)
    workers = min(n, threads_at_once())
    if workers <= 1:
        for k in range(n):
            kernel(k, *args)
        return
    todo = iter(range(n))  # one iterator shared by the threads: next() on it is atomic under the GIL

    def work():
        for k in todo:
            kernel(k, *args)

    helpers = [_pool(workers - 1).submit(work) for _ in range(workers - 1)]
    try:
        work()
    finally:
        for done in helpers:
            done.result()


def threads_at_once() -> int:
    """How many blocks ``run_blocks`` runs at once when called from this thread: Numba's thread
    count, or 1 within ``on_this_thread``."""
    import numba

    return 1 if getattr(_here, "only", False) else numba.get_num_threads()


def wait_before_first_call(kernel, wait) -> None:
    """``run_blocks(kernel, ...)`` calls ``wait()`` before it first runs ``kernel``."""
    _first_call[kernel] = wait


@contextmanager
def on_this_thread():
    """Within the block, ``run_blocks`` runs every block on the calling thread, for a caller that
    is itself one of several Python threads sharing the cores (an ensemble's members side by side,
    seqtask/ensemble.py). Per thread: other threads' calls are not affected."""
    before = getattr(_here, "only", False)
    _here.only = True
    try:
        yield
    finally:
        _here.only = before


def _pool(size: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(size)
        if pool is None:
            pool = _pools[size] = ThreadPoolExecutor(size, thread_name_prefix="charlm-block", initializer=flush_here)
        return pool
