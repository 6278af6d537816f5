"""The optimiser's passes over the flat parameter buffer, fused (optim.py calls them).

NumPy's Adam is eight passes over four arrays with temporaries of the full size; at 3.3M
parameters (2x512 LSTM) each temporary is a fresh 13 MB mapping, page-faulted in every step,
and the float64 norm's mixed-dtype dot product does not reach BLAS; these fused kernels are more
than an order of magnitude faster per step. They run serially: a pass
over a few MB is memory-bound and shorter than waking a second thread on a busy machine.
"""
import numpy as np
from numba import njit


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
