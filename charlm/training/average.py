"""Weight averaging over the tail of the budget: the uniform mean of the weights the last part of
training visits (stochastic weight averaging), which evaluations and the best model use.

The loop takes a snapshot of ``model.flat`` every ``every`` steps once the fraction of the budget
done reaches ``1 - fraction`` (``Loop.progress``: steps, epochs or time alike) and keeps their
running mean; training itself always continues on the raw weights. ``every`` keeps averaging a
small share of a step (``snapshot_every``). The mean and its count are part of the exact-resume
checkpoint; several ranks hold equal weights, so their means are equal too.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from ..errors import CheckpointError

ARRAY = "weight_average"        # the mean's name among last.safetensors' training-state arrays
DENSE_MAX = 1 << 22             # models up to this many weights take a snapshot at every step
SNAPSHOT_WEIGHTS = 1 << 18      # larger ones: weights averaged per step (amortised) at most


def snapshot_every(size: int) -> int:
    """Steps between snapshots for a model of ``size`` weights. A step of a model up to
    ``DENSE_MAX`` weights updates them all (Adam reads and writes more per weight than a snapshot
    does), so a snapshot at every step costs little beside it; the models beyond are those of
    hashed n-gram tables, of which a step updates a few rows, and a snapshot of every weight
    would cost a large share of the step: they take one every size / SNAPSHOT_WEIGHTS steps."""
    return 1 if size <= DENSE_MAX else math.ceil(size / SNAPSHOT_WEIGHTS)


class WeightAverage:
    """The running mean of ``flat``'s snapshots over the last ``fraction`` of the budget (0: off)."""

    def __init__(self, fraction: float, size: int, dtype):
        self.fraction, self.size, self.dtype = float(fraction), int(size), np.dtype(dtype)
        self.every = snapshot_every(self.size)
        self.mean = None     # allocated at the first snapshot
        self.count = 0

    @property
    def on(self) -> bool:
        return self.fraction > 0

    def due(self, step: int, progress: float) -> bool:
        return self.on and step % self.every == 0 and progress >= 1.0 - self.fraction

    def update(self, flat: np.ndarray, step: int, progress: float) -> None:
        """After step ``step``, at ``progress`` of the budget: add ``flat`` to the mean if a snapshot
        is due. Before the tail there is no mean: a budget grown on resume starts its tail afresh."""
        if progress < 1.0 - self.fraction:
            self.mean, self.count = None, 0
        if not self.due(step, progress):
            return
        self.count += 1
        if self.mean is None:
            self.mean = flat.copy()
            return
        from ..kernels.update import average_pass

        average_pass(self.mean, flat.reshape(-1), 1.0 / self.count)   # mean += (flat - mean) / count

    @contextmanager
    def swapped_in(self, flat: np.ndarray):
        """``flat`` holds the mean inside the block (when there is one) and its own values again after."""
        if self.mean is None:
            yield
            return
        raw = flat.copy()
        flat[...] = self.mean
        try:
            yield
        finally:
            flat[...] = raw

    # -- checkpoint ----------------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict]:
        """(arrays, metadata) of the mean for last.safetensors; nothing when there is no mean."""
        if self.mean is None:
            return {}, {}
        return {ARRAY: self.mean}, {"count": self.count, "every": self.every}

    def restore(self, arrays: dict, meta: dict | None, path) -> None:
        """The mean saved in a last checkpoint (``arrays`` and ``meta`` as ``state`` gave them)."""
        mean = arrays.get(ARRAY)
        if mean is None or not meta:
            return   # none was kept yet (or the run did not average): it starts when due
        try:
            count, every = int(meta["count"]), int(meta["every"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: weight average state is malformed ({type(e).__name__})") from None
        if mean.shape != (self.size,) or count < 1 or every != self.every:
            raise CheckpointError(f"{path}: weight average does not match the model")
        self.mean, self.count = np.array(mean, dtype=self.dtype), count
