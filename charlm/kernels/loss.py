"""Fused log-softmax + negative log-likelihood over the decoder's logits.

For each row n of logits z (N, V) with target k = targets[n]:

    m    = max_v z_v
    lse  = m + log(sum_v exp(z_v - m))       max-subtracted, in float64
    nll  = lse - z_k
    dz_v = scale * (softmax(z)_v - [v == k])  (scale is usually 1 / N for a mean loss)

``cross_entropy_grad`` writes dz over the logits (exp(z_v - m) is computed once per element into a
float64 row buffer, summed, then rescaled into the logits) and returns sum_n nll.
``cross_entropy_rows`` is the forward alone, per row, for evaluation and surprisal.

exp: libm's scalar exp (no SVML in PyPI's llvmlite) is one call per element, so at word level
(V = 10k, N = 8192) this loop took longer than the three decoder GEMMs. ``_exp_nonpos`` is a
vectorisable float64 exp (range reduction x = n ln2 + r, degree-13 Taylor polynomial for e^r on
|r| <= ln2/2, 2^n built from its exponent bits): within about one ulp of np.exp on [-708, 0]
(tests/test_kernels.py bounds it at two) and several times faster, because the loop vectorises.
Arguments below -708 return ~3e-308 instead of underflowing to 0, which cannot change a sum that
contains exp(0) = 1.

``cross_entropy_grad`` and ``cross_entropy_rows`` run the rows serially: they are the reference.
The model trains and evaluates with their twins ``cross_entropy_grad_par`` / ``cross_entropy_rows_par``,
which split the rows into ``nchunks`` blocks, one thread each (every BLAS call is then
single-threaded: charlm.runtime), and add the per-block sums in a fixed order, so the result does
not depend on which thread finishes first. tests/test_bench.py checks each against its twin.
"""
import math

import numpy as np
from numba import njit

from .blocks import run_blocks
from .parallel import chunk

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # ln 2 split in two (Cody-Waite) so that n * _LN2_HI is exact
_LN2_LO = 1.42860682030941723212e-6
_C = tuple(1.0 / math.factorial(k) for k in range(14))  # Taylor coefficients of e^r


@njit(cache=True, error_model="numpy", fastmath={"contract"})  # contract: let LLVM use FMA
def _exp_nonpos(row, m, e, bits):
    """e[v] = exp(row[v] - m) in float64 for v < V, where m >= max(row) (so every argument <= 0).
    e (V,) float64 and bits (V,) int64 are scratch; two passes because a float's bits can only be
    reinterpreted through an array view."""
    for v in range(row.shape[0]):
        x = max(np.float64(row[v]) - m, -708.0)  # below ~-708.4, 2^n is no longer a normal float
        n = np.floor(x * _LOG2E + 0.5)
        r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln2 / 2
        p = _C[13]
        p = p * r + _C[12]
        p = p * r + _C[11]
        p = p * r + _C[10]
        p = p * r + _C[9]
        p = p * r + _C[8]
        p = p * r + _C[7]
        p = p * r + _C[6]
        p = p * r + _C[5]
        p = p * r + _C[4]
        p = p * r + _C[3]
        p = p * r + _C[2]
        p = p * r + 1.0
        e[v] = p * r + 1.0
        bits[v] = (np.int64(np.int32(n)) + 1023) << 52  # the float64 2^n
    two_n = bits[:row.shape[0]].view(np.float64)
    for v in range(row.shape[0]):
        e[v] *= two_n[v]


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})  # reassoc: a vectorised sum
def _sum(e, V):
    s = 0.0
    for v in range(V):
        s += e[v]
    return s


@njit(cache=True, error_model="numpy")
def _row_max(row):
    m = np.float64(row[0])
    for v in range(1, row.shape[0]):
        if row[v] > m:
            m = np.float64(row[v])
    return m


@njit(cache=True, error_model="numpy")
def _row_nll(row, k, e, bits):
    """-log softmax(row)[k] in float64; e (V,) float64 and bits (V,) int64 scratch, left holding
    exp(row - max) and its exponents."""
    m = _row_max(row)
    _exp_nonpos(row, m, e, bits)
    return m + np.log(_sum(e, row.shape[0])) - np.float64(row[k])


@njit(cache=True, error_model="numpy")
def _row_nll_grad(row, k, scale, e, bits):
    """_row_nll, then row overwritten with scale * (softmax(row) - onehot(k))."""
    nll = _row_nll(row, k, e, bits)
    V = row.shape[0]
    inv = scale / _sum(e, V)
    for v in range(V):
        row[v] = e[v] * inv
    row[k] -= scale
    return nll


@njit(cache=True, error_model="numpy")
def cross_entropy_grad(logits, targets, scale):
    """
    logits:  (N, V) float32/float64, OVERWRITTEN with scale * (softmax(logits) - onehot(targets))
    targets: (N,) any integer dtype, each in [0, V)
    scale:   float multiplying the gradient (e.g. 1 / N)
    returns  sum over rows of -log softmax(logits)[n, targets[n]] as a float (float64 sum)
    """
    N, V = logits.shape
    e = np.empty(V, np.float64)
    bits = np.empty(V, np.int64)
    total = 0.0
    for n in range(N):
        k = targets[n]
        if k < 0 or k >= V:
            raise IndexError("cross_entropy_grad: target id out of range [0, V)")
        total += _row_nll_grad(logits[n], k, scale, e, bits)
    return total


@njit(cache=True, error_model="numpy")
def cross_entropy_rows(logits, targets, nll_out):
    """
    logits:  (N, V) float32/float64, not modified
    targets: (N,) any integer dtype, each in [0, V)
    nll_out: (N,) float64, receives -log softmax(logits)[n, targets[n]] per row (in nats)
    """
    N, V = logits.shape
    e = np.empty(V, np.float64)
    bits = np.empty(V, np.int64)
    for n in range(N):
        k = targets[n]
        if k < 0 or k >= V:
            raise IndexError("cross_entropy_rows: target id out of range [0, V)")
        nll_out[n] = _row_nll(logits[n], k, e, bits)


# The parallel twins run their blocks on threads (blocks.py): each block a serial function.

def cross_entropy_grad_par(logits, targets, scale, db, nchunks):
    """cross_entropy_grad with the rows split into ``nchunks`` blocks, one thread each, plus the
    decoder-bias gradient fused in: db (V,) receives sum_n dz[n] (the column sums of the gradient,
    accumulated in float64 per block while each row is in cache, blocks added in a fixed order).
    Returns sum_n nll (float64; per-block sums added in order)."""
    totals, dbk, bad = np.zeros(nchunks), np.zeros((nchunks, logits.shape[1])), np.zeros(nchunks, np.int64)
    run_blocks(_grad_block, nchunks, logits, targets, float(scale), dbk, totals, bad, nchunks)
    _check_blocks(bad, "cross_entropy_grad_par")
    db[...] = _in_order(dbk)
    return float(_in_order(totals))


def cross_entropy_rows_par(logits, targets, nll_out, nchunks):
    """cross_entropy_rows with the rows split into ``nchunks`` blocks, one thread each."""
    bad = np.zeros(nchunks, np.int64)
    run_blocks(_rows_block, nchunks, logits, targets, nll_out, bad, nchunks)
    _check_blocks(bad, "cross_entropy_rows_par")


def _check_blocks(bad, name):
    if bad.any():
        raise IndexError(f"{name}: target id out of range [0, V)")


def _in_order(parts):
    """parts[0] + parts[1] + ... in that order (the sum's result does not depend on NumPy's
    summation order)."""
    total = parts[0].copy()
    for k in range(1, parts.shape[0]):
        total += parts[k]
    return total


def block_signature(name, dtype):
    """(the block ``name``, "_grad_block" or "_rows_block", and the argument types the parallel twin
    calls it with for ``dtype`` logits): what a helper process compiles ahead of the call
    (compile_aside.py)."""
    from .call_types import signature

    block = {"_grad_block": _grad_block, "_rows_block": _rows_block}[name]
    types = dict(k="i0", logits="f2", targets="i1", scale="d0", dbk="d2", totals="d1", nll_out="d1", bad="i1",
                 nchunks="i0")
    return block, signature(block, types, dtype)


@njit(cache=True, nogil=True, error_model="numpy")
def _grad_block(k, logits, targets, scale, dbk, totals, bad, nchunks):
    """Block k of cross_entropy_grad_par: its rows' gradients, NLL sum and bias-gradient sums."""
    N, V = logits.shape
    r0, r1 = chunk(k, N, nchunks)
    e = np.empty(V, np.float64)
    bits = np.empty(V, np.int64)
    total = 0.0
    for n in range(r0, r1):
        kk = targets[n]
        if kk < 0 or kk >= V:
            bad[k] = 1
            continue
        row = logits[n]
        total += _row_nll_grad(row, kk, scale, e, bits)
        for v in range(V):
            dbk[k, v] += row[v]
    totals[k] = total


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_block(k, logits, targets, nll_out, bad, nchunks):
    """Block k of cross_entropy_rows_par."""
    N, V = logits.shape
    r0, r1 = chunk(k, N, nchunks)
    e = np.empty(V, np.float64)
    bits = np.empty(V, np.int64)
    for n in range(r0, r1):
        kk = targets[n]
        if kk < 0 or kk >= V:
            bad[k] = 1
            continue
        nll_out[n] = _row_nll(logits[n], kk, e, bits)
