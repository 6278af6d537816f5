"""The cell table: one row per recurrent cell, the only place that says what a cell is.

Config validation, the model, sampling, bench and inspect read these rows; none of them asks
which cell it is. Reading the table imports nothing heavy (``charlm --help`` and config
validation read it): a row's kernels, and with them Numba, load on first use of ``kernels``.

A per-layer cell (one that feeds back its own hidden state) is its row and its file
``kernels/<name>.py``: the formulas at the top, and three functions the drivers call by name.
Every other loop is written once for all of them: the layer kernels (layer.py), which the language
model and the (bi)directional encoder of the sequence tasks run, are compiled per cell from
templates with the row's step functions bound in (per_cell.py), so a run compiles its own cell's
code only; the generation loop (generate.py) reaches a cell's step through dispatch.py, by the
row's ``id``.

    <name>_step(xp, bx, bias, b_hh, hW, h_prev, c_prev, h_next, c_next, gates, hn)
        one row of one step: all 1-d rows; xp the input projection (bx: an input bias not yet
        in it), hW = W_hh @ h_prev, bias the biases summed (or what xp lacks of them), b_hh
        alone; writes h_next (and c_next: the second state, when ``states`` = 2) and its cache
        rows (gates (G,), hn (H,); ``cache`` names the ones it uses).
    <name>_step_backward(dh_out, dh, dq, h_prev, h, c_prev, c, gates, hn, dxp, da, db, dbx)
        one row of one backward step: dh the gradient wrt h_t through W_hh from step t+1; dq the
        second carry (the gradient wrt c_t when ``states`` = 2, else one wrt h_t the cell keeps
        past the GEMM, e.g. the GRU's direct path; it starts at 0 and is added to dh0 at the
        end), both updated to step t-1's except dh, which the caller's GEMM then overwrites from
        da; dxp, da (G,) the gradients wrt the input projection and the recurrent
        pre-activation (one array unless ``input_apart``); db += da, and dbx += dxp when
        ``input_apart`` (else the caller copies db).
    <name>_state_grads(dh_out, dxp, W_hh, cache)
        plain NumPy for inspect: dL/dh_s in total, from the backward's dxp.

A cell that feeds its output back (Jordan) runs its whole stack in its own file
(``stack_forward``, ``stack_backward``, ``stack_state_grads``, ``<name>_feed`` for generation):
that recurrence runs through the decoder, so no per-layer driver fits it.

Adding a per-layer cell: its file and its row below; the tests' reference (tests/reference.py,
tests/serial_cells.py) and a PyTorch twin if there is one. Nothing else: the NumPy sampling loop
(generate_numpy.py) has twins of the built-in cells only, and hands any other cell to the compiled
loop from the first token.
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
    input_apart: bool = False   # the step needs its input and recurrent products apart (the GRU's
    #                             r * (W_hn h + b_hn)): generation does not sum them, and the backward
    #                             keeps the two gradients (dxp, da) apart

    @property
    def kernels(self):
        """The cell's kernel module (imports Numba on first use)."""
        return importlib.import_module(f"{__package__}.{self.name}")

    def forward(self, *arrays):
        """The serial forward of a cell that ``feeds_output`` (the whole stack: see its kernel
        file). Per-layer cells run in kernels/layer.py."""
        _check(*arrays)
        return getattr(self.kernels, f"{self.name}_forward")(*arrays)

    def backward(self, *arrays):
        """The serial backward of a cell that ``feeds_output`` (see its kernel file)."""
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
    Cell("gru", 1, 3, 1, "rzn", "GRU", cache=("gates", "hn"), input_apart=True),
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
