"""Passes over chosen rows of a table (the rows a batch touched in a hashed table's gradient):
their squared norm, a scale, and Adam's update of only those rows (sparse_grad.py, sparse_adam.py).

``rows`` are distinct (np.unique's output): the update of a row listed twice would run twice.
The norm and the scale are serial loops (the norm's order of summation is fixed that way). Adam's
update, the reset and the ensemble's division are each one parallel pass over pieces of the dense
spans and runs of listed rows of the whole buffer (an ensemble's members' too, so all of them
share the threads in one launch), each piece or run done by the serial loop: elementwise, so the
result does not depend on the threads.
"""
import numpy as np
from numba import njit, prange

from ..kernels.update import adam_update


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


@njit(cache=True)
def table_of(flat, tables, t):
    """Table t of a flat buffer as a (K, D) view; tables (T, 3) rows (start, K, D)."""
    start, K, D = tables[t, 0], tables[t, 1], tables[t, 2]
    return flat[start:start + K * D].reshape(K, D)


@njit(cache=True, parallel=True, error_model="numpy")
def lazy_adam(param, grad, m, v, pieces, tables, rows, chunks, step, b1, b2, denom_scale, eps, weight_decay):
    """Adam's update of a flat buffer's dense pieces and of listed rows of its tables, all at once
    across the threads; everything else, moments included, is left as it is. The four buffers
    (n,), one dtype; pieces (P, 2) [start, end) of the dense spans (weight decay already in their
    gradient: ``adam_update``); chunk q (Q, 3) is rows[lo:hi] of table t (``lazy_adam_rows``,
    weight decay included). Every element's arithmetic is the serial kernels', whichever thread
    runs it, so the result does not depend on the thread count."""
    P = pieces.shape[0]
    for n in prange(P + chunks.shape[0]):
        if n < P:
            a, b = pieces[n, 0], pieces[n, 1]
            adam_update(param[a:b], grad[a:b], m[a:b], v[a:b], step, b1, b2, denom_scale, eps)
        else:
            t, lo, hi = chunks[n - P, 0], chunks[n - P, 1], chunks[n - P, 2]
            lazy_adam_rows(table_of(param, tables, t), table_of(grad, tables, t), table_of(m, tables, t),
                           table_of(v, tables, t), rows[lo:hi], step, b1, b2, denom_scale, eps, weight_decay)


@njit(cache=True, parallel=True, error_model="numpy")
def divide_rows(grad, pieces, tables, rows, chunks, divisor):
    """grad /= divisor over the dense pieces and listed table rows (as ``lazy_adam`` lists them),
    element for element as NumPy's division in the buffer's dtype."""
    f = grad.dtype.type(divisor)
    P = pieces.shape[0]
    for n in prange(P + chunks.shape[0]):
        if n < P:
            grad[pieces[n, 0]:pieces[n, 1]] /= f
        else:
            table = table_of(grad, tables, chunks[n - P, 0])
            for r in rows[chunks[n - P, 1]:chunks[n - P, 2]]:
                for d in range(table.shape[1]):
                    table[r, d] /= f


@njit(cache=True, parallel=True)
def zero_rows(grad, pieces, tables, rows, chunks):
    """grad = 0 over the dense pieces and listed table rows (as ``lazy_adam`` lists them)."""
    P = pieces.shape[0]
    for n in prange(P + chunks.shape[0]):
        if n < P:
            grad[pieces[n, 0]:pieces[n, 1]] = 0
        else:
            table = table_of(grad, tables, chunks[n - P, 0])
            for r in rows[chunks[n - P, 1]:chunks[n - P, 2]]:
                for d in range(table.shape[1]):
                    table[r, d] = 0
