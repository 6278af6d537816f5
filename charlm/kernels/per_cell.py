"""Kernels compiled once per cell: plain-Python templates whose step calls are bound to one cell's
functions, each copy compiled and cached under its own name.

Why: a driver that reaches the step through the id chain (dispatch.py) has every cell's step and
step backward compiled into it, in each dtype it is called with; that was most of what a first run
on an empty cache spent compiling. A copy per cell compiles one cell's code, and only when that
cell is first used (a run of LSTM never compiles the GRU).

How: ``specialise`` makes, for each template, a new function with the template's code and a
globals dict of its own (the template module's names, plus the cell's bindings and the copies
made before it, so a driver calls its own cell's block function), named ``<template>_<cell>``,
and compiles it with ``njit(cache=True, ...)``. Not a closure over the step functions: Numba keys a
closure's cache entry by pickling what it closes over, and a compiled function pickles with an id
that is new in every process, so the entry would never be found again. Numba's cache file is
named after the function's qualified name, so each cell's copy has its own entries; like every
cached kernel, they are checked against the changes of the template's own file only.
"""
from __future__ import annotations

import types

from numba import njit

from .cells import CELLS


def per_layer_cell(cell_id: int):
    """The cell table's per-layer row with this id; ValueError for any other id."""
    for cell in CELLS.values():
        if cell.id == cell_id and not cell.feeds_output:
            return cell
    raise ValueError(f"no per-layer cell has id {cell_id!r}")


def specialise(cell, templates, bindings: dict, cache: bool = True) -> dict:
    """{template name: compiled copy for ``cell``}. ``templates`` are (function, njit options)
    pairs, callees before their callers; ``bindings`` the names the templates call that differ per
    cell (its step functions, its flags), which replace the module's placeholders. ``cache`` False
    for a copy whose bindings Numba's cache key would not tell apart (a profiler's clock)."""
    namespace = dict(templates[0][0].__globals__) | bindings
    built = {}
    for template, options in templates:
        fn = types.FunctionType(template.__code__, namespace, template.__name__, template.__defaults__)
        fn.__qualname__ = f"{template.__name__}_{cell.name}"
        fn.__doc__ = template.__doc__
        fn.__module__ = template.__module__
        built[template.__name__] = namespace[template.__name__] = njit(cache=cache, **options)(fn)
    return built
