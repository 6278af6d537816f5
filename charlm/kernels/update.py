"""The optimiser's passes over the flat parameter buffer, fused (optim.py calls them).

NumPy's Adam is eight passes over four arrays with temporaries of the full size; at 3.3M
parameters (2x512 LSTM) each temporary is a fresh 13 MB mapping, page-faulted in every step,
and the float64 norm's mixed-dtype dot product does not reach BLAS; these fused kernels are more
than an order of magnitude faster per step.

A pass over a few MB is memory-bound, and one core does not draw all the memory bandwidth a
second one adds: at 1.9M parameters (the encoder-decoder's defaults) Adam's pass took 1.05 ms on
one thread and 0.53 on two, the sum of squares 0.30 and 0.15 (quiet, two cores). So buffers of
``SPLIT_MIN`` elements or more are cut into blocks run side by side (blocks.py, which keeps them
on the calling thread inside an ensemble's member threads). The sum of squares is always cut
into ``SUM_BLOCKS`` blocks whatever the thread count, and the blocks' sums added in order, so the
norm is the same number on one thread or many.
"""
import numpy as np
from numba import njit

from .blocks import run_blocks, threads_at_once
from .parallel import chunk

SPLIT_MIN = 1 << 18   # elements: below this a pass is shorter than handing a block to a thread
SUM_BLOCKS = 8


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})  # reassoc: a vectorised sum
def sum_squares(a):
    """sum(a * a) accumulated in float64."""
    s = 0.0
    for i in range(a.shape[0]):
        x = np.float64(a[i])
        s += x * x
    return s


@njit(cache=True, error_model="numpy")
def adam_update(param, grad, m, v, step, b1, b2, denom_scale, eps):
    """torch.optim.Adam's update in one pass: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    param -= step * m / (sqrt(v) * denom_scale + eps), with step = lr / (1 - b1^t) and
    denom_scale = 1 / sqrt(1 - b2^t) computed by the caller. All arrays (n,), one dtype."""
    n = param.shape[0]
    dt = param.dtype.type
    c1, c2, s, d, e = dt(1 - b1), dt(1 - b2), dt(step), dt(denom_scale), dt(eps)
    fb1, fb2 = dt(b1), dt(b2)
    for i in range(n):
        g = grad[i]
        mi = fb1 * m[i] + c1 * g
        vi = fb2 * v[i] + c2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] -= s * mi / (np.sqrt(vi) * d + e)


@njit(cache=True, nogil=True, error_model="numpy")
def _adam_block(k, nblocks, param, grad, m, v, step, b1, b2, denom_scale, eps):
    a, b = chunk(k, param.shape[0], nblocks)
    adam_update(param[a:b], grad[a:b], m[a:b], v[a:b], step, b1, b2, denom_scale, eps)


@njit(cache=True, nogil=True, error_model="numpy")
def _sum_block(k, a, sums):
    lo, hi = chunk(k, a.shape[0], sums.shape[0])
    sums[k] = sum_squares(a[lo:hi])


@njit(cache=True, nogil=True, error_model="numpy")
def _average_block(k, nblocks, mean, flat, scale):
    a, b = chunk(k, mean.shape[0], nblocks)
    s = mean.dtype.type(scale)
    for i in range(a, b):
        mean[i] += (flat[i] - mean[i]) * s


def average_pass(mean, flat, scale: float) -> None:
    """mean += (flat - mean) * scale in the arrays' dtype (1-D, one dtype): a running mean's update
    (training/average.py), split across the threads when it is long enough."""
    nblocks = threads_at_once() if mean.shape[0] >= SPLIT_MIN else 1
    run_blocks(_average_block, nblocks, nblocks, mean, flat, scale)


def adam_pass(param, grad, m, v, step, b1, b2, denom_scale, eps) -> None:
    """``adam_update`` on 1-D arrays, split across the threads when they are long enough."""
    nblocks = threads_at_once() if param.shape[0] >= SPLIT_MIN else 1
    run_blocks(_adam_block, nblocks, nblocks, param, grad, m, v, step, b1, b2, denom_scale, eps)


def sum_squares_pass(a) -> float:
    """``sum_squares`` of a 1-D array; a long one in ``SUM_BLOCKS`` blocks side by side, their
    sums added in block order (the same result on any number of threads)."""
    if a.shape[0] < SPLIT_MIN:
        return float(sum_squares(a))
    sums = np.empty(SUM_BLOCKS)
    run_blocks(_sum_block, SUM_BLOCKS, a, sums)
    total = 0.0
    for s in sums:
        total += float(s)
    return total
