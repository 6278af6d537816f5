"""The streams a rank owns, and random draws that are made for the whole batch.

Rank r of N owns streams [r*B//N, (r+1)*B//N) of the global batch of B: contiguous blocks in
rank order, so that concatenating the ranks' columns gives the batch one process would train
on. A dropout mask is one row per stream; each rank draws the rows of all B streams from the
shared generator (seeded alike, advanced alike on every rank) and keeps its block, so its
masks are the ones a single process would use for those streams, and the generators of all
ranks stay in step.
"""
from __future__ import annotations

import numpy as np


def block(batch: int, rank: int, size: int) -> tuple[int, int]:
    """[begin, end) of the streams rank ``rank`` of ``size`` owns in a batch of ``batch``."""
    return rank * batch // size, (rank + 1) * batch // size


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
