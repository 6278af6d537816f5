"""The serial per-cell drivers: the reference the parallel layer kernels (kernels/layer.py) are
checked against, themselves checked against the naive reference (reference.py), finite
differences and PyTorch (test_kernels.py).

One time step at a time over the whole batch (one np.dot per step), on the cells' own step
functions. ``SERIAL[name].forward(xp, W_hh, b_hh, s0) -> (hs, sT, cache)`` and
``.backward(dh_out, dsT, W_hh, hs, cache) -> (dxp, dW_hh, db_hh, ds0)``; ``direction_forward`` /
``direction_backward`` run them over a right-padded, sorted batch with lengths, span by span,
in either direction (the reverse one on every sequence mirrored within its length).
"""
import numpy as np
from numba import njit

from charlm.kernels.cells import CELLS, _check
from charlm.kernels.gru import gru_step, gru_step_backward
from charlm.kernels.lstm import lstm_step, lstm_step_backward
from charlm.kernels.rnn import rnn_step, rnn_step_backward


@njit(cache=True, error_model="numpy", nogil=True)
def lstm_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, 4H) input projections x_t @ W_ih^T + b_ih
    W_hh: (4H, H), b_hh: (4H,)
    s0:   (2, B, H) initial (h0, c0)
    returns hs (T+1, B, H) with hs[0] = h0; sT (2, B, H) = (h_T, c_T);
            gates (T, B, 4H) post-activation i, f, g, o; cs (T+1, B, H) with cs[0] = c0
    """
    T, B, G = xp.shape
    H = G // 4
    hs = np.empty((T + 1, B, H), xp.dtype)
    cs = np.empty((T + 1, B, H), xp.dtype)
    gates = np.empty((T, B, G), xp.dtype)
    hs[0] = s0[0]
    cs[0] = s0[1]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, 4H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, G), xp.dtype)
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, 4H)
        for b in range(B):
            lstm_step(xp[t, b], b_hh, b_hh, b_hh, hW[b], hs[t, b], cs[t, b], hs[t + 1, b], cs[t + 1, b], gates[t, b], b_hh)
    sT = np.empty((2, B, H), xp.dtype)
    sT[0] = hs[T]
    sT[1] = cs[T]
    return hs, sT, gates, cs


@njit(cache=True, error_model="numpy", nogil=True)
def lstm_backward(dh_out, dsT, W_hh, hs, gates, cs):
    """dh_out (T, B, H) from above, dsT (S, B, H); hs and the cache as lstm_forward returned them
    -> dxp (T, B, G), dW_hh, db_hh, ds0 (S, B, H)."""
    T, B, H = dh_out.shape
    G = 4 * H
    dt = dh_out.dtype
    dxp = np.empty((T, B, G), dt)
    db_hh = np.zeros(G, dt)
    ds0 = dsT.copy()
    dh = ds0[0]  # (B, H) gradient wrt h_t from step t+1; ends as dh0
    dc = ds0[1]  # (B, H) gradient wrt c_t; ends as dc0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            lstm_step_backward(dh_out[t, b], dh[b], dc[b], hs[t, b], hs[t + 1, b], cs[t, b], cs[t + 1, b],
                               gates[t, b], db_hh, dxp[t, b], dxp[t, b], db_hh, db_hh)
        np.dot(dxp[t], W_hh, dh)  # (B, H) = (B, 4H) @ (4H, H)
    dW_hh = np.empty((G, H), dt)
    np.dot(dxp.reshape(T * B, G).T, hs[:T].reshape(T * B, H), dW_hh)  # (4H, T*B) @ (T*B, H)
    return dxp, dW_hh, db_hh, ds0


@njit(cache=True, error_model="numpy", nogil=True)
def gru_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, 3H) input projections x_t @ W_ih^T + b_ih
    W_hh: (3H, H), b_hh: (3H,)
    s0:   (1, B, H) initial h0
    returns hs (T+1, B, H) with hs[0] = h0; sT (1, B, H) = h_T;
            gates (T, B, 3H) post-activation r, z, n; hn (T, B, H) = W_hn h_{t-1} + b_hn
    """
    T, B, G = xp.shape
    H = G // 3
    hs = np.empty((T + 1, B, H), xp.dtype)
    gates = np.empty((T, B, G), xp.dtype)
    hn = np.empty((T, B, H), xp.dtype)
    hs[0] = s0[0]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, 3H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, G), xp.dtype)
    no_bias = np.zeros(G, xp.dtype)  # xp already holds b_ih
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, 3H)
        for b in range(B):
            gru_step(xp[t, b], no_bias, b_hh, b_hh, hW[b], hs[t, b], hs[t, b], hs[t + 1, b], hn[t, b], gates[t, b], hn[t, b])
    sT = np.empty((1, B, H), xp.dtype)
    sT[0] = hs[T]
    return hs, sT, gates, hn


@njit(cache=True, error_model="numpy", nogil=True)
def gru_backward(dh_out, dsT, W_hh, hs, gates, hn):
    """dh_out (T, B, H) from above, dsT (S, B, H); hs and the cache as gru_forward returned them
    -> dxp (T, B, G), dW_hh, db_hh, ds0 (S, B, H)."""
    T, B, H = dh_out.shape
    G = 3 * H
    dt = dh_out.dtype
    dxp = np.empty((T, B, G), dt)
    da = np.empty((T, B, G), dt)  # recurrent pre-activation gradients, for dW_hh
    db_hh = np.zeros(G, dt)
    dh_gemm = np.zeros((B, H), dt)
    dh_skip = dsT[0].copy()  # (B, H) the final-state gradient enters like a direct path
    dbx = np.zeros(G, dt)  # unused here (the caller sums dxp)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            gru_step_backward(dh_out[t, b], dh_gemm[b], dh_skip[b], hs[t, b], hs[t + 1, b], hs[t, b],
                              hs[t + 1, b], gates[t, b], hn[t, b], dxp[t, b], da[t, b], db_hh, dbx)
        np.dot(da[t], W_hh, dh_gemm)  # (B, H) = (B, 3H) @ (3H, H)
    dW_hh = np.empty((G, H), dt)
    np.dot(da.reshape(T * B, G).T, hs[:T].reshape(T * B, H), dW_hh)  # (3H, T*B) @ (T*B, H)
    ds0 = np.empty((1, B, H), dt)
    ds0[0] = dh_gemm + dh_skip
    return dxp, dW_hh, db_hh, ds0


@njit(cache=True, error_model="numpy", nogil=True)
def rnn_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, H) input projections x_t @ W_ih^T + b_ih
    W_hh: (H, H), b_hh: (H,)
    s0:   (1, B, H) initial h0
    returns hs (T+1, B, H) with hs[0] = h0; sT (1, B, H) = h_T
    """
    T, B, H = xp.shape
    hs = np.empty((T + 1, B, H), xp.dtype)
    hs[0] = s0[0]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, H), xp.dtype)
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, H)
        for b in range(B):
            rnn_step(xp[t, b], b_hh, b_hh, b_hh, hW[b], hs[t, b], hs[t, b], hs[t + 1, b], hs[t + 1, b], b_hh, b_hh)
    sT = np.empty((1, B, H), xp.dtype)
    sT[0] = hs[T]
    return hs, sT


@njit(cache=True, error_model="numpy", nogil=True)
def rnn_backward(dh_out, dsT, W_hh, hs):
    """dh_out (T, B, H) from above, dsT (S, B, H); hs and the cache as rnn_forward returned them
    -> dxp (T, B, G), dW_hh, db_hh, ds0 (S, B, H)."""
    T, B, H = dh_out.shape
    dt = dh_out.dtype
    dxp = np.empty((T, B, H), dt)
    db_hh = np.zeros(H, dt)
    ds0 = dsT.copy()
    dh = ds0[0]  # (B, H) gradient wrt h_t from step t+1; ends as dh0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            rnn_step_backward(dh_out[t, b], dh[b], dh[b], hs[t, b], hs[t + 1, b], hs[t, b], hs[t + 1, b], db_hh, db_hh,
                              dxp[t, b], dxp[t, b], db_hh, db_hh)
        np.dot(dxp[t], W_hh, dh)  # (B, H) = (B, H) @ (H, H)
    dW_hh = np.empty((H, H), dt)
    np.dot(dxp.reshape(T * B, H).T, hs[:T].reshape(T * B, H), dW_hh)  # (H, T*B) @ (T*B, H)
    return dxp, dW_hh, db_hh, ds0

class SerialCell:
    """The serial pair of one per-layer cell, with the dtype/layout checks of the kernels."""

    def __init__(self, name):
        self.cell = CELLS[name]
        self._forward = globals()[f"{name}_forward"]
        self._backward = globals()[f"{name}_backward"]

    def forward(self, xp, W_hh, b_hh, s0):
        _check(xp, W_hh, b_hh, s0)
        out = self._forward(xp, W_hh, b_hh, s0)
        return out[0], out[1], tuple(out[2:])

    def backward(self, dh_out, dsT, W_hh, hs, cache):
        _check(dh_out, dsT, W_hh, hs, *cache)
        return self._backward(dh_out, dsT, W_hh, hs, *cache)


SERIAL = {name: SerialCell(name) for name, c in CELLS.items() if not c.feeds_output}


def spans_of(lengths):
    """(t0, t1, n, n_end) per span of a sorted batch: steps t0..t1-1 run on rows 0..n-1; rows
    n_end..n-1 end at t1."""
    lengths = np.asarray(lengths)
    bounds, t0 = [], 0
    for t1 in np.unique(lengths):
        bounds.append((t0, int(t1), int(np.sum(lengths >= t1)), int(np.sum(lengths > t1))))
        t0 = int(t1)
    return bounds


def flip(a, lengths):
    """a (T, B, ...) with every row's valid steps reversed (padding left in place)."""
    T = a.shape[0]
    t = np.arange(T)[:, None]
    idx = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return np.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=0)


def direction_forward(name, xp, W_hh, b_hh, s0, lengths, reverse=False):
    """One direction over the valid steps of xp (T, B, G) (positions; b_ih included). Returns the
    outputs (T, B, H) by position (0 at padded ones), the final states (S, B, H) at each row's
    length, and what direction_backward needs."""
    serial = SERIAL[name]
    lengths = np.asarray(lengths)
    T, B, _ = xp.shape
    H = W_hh.shape[1]
    src = flip(xp, lengths) if reverse else xp
    out = np.zeros((T, B, H), xp.dtype)
    final = np.empty((serial.cell.states, B, H), xp.dtype)
    state, caches = s0, []
    for t0, t1, n, n_end in spans_of(lengths):
        hs, sT, cache = serial.forward(np.ascontiguousarray(src[t0:t1, :n]), W_hh, b_hh,
                                       np.ascontiguousarray(state[:, :n]))
        out[t0:t1, :n] = hs[1:]
        final[:, n_end:n] = sT[:, n_end:n]
        state = sT
        caches.append((hs, cache))
    return (flip(out, lengths) if reverse else out), final, caches


def direction_backward(name, dout, dfinal, W_hh, lengths, caches, reverse=False):
    """Gradients of one direction: dout (T, B, H) by position (padded ones ignored), dfinal
    (S, B, H). Returns dxp (T, B, G) by position (0 at padded ones), dW_hh, db_hh, ds0."""
    serial = SERIAL[name]
    lengths = np.asarray(lengths)
    T, B, H = dout.shape
    G = W_hh.shape[0]
    mask = np.arange(T)[:, None] < lengths[None, :]
    dout = dout * mask[:, :, None]
    if reverse:
        dout = flip(dout, lengths)
    dxp = np.zeros((T, B, G), dout.dtype)
    dW_hh, db_hh = np.zeros_like(W_hh), np.zeros(G, dout.dtype)
    carried = None
    for (t0, t1, n, n_end), (hs, cache) in zip(reversed(spans_of(lengths)), reversed(caches)):
        ds = np.empty((serial.cell.states, n, H), dout.dtype)
        ds[:, n_end:n] = dfinal[:, n_end:n]
        if n_end:
            ds[:, :n_end] = carried
        dx_k, dW_k, db_k, carried = serial.backward(np.ascontiguousarray(dout[t0:t1, :n]), ds, W_hh, hs, cache)
        dxp[t0:t1, :n] = dx_k
        dW_hh += dW_k
        db_hh += db_k
    return (flip(dxp, lengths) if reverse else dxp), dW_hh, db_hh, carried
