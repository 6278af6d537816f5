"""Numba kernels: a step pair per recurrent cell, the layer kernels that drive them, the fused loss,
the sampling loop; and the cell table (cells.py) that says which cell is which.

Importing this package imports nothing heavy and changes nothing process-wide: the table is
plain Python, and the kernel modules (and Numba, which takes a noticeable part of a second) load
when one of their names is first used. Every kernel is ``@njit(cache=True)``, compiled per dtype
(float32 for training, float64 for gradient checks) on first use and then loaded from Numba's
on-disk cache.

Shapes, layouts and gate orders are PyTorch's (see each cell's module docstring).
"""
import importlib

from .cells import CELL_IDS, CELLS, Cell, get_cell

# name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "cross_entropy_grad": "loss", "cross_entropy_rows": "loss",
    "jordan_forward": "jordan", "jordan_backward": "jordan", "jordan_weight_grads": "jordan",
    "layer_forward": "layer", "layer_backward": "layer",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["CELL_IDS", "CELLS", "Cell", "get_cell", *_LAZY]
