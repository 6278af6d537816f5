"""Numba kernels: a forward/backward pair per recurrent cell, the fused loss, the sampling loop.

Importing this package imports Numba (~0.4 s); ``charlm`` imports it lazily. Every kernel is
``@njit(cache=True)``, compiled per dtype (float32 for training, float64 for gradient checks) on
first use and then loaded from Numba's on-disk cache.

    cell = get_cell("lstm")
    hs, sT, cache = cell.forward(xp, W_hh, b_hh, s0)           # xp (T, B, G*H), s0 (S, B, H)
    dxp, dW_hh, db_hh, ds0 = cell.backward(dh_out, dsT, W_hh, hs, cache)

Shapes, layouts and gate orders are PyTorch's (see each cell's module docstring). The Jordan cell
is the exception: its recurrence runs through the decoder, so its forward/backward take the whole
stack (see jordan.py and ``JORDAN`` below); it is reached through ``get_cell`` but is not in
``CELLS``, the table of cells that share the per-layer signature. The adapters
below only pack each cell's extra cached arrays into ``cache`` and check dtypes and contiguity
(a mismatch would otherwise silently compile a slow or wrong specialisation).

These serial pairs are the reference. ``Model`` trains with their whole-layer, multithreaded
twins ``<cell>_forward_par`` / ``<cell>_backward_par`` (same arithmetic, streams split across
threads, input projection and weight gradients fused in per block of steps; kernels/parallel.py),
and tests/test_bench.py checks each against its serial twin. Sampling models above
``generate.SPLIT_MIN_BYTES`` runs on two threads (generate_split.py), id for id the same.
"""
from typing import Callable, NamedTuple

import numpy as np

from ..runtime import prefer_workqueue

prefer_workqueue()  # before any parallel kernel runs (see charlm.runtime)

from ..config import CELL_IDS
from .generate import advance, generate
from .gru import gru_backward, gru_forward
from .jordan import jordan_backward, jordan_forward, jordan_weight_grads
from .loss import cross_entropy_grad, cross_entropy_rows
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward


class Cell(NamedTuple):
    name: str
    gates: int          # G: rows of W_hh per hidden unit
    states: int         # S: state arrays per layer (h, or h and c)
    forward: Callable   # forward(xp, W_hh, b_hh, s0) -> (hs, sT, cache)
    backward: Callable  # backward(dh_out, dsT, W_hh, hs, cache) -> (dxp, dW_hh, db_hh, ds0)


def _check(*arrays):
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"kernels take float32 or float64 arrays, got {dtype}")
    for a in arrays:
        if a.dtype != dtype:
            raise TypeError(f"all arrays of one kernel call must share a dtype: {a.dtype} != {dtype}")
        if not a.flags.c_contiguous:
            raise ValueError("kernel arrays must be C-contiguous (np.ascontiguousarray)")


def _lstm_forward(xp, W_hh, b_hh, s0):
    _check(xp, W_hh, b_hh, s0)
    hs, sT, gates, cs = lstm_forward(xp, W_hh, b_hh, s0)
    return hs, sT, (gates, cs)


def _lstm_backward(dh_out, dsT, W_hh, hs, cache):
    _check(dh_out, dsT, W_hh, hs, *cache)
    return lstm_backward(dh_out, dsT, W_hh, hs, *cache)


def _gru_forward(xp, W_hh, b_hh, s0):
    _check(xp, W_hh, b_hh, s0)
    hs, sT, gates, hn = gru_forward(xp, W_hh, b_hh, s0)
    return hs, sT, (gates, hn)


def _gru_backward(dh_out, dsT, W_hh, hs, cache):
    _check(dh_out, dsT, W_hh, hs, *cache)
    return gru_backward(dh_out, dsT, W_hh, hs, *cache)


def _rnn_forward(xp, W_hh, b_hh, s0):
    _check(xp, W_hh, b_hh, s0)
    hs, sT = rnn_forward(xp, W_hh, b_hh, s0)
    return hs, sT, ()


def _rnn_backward(dh_out, dsT, W_hh, hs, cache):
    _check(dh_out, dsT, W_hh, hs)
    return rnn_backward(dh_out, dsT, W_hh, hs)


CELLS = {
    "lstm": Cell("lstm", 4, 2, _lstm_forward, _lstm_backward),
    "gru": Cell("gru", 3, 1, _gru_forward, _gru_backward),
    "rnn": Cell("rnn", 1, 1, _rnn_forward, _rnn_backward),
}


def _jordan_forward(xp0, W_ih, b_ih, W_yh, b_yh, W_dec, b_dec, s0, masks):
    _check(xp0, W_ih, b_ih, W_yh, b_yh, W_dec, b_dec, s0, masks)
    return jordan_forward(xp0, W_ih, b_ih, W_yh, b_yh, W_dec, b_dec, s0, masks)


def _jordan_backward(dlogits, dsT, W_ih, W_yh, W_dec, hs, probs, masks):
    _check(dlogits, dsT, W_ih, W_yh, W_dec, hs, probs, masks)
    return jordan_backward(dlogits, dsT, W_ih, W_yh, W_dec, hs, probs, masks)


# Whole-stack signatures (jordan.py): forward(xp0, W_ih, b_ih, W_yh, b_yh, W_dec, b_dec, s0, masks)
# -> (hs, logits, probs); backward(dlogits, dsT, W_ih, W_yh, W_dec, hs, probs, masks) -> (da, dz, ds0).
JORDAN = Cell("jordan", 1, 1, _jordan_forward, _jordan_backward)


def get_cell(name: str) -> Cell:
    """The Cell for "lstm", "gru", "rnn" or "jordan" (whole-stack signatures, see JORDAN)."""
    if name == "jordan":
        return JORDAN
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {sorted(CELLS) + ['jordan']}") from None


__all__ = ["CELL_IDS", "CELLS", "Cell", "get_cell", "advance", "generate", "cross_entropy_grad",
           "cross_entropy_rows", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "rnn_forward", "rnn_backward", "JORDAN", "jordan_forward", "jordan_backward",
           "jordan_weight_grads"]
