"""Where a training or evaluation step takes its arrays from.

A step of a large model fills hundreds of MB of caches and buffers; fresh arrays every step would
page all of it in again. ``Workspace`` keeps named arrays between steps and reallocates one only
when its shape or dtype changes; ``Scratch`` hands out fresh ones, for the public forward/backward
whose callers may keep what they get.
"""
import numpy as np


class Scratch:
    """Fresh arrays every time."""

    def get(self, name, shape, dtype):
        return np.empty(shape, dtype)

    def zeros(self, name, shape, dtype):
        return np.zeros(shape, dtype)


class Workspace(Scratch):
    """Named arrays kept between calls and reallocated only when a shape changes."""

    def __init__(self):
        self.arrays = {}

    def get(self, name, shape, dtype):
        a = self.arrays.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self.arrays[name] = np.empty(shape, dtype)
        return a

    def zeros(self, name, shape, dtype):
        a = self.get(name, shape, dtype)
        a[...] = 0
        return a
