"""Compiling some of a run's kernels in a helper process, on the other core, into Numba's cache.

Why: on an empty cache a first run spends most of its time compiling, one kernel after another on
one core (Numba's compiler holds a global lock, so threads of one process cannot compile side by
side). The kernels of a training step that the forward pass and the loss do not need (the
layers' backward block, the decoder's gradient blocks) are independent of those they do, so a second process compiles
them while this one compiles the forward's, and this process then loads them from the cache the
moment it first needs them instead of compiling them again.

How: ``start(jobs)`` starts ``python -m charlm.kernels.compile_aside`` (a fresh interpreter, as a
spawned process would be: a fork would copy Numba's threads) on the cache directory this process
uses, unless every job's kernel is in the cache already. The helper compiles each job's kernel
for the exact argument types this process will call it with (``call_types.signature``) and writes one line
per kernel it finished. ``blocks.run_blocks`` waits, before a kernel's first call, for the
helper's line about it, then calls it as usual: Numba finds it in its cache.

Safety:
- The helper reads and writes only its jobs' kernels in the cache, never their callees, which
  this process may be compiling at the same time: Numba's cache index is read, extended and
  rewritten without a lock (and written before the code it names), so two processes adding
  different entries of one function at once could pair one signature's entry with the other's
  code. This process never compiles a job's kernel while the helper may (it waits first), and
  loads it only after the helper has written it.
- Anything that goes wrong with the helper (it cannot start, dies, is killed, takes longer than
  ``WAIT_S``, compiled a signature other than the one needed) costs time only: this process then
  compiles the kernel itself, exactly as without a helper, so the results cannot differ.
- No orphans: the helper is in this process's process group (Ctrl-C reaches both), stops when
  its parent is gone, and is ended and reaped when this process exits.

The cost: the helper's own start and the callees both processes compile add CPU time, so the
split pays where the second core is idle (a first run on a laptop) and not on a machine whose
cores are busy; ``CHARLM_COMPILE_ASIDE=0`` turns it off. Threads would not do: Numba's compiler
holds one lock per process.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time

from . import blocks

WAIT_S = 300.0   # at most this long for one kernel: past it the helper is stopped, this process compiles
OFF_ENV = "CHARLM_COMPILE_ASIDE"   # "0": no helper process (everything compiles in this one)
_COMMAND = [sys.executable, "-m", __name__]   # the helper's command line, its jobs appended as JSON


def step_jobs(cell, dtype) -> list:
    """The jobs for a training run's warm-up (a step, then an evaluation), in the order it needs
    them: the decoder's backward blocks, the backward block of ``cell`` (a row of the cell table;
    none for a cell that feeds its output back, whose kernels are its own) and the reduction of
    the embedding table's gradient. Why these: the run needs none of them before the loss, so it
    compiles the forward's kernels and the loss's meanwhile, and the two processes compile about
    as much each and share few callees (which both compile)."""
    import numpy as np

    name = np.dtype(dtype).name
    backward = [] if cell.feeds_output else [["layer_backward", name, cell.id]]
    return [["parallel", name, "_tn_block"], ["parallel", name, "_add_partials"],
            ["parallel", name, "_rows_block"], *backward, ["parallel", name, "_sum_block"]]


def _job(spec):
    """(compiled function, signature) of a job: [kind, dtype, argument]; kinds "layer_backward"
    (a cell's id), "loss" and "parallel" (a block's name in that module)."""
    import numpy as np

    kind, dtype, arg = spec
    dtype = np.dtype(dtype)
    if kind == "layer_backward":
        from .layer import backward_block_signature

        return backward_block_signature(arg, dtype)
    if kind in ("loss", "parallel"):
        from importlib import import_module

        return import_module(f"{__package__}.{kind}").block_signature(arg, dtype)
    raise ValueError(f"no compile job {kind!r}")


def _cached(kernel, sig) -> bool:
    """Whether Numba's cache holds ``kernel`` for ``sig`` (so the helper has nothing to do).
    Numba's internals: if they are not as expected, say yes (no helper: compile here, as always)."""
    try:
        cache = kernel._cache
        key = cache._index_key(sig, kernel.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - any surprise means: do as without a helper
        return True


class _Helper:
    """The helper process and the lines it has written: ``wait(i)`` until job i is done or the
    helper has ended (or ``WAIT_S`` passed, then it is stopped)."""

    def __init__(self, jobs, env):
        self.done, self.ended = set(), threading.Event()
        self.changed = threading.Condition()
        self.process = subprocess.Popen([*_COMMAND, json.dumps(jobs)], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        threading.Thread(target=self._read, name="charlm-compile-aside", daemon=True).start()
        atexit.register(self.stop)

    def _read(self):
        for line in self.process.stdout:
            if line.startswith("done "):
                with self.changed:
                    self.done.add(int(line.split()[1]))
                    self.changed.notify_all()
        self.process.wait()   # reaped here: its peak RSS and CPU time count as this process's children's
        with self.changed:
            self.ended.set()
            self.changed.notify_all()

    def wait(self, i):
        deadline = time.monotonic() + WAIT_S
        with self.changed:
            while not (i in self.done or self.ended.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # in slices: a signal that another thread received is handled (Ctrl-C: the run
                # stops) only when this thread runs Python again
                self.changed.wait(min(left, 0.2))
            finished = i in self.done or self.ended.is_set()
        if not finished:
            self.stop()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start(jobs) -> _Helper | None:
    """Compile the jobs' kernels in a helper process (see the module docstring); None when there is
    nothing to compile (all cached, or Numba not compiling) or the helper could not start."""
    import numba

    if numba.config.DISABLE_JIT or os.environ.get(OFF_ENV) == "0":
        return None
    try:
        kernels = [(spec, *_job(spec)) for spec in jobs]
    except Exception:  # noqa: BLE001 - a job this process cannot describe is compiled here
        return None
    todo = [(spec, kernel) for spec, kernel, sig in kernels if not _cached(kernel, sig)]
    if not todo:
        return None
    # the helper imports this same charlm, wherever it was found
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, OPENBLAS_NUM_THREADS="1")
    if numba.config.CACHE_DIR:  # the directory this process uses, however it was set
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    try:
        helper = _Helper([spec for spec, _ in todo], env)
    except OSError:
        return None
    for i, (_, kernel) in enumerate(todo):
        blocks.wait_before_first_call(kernel, lambda i=i: helper.wait(i))
    return helper


def _main(jobs) -> None:
    """In the helper: compile each job's kernel, writing only those to the cache, one line each."""
    parent = os.getppid()

    def watch():  # the parent is gone (killed): stop at once, nobody will read the cache
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    from numba.core import caching

    kernels = [_job(spec) for spec in jobs]
    targets = {kernel.py_func for kernel, _ in kernels}
    load, save = caching.Cache.load_overload, caching.Cache.save_overload

    def load_targets_only(self, sig, target_context):
        return load(self, sig, target_context) if self._py_func in targets else None

    def save_targets_only(self, sig, data):
        if self._py_func in targets:
            save(self, sig, data)

    caching.Cache.load_overload, caching.Cache.save_overload = load_targets_only, save_targets_only
    for i, (kernel, sig) in enumerate(kernels):
        kernel.compile(sig)
        print(f"done {i}", flush=True)


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
