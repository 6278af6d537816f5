"""Id arrays that may be too big for memory: written in pieces, read back in blocks.

An ``IdSink`` collects id arrays in memory, or appends them to a file that comes back as a
read-only ``np.memmap``; ``blocks`` walks an (possibly mapped) array BLOCK ids at a time, so
scanning or remapping a corpus never loads it whole.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import CorpusError

BLOCK = 1 << 22          # ids processed at a time when scanning (possibly mapped) id arrays


class IdSink:
    """Collects id arrays in memory, or appends them to ``workdir/name.ids`` and maps that."""

    def __init__(self, dtype, workdir=None, name=""):
        self.dtype, self.parts, self.n = np.dtype(dtype), [], 0
        self.path = os.path.join(workdir, name + ".ids") if workdir else None
        try:
            self.file = open(self.path + ".tmp", "wb") if self.path else None
        except OSError as e:
            raise CorpusError(f"cannot write {self.path}: {e.strerror or e}") from None

    def add(self, ids):
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        self.n += len(ids)
        if self.file:
            self.file.write(ids.data)
        else:
            self.parts.append(ids)

    def finish(self) -> np.ndarray:
        if self.file is None:
            ids = np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)
            ids.flags.writeable = False
            return ids
        self.file.close()
        # replace, never overwrite: a map of an older file in the same cache stays valid
        os.replace(self.path + ".tmp", self.path)
        if self.n == 0:  # an empty file cannot be mapped
            return np.zeros(0, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n,))


def copy_ids(src, lut, sink: IdSink) -> np.ndarray:
    """``src`` through the lookup table ``lut`` (old id -> new id; None = unchanged) into ``sink``."""
    for block in blocks(src):
        sink.add(lut[block] if lut is not None else block)
    return sink.finish()


def blocks(ids):
    """``ids`` as in-memory arrays of at most BLOCK ids each."""
    for start in range(0, len(ids), BLOCK):
        yield np.asarray(ids[start:start + BLOCK])


def count_ids(ids, value) -> int:
    """How many of ``ids`` equal ``value``."""
    return sum(int(np.count_nonzero(block == value)) for block in blocks(ids))
