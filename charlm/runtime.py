"""Thread pools: one place that decides how many cores BLAS and Numba may use.

NumPy's OpenBLAS, SciPy's OpenBLAS (which Numba's ``np.dot`` calls inside @njit) and Numba's
own pool are three separate thread pools. Left alone on 2 cores they oversubscribe, so they are
limited together. The OPENBLAS_* environment variables are the user's business and are never
touched here.
"""
from __future__ import annotations

import os

_limiter = None


def set_threads(n: int = 0) -> int:
    """Limit every BLAS pool and Numba to ``n`` threads (0 = all cores). Returns the count used."""
    global _limiter
    from threadpoolctl import threadpool_limits

    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS so that threadpoolctl can see it)

    n = n or os.cpu_count() or 1
    _limiter = threadpool_limits(limits=n, user_api="blas")
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a hard dependency
        pass
    return n


def blas_info() -> list[dict]:
    """What threadpoolctl reports for the loaded BLAS libraries (kernel architecture, threads)."""
    from threadpoolctl import threadpool_info

    import scipy.linalg  # noqa: F401

    return [d for d in threadpool_info() if d.get("user_api") == "blas"]
