"""Thread pools: one place that decides how many cores BLAS and Numba may use.

NumPy's OpenBLAS, SciPy's OpenBLAS (which Numba's ``np.dot`` calls inside @njit) and Numba's
own pool are three separate thread pools. Left alone on 2 cores they oversubscribe. charlm's
kernels parallelise by splitting the work (blocks of streams, blocks of rows: see
kernels/parallel.py) across Numba's threads, each calling single-threaded BLAS, so
``set_threads(n)`` gives Numba n threads and limits every BLAS pool to one thread: no BLAS call
then forks, joins or leaves a worker spinning next to the kernels. The OPENBLAS_* environment
variables are the user's business and are never touched here.
"""
from __future__ import annotations

import os

_limiter = None
_chunks = 0   # blocks the model splits its work into; 0 until set_threads is called


def set_threads(n: int = 0) -> int:
    """Use ``n`` threads (0 = all cores) for charlm's kernels; BLAS pools run single-threaded
    inside them. Returns the count used."""
    global _limiter, _chunks
    from threadpoolctl import threadpool_limits

    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS so that threadpoolctl can see it)
    from numba.np.linalg import ensure_blas

    ensure_blas()  # and lets Numba's BLAS calls (np.dot, kernels/parallel.py) find it: before any kernel

    n = n or os.cpu_count() or 1
    _limiter = threadpool_limits(limits=1, user_api="blas")
    import numba
    from numba.core import config

    prefer_workqueue()
    n = min(n, config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    _chunks = n
    return n


def kernel_threads() -> int:
    """How many blocks the model splits each pass into: the ``set_threads`` count (called with
    all cores on first use if nobody has called it)."""
    return _chunks or set_threads(0)


def prefer_workqueue() -> None:
    """Choose Numba's workqueue threading layer unless the user chose one or a parallel region
    already ran. Under load it matters: an OpenMP team waits at every region's barrier for a
    descheduled thread (measured here: a 0.1 ms pass took 16 ms), and OpenBLAS warns that it may
    hang when called inside an OpenMP region. workqueue's idle threads sleep."""
    from numba.core import config

    if config.THREADING_LAYER == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
        config.THREADING_LAYER = "workqueue"


def blas_info() -> list[dict]:
    """What threadpoolctl reports for the loaded BLAS libraries (kernel architecture, threads)."""
    from threadpoolctl import threadpool_info

    import scipy.linalg  # noqa: F401

    return [d for d in threadpool_info() if d.get("user_api") == "blas"]
