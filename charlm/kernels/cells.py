"""The cell table: one row per recurrent cell, the only place that says what a cell is.

Config validation, the model, sampling, bench and inspect read these rows; none of them asks
which cell it is. Reading the table imports nothing heavy (``charlm --help`` and config
validation read it): a row's kernels, and with them Numba, load on first use of ``kernels``,
``forward`` or ``backward``.

    cell = get_cell("lstm")
    cell.gates, cell.states                              # G = 4 rows of W_hh per unit, S = 2 states
    hs, sT, cache = cell.forward(xp, W_hh, b_hh, s0)     # xp (T, B, G*H), s0 (S, B, H)
    dxp, dW_hh, db_hh, ds0 = cell.backward(dh_out, dsT, W_hh, hs, cache)

These serial pairs are the reference; ``Model`` trains with the multithreaded layer kernels of
kernels/layer.py, which switch on ``cell.id`` and call the same per-row step functions.

Adding a cell: write ``kernels/<name>.py`` the way lstm.py reads (formulas at the top, a per-row
``<name>_step`` / ``<name>_step_backward`` pair, serial ``<name>_forward(xp, W_hh, b_hh, s0) ->
(hs, sT, *cache)`` and ``<name>_backward(dh_out, dsT, W_hh, hs, *cache) -> (dxp, dW_hh, db_hh,
ds0)``, and ``<name>_state_grads``), add its row below, and its branch to the step switch of
kernels/layer.py and of the generation loop.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str                 # what --cell takes and checkpoints record
    id: int                   # how compiled code (layer kernels, generation loops) names the cell
    gates: int                # G: rows of W_ih / W_hh per hidden unit
    states: int               # S: state arrays carried per layer (h, or h and c)
    gate_order: str           # one letter per gate block of W_hh, in PyTorch's order
    torch_module: str         # the torch.nn class with the same parameters ("" when there is none)
    cache: tuple = ()         # names of the arrays the forward keeps for backward, besides hs
    forget_gate: int = -1     # gate block whose two biases start at 0.5 each (sum 1), or -1
    recurrent: str = "hh"     # parameter suffix of the recurrent weights: rnn.weight_<recurrent>_l<k>
    feeds_output: bool = False  # the recurrence runs through the decoder (the whole stack at once)

    @property
    def kernels(self):
        """The cell's kernel module (imports Numba on first use)."""
        return importlib.import_module(f"{__package__}.{self.name}")

    def forward(self, *arrays):
        """The serial reference forward. Per-layer cells: (xp, W_hh, b_hh, s0) -> (hs, sT, cache);
        a cell that ``feeds_output`` takes and returns the whole stack (see its kernel file)."""
        _check(*arrays)
        out = getattr(self.kernels, f"{self.name}_forward")(*arrays)
        return out if self.feeds_output else (out[0], out[1], tuple(out[2:]))

    def backward(self, *arrays):
        """The serial reference backward. Per-layer cells: (dh_out, dsT, W_hh, hs, cache) ->
        (dxp, dW_hh, db_hh, ds0); a cell that ``feeds_output``: see its kernel file."""
        if not self.feeds_output:
            *arrays, cache = arrays
            arrays = (*arrays, *cache)
        _check(*arrays)
        return getattr(self.kernels, f"{self.name}_backward")(*arrays)

    def cache_shapes(self, T: int, B: int, H: int) -> dict:
        """Shapes of the cache arrays the layer kernels take, in their argument order (kernels/
        layer.py): (0, 0, 0) for those this cell does not use."""
        shapes = {"gates": (T, B, self.gates * H), "cs": (T + 1, B, H), "hn": (T, B, H)}
        return {name: shapes[name] if name in self.cache else (0, 0, 0) for name in LAYER_CACHE}

    def state_grads(self, dh_out, dxp, W_hh, cache):
        """Total dL/dh_s (T, B, H) float64 of a per-layer cell: the part from above at step s plus
        what step s+1 sends back, rebuilt from the backward's gate gradients dxp (inspect)."""
        return getattr(self.kernels, f"{self.name}_state_grads")(dh_out, dxp, W_hh, cache)


LAYER_CACHE = ("gates", "cs", "hn")   # the cache arrays of kernels/layer.py, in its argument order

CELLS = {c.name: c for c in (
    Cell("lstm", 0, 4, 2, "ifgo", "LSTM", cache=("gates", "cs"), forget_gate=1),
    Cell("gru", 1, 3, 1, "rzn", "GRU", cache=("gates", "hn")),
    Cell("rnn", 2, 1, 1, "h", "RNN"),                       # Elman, tanh
    Cell("jordan", 3, 1, 1, "h", "", recurrent="yh", feeds_output=True),  # output fed back
)}
CELL_IDS = {name: c.id for name, c in CELLS.items()}


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {', '.join(CELLS)}") from None


def _check(*arrays):
    """Every array of one kernel call float32 or float64, one dtype, C-contiguous: a mismatch would
    otherwise silently compile a slow or wrong specialisation."""
    import numpy as np

    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"kernels take float32 or float64 arrays, got {dtype}")
    for a in arrays:
        if a.dtype != dtype:
            raise TypeError(f"all arrays of one kernel call must share a dtype: {a.dtype} != {dtype}")
        if not a.flags.c_contiguous:
            raise ValueError("kernel arrays must be C-contiguous (np.ascontiguousarray)")
