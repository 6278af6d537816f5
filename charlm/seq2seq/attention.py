"""Attention over the encoder outputs: scores, masked softmax and context, forward and backward.

Two kinds, named by what compiled code takes (``KINDS``). With e_s (F,) the encoder output at
source position s, h (H,) the decoder state, and s < L (the row's source length):

    general (0):  score_s = e_s . (W_a h)               W_a = attention.query.weight (F, H)
    additive (1): score_s = v . tanh(W_1 e_s + W_2 h)   W_1 = attention.key.weight (A, F),
                                                        W_2 = attention.query.weight (A, H),
                                                        v   = attention.v.weight (1, A)
    alpha = softmax(score) over s < L,   context = sum_s alpha_s e_s

Both kinds read the encoder outputs through ``keys`` (B, S, A), computed once per batch by one
GEMM: general's e_s . (W_a h) is (W_a^T e_s) . h, so its keys are E @ W_a (A = H) and a step costs
S*H per row instead of S*F; additive's keys are W_1 e_s (A = H). What depends on the step (the
scores, the softmax, the context and their backward) is a loop over S source positions of one row:
the row kernels ``attend`` and ``attend_backward``, which the decoder's time loops call for each
row of each step. They never read a source position at or past L, so padding is never read.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..kernels.activations import tanh_act
from .products import t_times, times

KINDS = {"general": 0, "additive": 1}


def attention_shapes(kind: str, hidden: int, width: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the attention's parameters (``width`` F: the encoder outputs')."""
    if kind == "general":
        return [("attention.query.weight", (width, hidden))]
    return [("attention.key.weight", (hidden, width)), ("attention.query.weight", (hidden, hidden)),
            ("attention.v.weight", (1, hidden))]


def keys(kind: str, enc, params, nchunks: int = 1):
    """(B, S, A) what the scores read of the encoder outputs enc (B, S, F), by one product split
    into ``nchunks`` blocks of rows (products.py)."""
    W = params["attention.query.weight"] if kind == "general" else params["attention.key.weight"].T
    return times(enc, W, nchunks)


def keys_backward(kind: str, enc, dkeys, params, grads, nchunks: int = 1):
    """The weight's gradient into ``grads`` (added) and dL/d(enc) through the keys (B, S, F)."""
    flat_e, flat_k = enc.reshape(-1, enc.shape[2]), dkeys.reshape(-1, dkeys.shape[2])
    if kind == "general":
        W = params["attention.query.weight"]
        grads["attention.query.weight"] += t_times(flat_e, flat_k, nchunks)
        return times(dkeys, W.T, nchunks)
    W = params["attention.key.weight"]
    grads["attention.key.weight"] += t_times(flat_k, flat_e, nchunks)
    return times(dkeys, W, nchunks)


# The row kernels' reductions may be summed in any order (reassoc), so that the compiler keeps
# several vector accumulators instead of one chain of dependent scalar adds; with the rows
# contiguous (keys and encoder outputs row-major, model.attended) their loops vectorise, several
# times faster than the scalar chains. Only the order of the sums changes (float rounding).
ROW_MATH = {"reassoc", "contract"}


@njit(cache=True, error_model="numpy", fastmath=ROW_MATH)
def _dot(a, b):
    """A loop, not np.dot: the rows are short (a row of keys[b]), where BLAS would cost a call."""
    acc = a.dtype.type(0)
    for j in range(a.shape[0]):
        acc += a[j] * b[j]
    return acc


@njit(cache=True, error_model="numpy", fastmath=ROW_MATH)
def _score(kind, h, q, key, v):
    if kind == 0:
        return _dot(key, h)
    acc = key.dtype.type(0)
    for j in range(key.shape[0]):
        acc += v[j] * tanh_act(key[j] + q[j])
    return acc


@njit(cache=True, error_model="numpy", fastmath=ROW_MATH)
def attend(kind, h, q, keys_b, enc_b, v, L, alpha, ctx):
    """One row: alpha (S,) the weights (0 at s >= L), ctx (F,) the context. h (H,) the decoder
    state (general), q (A,) = W_2 h (additive; general does not read it), keys_b (S, A) and enc_b
    (S, F) the row's keys and encoder outputs, v (A,) (additive)."""
    m = -np.inf
    for s in range(L):
        alpha[s] = _score(kind, h, q, keys_b[s], v)
        m = max(m, alpha[s])
    total = alpha.dtype.type(0)
    for s in range(L):
        alpha[s] = np.exp(alpha[s] - m)
        total += alpha[s]
    for s in range(L):
        alpha[s] /= total
    alpha[L:] = 0
    ctx[:] = 0
    for s in range(L):
        a = alpha[s]
        for f in range(ctx.shape[0]):
            ctx[f] += a * enc_b[s, f]


@njit(cache=True, error_model="numpy", fastmath=ROW_MATH)
def attend_backward(kind, dctx, h, q, keys_b, enc_b, v, L, alpha, dh, dq, dkeys_b, denc_b, dv, dalpha):
    """The backward of ``attend`` for one row, from dctx (F,); everything is added to: dh (H,)
    (general), dq (A,) (additive: dL/dq, which the caller takes through W_2 by a GEMM), dkeys_b
    (S, A), denc_b (S, F) (through the context; through the keys, ``keys_backward``), dv (A,).
    dalpha (S,) is scratch. The softmax's backward: dscore_s = alpha_s (dalpha_s - sum_r alpha_r
    dalpha_r)."""
    mean = dctx.dtype.type(0)
    for s in range(L):
        dalpha[s] = _dot(dctx, enc_b[s])
        mean += alpha[s] * dalpha[s]
        for f in range(dctx.shape[0]):
            denc_b[s, f] += alpha[s] * dctx[f]
    one = dctx.dtype.type(1)
    for s in range(L):
        ds = alpha[s] * (dalpha[s] - mean)
        if kind == 0:
            for j in range(h.shape[0]):
                dh[j] += ds * keys_b[s, j]
                dkeys_b[s, j] += ds * h[j]
        else:
            for j in range(q.shape[0]):
                u = tanh_act(keys_b[s, j] + q[j])
                dv[j] += ds * u
                dp = ds * v[j] * (one - u * u)
                dkeys_b[s, j] += dp
                dq[j] += dp
