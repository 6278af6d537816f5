"""An exponential moving average of the weights (Polyak averaging), the model that is evaluated
and saved while training goes on with the raw weights.

After each optimiser step: avg += (1 - d_t) * (w - avg), with d_t = min(decay, (1 + t) / (10 + t))
at step t, so that the average forgets its random start within the first few dozen steps
(TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``,
https://www.tensorflow.org/api_docs/python/tf/train/ExponentialMovingAverage). Late in a run the
weights wander around a minimum; the average sits nearer its middle.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np


class WeightAverage:
    """The average of a flat weight buffer; ``decay`` 0 means none (every method does nothing)."""

    def __init__(self, decay: float, flat: np.ndarray):
        self.decay = decay
        self.average = flat.copy() if decay else None
        self._scratch = np.empty_like(flat) if decay else None

    def update(self, flat: np.ndarray, step: int) -> None:
        """Fold in the weights after optimiser step ``step`` (0-based)."""
        if self.average is None:
            return
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        np.subtract(flat, self.average, out=self._scratch)       # in place: no temporaries per step
        self._scratch *= 1.0 - d
        self.average += self._scratch

    @contextmanager
    def applied(self, flat: np.ndarray):
        """The block sees the averaged weights in ``flat``; the raw ones come back afterwards."""
        if self.average is None:
            yield
            return
        raw = flat.copy()
        flat[...] = self.average
        try:
            yield
        finally:
            flat[...] = raw

    def state(self) -> dict:
        return {} if self.average is None else {"weight_average": self.average}

    def load_state(self, arrays: dict) -> None:
        """From ``state()`` as saved; a missing or misshapen average is a KeyError."""
        if self.average is None:
            return
        saved = arrays["weight_average"]
        if saved.shape != self.average.shape:
            raise KeyError("weight_average")
        self.average[...] = saved
