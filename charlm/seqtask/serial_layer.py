"""The layer kernels compiled a second time, serial and without the GIL, for Python threads.

An ensemble's members train side by side on Python threads, one whole member per thread
(ensemble.py): each runs its recurrent layers with one block per direction, as the parallel
kernels do on one thread. The parallel kernels cannot serve them: Numba's workqueue threading
layer, which charlm runs on, refuses launches from two threads at once. The same Python functions
compiled without ``parallel`` (their ``prange`` loops become plain loops) and with ``nogil``
compute exactly what the parallel ones compute with one block per direction, and two of them run
at once. Each twin is a copy of the kernel's function under its own name: Numba's on-disk cache
keys a compiled function by its name and signature, not by its compile options, so a twin under
the original name would load the parallel build from the cache (or overwrite it).
"""
from __future__ import annotations

import types
from functools import cache

from numba import njit


def _renamed(fn, name: str):
    """``fn`` as a new function object called ``name`` (same code, globals and closure)."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = name
    twin.__module__ = fn.__module__
    twin.__doc__ = fn.__doc__
    return twin


@cache
def serial_twin(kernel):
    """The serial, GIL-free build of a parallel kernel (a Numba dispatcher), compiled on first use."""
    name = f"{kernel.py_func.__name__}_serial"
    return njit(cache=True, nogil=True, error_model="numpy")(_renamed(kernel.py_func, name))


def layer_kernels(serial: bool):
    """(layer_forward, layer_backward): the parallel kernels, or their serial twins."""
    from ..kernels.layer import layer_backward, layer_forward

    if not serial:
        return layer_forward, layer_backward
    return serial_twin(layer_forward), serial_twin(layer_backward)
