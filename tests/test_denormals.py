"""Subnormal floats are flushed to zero on every thread the kernels run on, inside thread_limits
only: the calling thread, charlm's block pool and Numba's pool (denormals.py)."""
import numpy as np
import pytest

from charlm.denormals import SUPPORTED
from charlm.runtime import kernel_threads, thread_limits

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="FTZ/DAZ are x86-64's")

TINY = np.array([1e-30, 1e-10], np.float32)   # their product, 1e-40, is below float32's smallest normal


def product() -> float:
    return float((TINY[:1] * TINY[1:])[0])   # computed at run time, on the calling thread


def test_the_calling_thread_flushes_inside_the_block_and_not_after():
    assert product() != 0.0                      # subnormal before
    with thread_limits(1):
        kernel_threads()
        assert product() == 0.0
    assert product() != 0.0                      # restored on exit


def test_charlm_block_threads_flush():
    from numba import njit

    from charlm.kernels.blocks import run_blocks

    @njit(nogil=True)
    def block(k, x, out):
        out[k] = x[0] * x[1]

    out = np.ones(8, np.float32)
    with thread_limits(2):
        kernel_threads()
        run_blocks(block, 8, TINY, out)
    assert not out.any()


POOL_SCRIPT = """
import numpy as np
from numba import njit, prange
from charlm.runtime import kernel_threads, thread_limits

@njit(parallel=True)
def rows(x, out):
    for k in prange(out.size):
        out[k] = x[0] * x[1]

out = np.ones(64, np.float32)
with thread_limits(2):
    kernel_threads()   # Numba's pool starts here, inside the block
    rows(np.array([1e-30, 1e-10], np.float32), out)
print(int(out.any()))
"""


def test_numba_pool_threads_flush():
    """In a fresh process: which test started Numba's pool first must not decide the outcome."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", POOL_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0"
