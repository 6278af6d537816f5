"""Passes over chosen rows of a table (the rows a batch touched in a hashed table's gradient):
their squared norm, a scale, and Adam's update of only those rows (sparse_grad.py, sparse_adam.py).

``rows`` are distinct (np.unique's output): the update of a row listed twice would run twice.
Serial loops: a batch touches a few thousand rows, microseconds of work, less than waking a
second thread.
"""
import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def rows_sum_squares(table, rows):
    """sum(table[rows] ** 2) accumulated in float64. table (K, D), rows (R,) int."""
    s = 0.0
    for n in range(rows.shape[0]):
        r = rows[n]
        for d in range(table.shape[1]):
            x = np.float64(table[r, d])
            s += x * x
    return s


@njit(cache=True, error_model="numpy")
def rows_multiply(table, rows, factor):
    """table[rows] *= factor (cast to the table's dtype first, as ``array *= dtype(factor)``)."""
    f = table.dtype.type(factor)
    for n in range(rows.shape[0]):
        r = rows[n]
        for d in range(table.shape[1]):
            table[r, d] *= f


@njit(cache=True, error_model="numpy")
def lazy_adam_rows(param, grad, m, v, rows, step, b1, b2, denom_scale, eps, weight_decay):
    """Adam's update of the listed rows only (all four arrays (K, D), one dtype); the other rows,
    their moments included, are left as they are. Per element, with g = grad + weight_decay*param:
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; param -= step * m / (sqrt(v) * denom_scale + eps),
    step = lr / (1 - b1^t) and denom_scale = 1 / sqrt(1 - b2^t) from the global step count t:
    the arithmetic of charlm.kernels.update.adam_update, so a row listed at every step follows
    dense Adam bit for bit."""
    dt = param.dtype.type
    c1, c2, s, dsc, e = dt(1 - b1), dt(1 - b2), dt(step), dt(denom_scale), dt(eps)
    fb1, fb2, wd = dt(b1), dt(b2), dt(weight_decay)
    for n in range(rows.shape[0]):
        r = rows[n]
        for d in range(param.shape[1]):
            g = grad[r, d]
            if weight_decay != 0.0:
                g = g + wd * param[r, d]
            mi = fb1 * m[r, d] + c1 * g
            vi = fb2 * v[r, d] + c2 * (g * g)
            m[r, d] = mi
            v[r, d] = vi
            param[r, d] -= s * mi / (np.sqrt(vi) * dsc + e)
