"""Random draws made for a whole batch of streams, of which a caller may keep one block.

A dropout mask has one row per stream. When one process trains only a block of the batch's
streams (a rank of ``mpiexec``, charlm/distributed/), it still draws the rows of every stream
from the shared seeded generator and keeps its block, so its masks are the ones a single process
would use for those streams and the generators of all processes stay in step. The model calls
``stream_uniform`` for every per-stream draw; alone it is ``rng.random``.
"""
from __future__ import annotations

import numpy as np


class BlockRandom:
    """A ``numpy.random.Generator`` for the forward pass of one block of streams.

    ``streams(shape, axis)`` draws uniforms of ``shape`` with its stream axis widened to the
    global batch and returns this block's slice; every other draw (DropConnect's W_hh mask,
    shared by all streams) goes to the generator unchanged."""

    def __init__(self, generator: np.random.Generator, begin: int, end: int, batch: int):
        self.generator, self.begin, self.end, self.batch = generator, begin, end, batch

    def streams(self, shape: tuple[int, ...], axis: int) -> np.ndarray:
        full = list(shape)
        full[axis] = self.batch
        index = [slice(None)] * len(shape)
        index[axis] = slice(self.begin, self.end)
        return self.generator.random(tuple(full))[tuple(index)]

    def __getattr__(self, name):
        return getattr(self.generator, name)


def stream_uniform(rng, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """U[0, 1) of ``shape`` whose axis ``axis`` runs over streams: drawn for the global batch
    when ``rng`` is a ``BlockRandom``, else straight from the generator."""
    return rng.streams(shape, axis) if isinstance(rng, BlockRandom) else rng.random(shape)
