"""Thread pools: how many cores BLAS and Numba may use, for the duration of one call.

NumPy's OpenBLAS, SciPy's OpenBLAS (which Numba's ``np.dot`` calls inside @njit) and Numba's
own pool are three separate thread pools. Left alone on 2 cores they oversubscribe. charlm's
kernels parallelise by splitting the work (blocks of streams, blocks of rows: see
kernels/parallel.py) across Numba's threads, each calling single-threaded BLAS, so while charlm
trains, evaluates or samples, Numba gets n threads and every BLAS pool one: no BLAS call then
forks, joins or leaves a worker spinning next to the kernels.

Only while: ``with thread_limits(n):`` (which ``Trainer.events``, ``evaluate`` and
``Sampler.stream`` wrap around their work) restores every pool's size on exit, so a notebook's
NumPy products keep their threads after a Trainer has run. Importing charlm changes nothing
process-wide. The limits are applied when a compiled kernel first asks for its thread count
(``kernel_threads``) inside the block, so a short sample that never leaves the NumPy loop loads
neither SciPy nor Numba. The OPENBLAS_* and NUMBA_* environment variables are the user's
business and are never touched here.

Inside the block the kernels' threads also flush subnormal floats to zero (denormals.py:
on a trained model they otherwise slow every step by a fifth); the calling thread's setting is
restored on exit.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from .errors import ConfigError

# When > 0, the number of blocks the model splits each pass into, whatever the thread count.
# Results are the same for any count (tests/test_bench.py pins it to check that); only speed differs.
_chunks = 0
_local = threading.local()  # .scopes: this thread's open thread_limits blocks, innermost last


def check_environment(environ=os.environ) -> None:
    """Refuse, in one line, environment settings that Numba would reject with a traceback from
    deep inside its own import (NUMBA_NUM_THREADS must be a whole number of at least 1)."""
    value = environ.get("NUMBA_NUM_THREADS", "").strip()
    if value and value.lstrip("+-").isdigit() and int(value) < 1:
        raise ConfigError(f"NUMBA_NUM_THREADS={value} is not a thread count (it must be at least 1): "
                          "unset it, or use --threads to choose how many cores charlm uses")


@contextmanager
def thread_limits(n: int | None = None):
    """Within the block, charlm's kernels run on ``n`` Numba threads (0 = all cores; None = as
    the enclosing block, else all cores) and every BLAS pool on one; on exit both are as they
    were. Blocks nest (a training run's samples keep its thread count). Yields the block's scope."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ConfigError(f"threads must be an integer >= 0 (0 = all cores), got {n!r}")
    scopes = _scopes()
    scope = _Scope(scopes[-1].requested if n is None and scopes else n or 0)
    scopes.append(scope)
    try:
        yield scope
    finally:
        scopes.remove(scope)
        scope.restore()


def kernel_threads() -> int:
    """How many blocks the model splits each pass into: the innermost ``thread_limits`` count
    (applying that block's limits now if this is its first kernel), else Numba's current count."""
    scopes = _scopes()
    n = scopes[-1].apply() if scopes else _numba_threads()
    return _chunks or n


class _Scope:
    """One ``thread_limits`` block: what it set, and how to put it back."""

    def __init__(self, n: int):
        self.requested = n
        self.threads = 0        # Numba threads in use once applied; 0 until a kernel asked
        self._undo = []         # restorers, run in reverse order on exit

    def apply(self) -> int:
        if self.threads:
            return self.threads
        from threadpoolctl import threadpool_limits

        from .denormals import flush_here, restore_here

        # first, so that the pools started below inherit it (denormals.py says why)
        old_csr = flush_here()
        self._undo.append(lambda: restore_here(old_csr))

        _load_blas()                    # so that SciPy's pool is limited too
        limiter = threadpool_limits(limits=1, user_api="blas")
        self._undo.append(limiter.restore_original_limits)
        import numba
        from numba.core import config

        previous = _numba_threads()
        self._undo.append(lambda: numba.set_num_threads(previous))
        n = min(self.requested or os.cpu_count() or 1, config.NUMBA_NUM_THREADS)
        numba.set_num_threads(n)
        self.threads = n
        return n

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
        self.threads = 0


def _scopes() -> list:
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    return _local.scopes


def _numba_threads() -> int:
    """Numba's thread count on this thread, starting its pool first if no parallel region has
    run yet: on the workqueue layer unless the user chose one (NUMBA_THREADING_LAYER or
    ``numba.config.THREADING_LAYER``). Under load it matters: an OpenMP team waits at every
    region's barrier for a descheduled thread (a short pass can take a hundred times longer), and
    OpenBLAS warns that it may hang when called inside an OpenMP region; workqueue's idle threads
    sleep. The choice is only passed to the launch: the config value is put back at once."""
    _load_blas()
    import numba
    from numba.core import config

    chosen = config.THREADING_LAYER
    if chosen == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
        config.THREADING_LAYER = "workqueue"
    try:
        return numba.get_num_threads()  # starts the pool once per process, on that layer
    finally:
        config.THREADING_LAYER = chosen


def _load_blas() -> None:
    """Load SciPy's OpenBLAS (so that threadpoolctl sees it) and let Numba's BLAS calls
    (``np.dot`` in @njit, kernels/blas.py) find it: before any kernel that uses BLAS runs."""
    import scipy.linalg  # noqa: F401
    from numba.np.linalg import ensure_blas

    ensure_blas()


def blas_info() -> list[dict]:
    """What threadpoolctl reports for the loaded BLAS libraries (kernel architecture, threads)."""
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    return [d for d in threadpool_info() if d.get("user_api") == "blas"]
