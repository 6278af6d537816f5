"""Passes over chosen rows of a table (the rows a batch touched in a hashed table's gradient):
their squared norm, a scale, and Adam's update of only those rows (sparse_grad.py, sparse_adam.py).

``rows`` are distinct (np.unique's output): the update of a row listed twice would run twice.
The norm and the scale are serial loops (the norm's order of summation is fixed that way). Adam's
update, the reset and the ensemble's division run as one parallel pass over every dense piece and listed
row of the whole buffer: an ensemble's members have K times the rows, and this way all of them
share the threads in one launch (an elementwise pass, so its result does not depend on them).
"""
import numpy as np
from numba import njit, prange


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
def adam_span(param, grad, m, v, a, b, c1, c2, s, dsc, e, fb1, fb2, wd, decay):
    """Adam's update of elements [a, b) of four flat buffers (the constants in their dtype), per
    element with g = grad + wd*param when ``decay``: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    param -= step * m / (sqrt(v) * denom_scale + eps): the arithmetic of
    charlm.kernels.update.adam_update, so a row listed at every step follows dense Adam bit for bit."""
    for i in range(a, b):
        g = grad[i]
        if decay:
            g = g + wd * param[i]
        mi = fb1 * m[i] + c1 * g
        vi = fb2 * v[i] + c2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] -= s * mi / (np.sqrt(vi) * dsc + e)


@njit(cache=True)
def entry_span(n, pieces, starts, widths, which, rows):
    """[start, end) in the flat buffer of entry n of a pass: dense piece n, then listed row n - P."""
    P = pieces.shape[0]
    if n < P:
        return pieces[n, 0], pieces[n, 1]
    t = which[n - P]
    a = starts[t] + rows[n - P] * widths[t]
    return a, a + widths[t]


@njit(cache=True, parallel=True, error_model="numpy")
def lazy_adam(param, grad, m, v, pieces, starts, widths, which, rows, step, b1, b2, denom_scale, eps, weight_decay):
    """Adam's update of a flat buffer's dense pieces and of listed rows of its tables, all at once
    across the threads; everything else, moments included, is left as it is. The four buffers
    (n,), one dtype; pieces (P, 2) [start, end) of the dense spans (weight decay already in their
    gradient); table t is (K, widths[t]) from starts[t]; entry n is row rows[n] of table which[n]
    (distinct per table: a row listed twice would be updated twice). step = lr / (1 - b1^t),
    denom_scale = 1 / sqrt(1 - b2^t). Every element's arithmetic is ``adam_span``'s, whichever thread
    runs it, so the result does not depend on the thread count."""
    dt = param.dtype.type
    c1, c2, s, dsc, e = dt(1 - b1), dt(1 - b2), dt(step), dt(denom_scale), dt(eps)
    fb1, fb2, wd = dt(b1), dt(b2), dt(weight_decay)
    P = pieces.shape[0]
    for n in prange(P + rows.shape[0]):
        a, b = entry_span(n, pieces, starts, widths, which, rows)
        adam_span(param, grad, m, v, a, b, c1, c2, s, dsc, e, fb1, fb2, wd, n >= P and weight_decay != 0.0)


@njit(cache=True, parallel=True, error_model="numpy")
def divide_rows(grad, pieces, starts, widths, which, rows, divisor):
    """grad /= divisor over the dense pieces and listed table rows (as ``lazy_adam`` lists them),
    element for element as NumPy's division in the buffer's dtype."""
    f = grad.dtype.type(divisor)
    for n in prange(pieces.shape[0] + rows.shape[0]):
        a, b = entry_span(n, pieces, starts, widths, which, rows)
        for i in range(a, b):
            grad[i] /= f


@njit(cache=True, parallel=True)
def zero_rows(grad, pieces, starts, widths, which, rows):
    """grad = 0 over the dense pieces and listed table rows (as ``lazy_adam`` lists them)."""
    for n in prange(pieces.shape[0] + rows.shape[0]):
        a, b = entry_span(n, pieces, starts, widths, which, rows)
        for i in range(a, b):
            grad[i] = 0
