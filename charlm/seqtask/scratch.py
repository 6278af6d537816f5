"""Arrays a training step reuses from the step before instead of allocating them afresh.

An ensemble's stacked layers hold every member's states and gate caches at once: arrays of
several MB each, which the C allocator hands out as fresh pages and returns to the system when
they are freed, so every step page-faults them in again (kernel time, and cold caches). A
``Scratch`` keeps one buffer per key, grown to the largest size asked for, and returns a view of
its first elements shaped as asked. A view is valid until the same key is asked for again: the
caller (one training step at a time) must not keep it past that.
"""
from __future__ import annotations

import math

import numpy as np


class Scratch:
    def __init__(self):
        self._buffers: dict = {}

    def empty(self, key, shape, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused under ``key``."""
        dtype, n = np.dtype(dtype), math.prod(shape)
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = self._buffers[key] = np.empty(n, dtype)
        return buf[:n].reshape(shape)


def allocator(scratch: Scratch | None, prefix):
    """``empty(name, shape, dtype)``: from ``scratch`` under (prefix, name), or a new array."""
    if scratch is None:
        return lambda name, shape, dtype: np.empty(shape, dtype)
    return lambda name, shape, dtype: scratch.empty((prefix, name), shape, dtype)
