"""Batches for training and evaluation over a 1-D id stream.

``StreamBatcher`` cuts B contiguous streams into windows of T for truncated BPTT, so the hidden
state of each stream carries from one window to the next; ``sequential_windows`` walks the
whole stream once, in order, for an exact evaluation pass. ``EpochPosition`` is where any
batcher stands in its epochs (labelled.LineBatcher draws whole lines instead of windows).
"""
from __future__ import annotations

import numpy as np

from ..errors import CheckpointError, ConfigError


def check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")


class EpochPosition:
    """The next batch's index within the epoch and the completed epochs: checked when set, saved
    and restored for an exact resume. ``windows_per_epoch`` is the subclass's."""

    windows_per_epoch: int
    _position = 0
    _epoch = 0

    @property
    def position(self) -> int:
        """Index of the next window within the epoch."""
        return self._position

    @position.setter
    def position(self, value: int):
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value < self.windows_per_epoch:
            raise ConfigError(f"position must be an integer in [0, {self.windows_per_epoch}), "
                              f"got {value!r}")
        self._position = value

    @property
    def epoch(self) -> int:
        """Completed passes over the data."""
        return self._epoch

    @epoch.setter
    def epoch(self, value: int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"epoch must be an integer >= 0, got {value!r}")
        self._epoch = value

    def advance(self) -> None:
        """One batch taken: the next position, or the next epoch's first."""
        self._position += 1
        if self._position == self.windows_per_epoch:
            self._position, self._epoch = 0, self._epoch + 1

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, d: dict):
        try:
            epoch, position = d["epoch"], d["position"]
            self.epoch, self.position = epoch, position
        except (KeyError, TypeError, ConfigError) as e:
            raise CheckpointError(f"batcher state {d!r} does not fit this corpus "
                                  f"({self.windows_per_epoch} windows per epoch): {e}") from None


class StreamBatcher(EpochPosition):
    """B contiguous streams cut into windows of T for truncated BPTT (torch-rnn's DataLoader).

    Stream b covers ids[b*n : (b+1)*n + 1] with n = (N - 1) // B, so the hidden state of
    column b can be carried from one window to the next. Window w gives
    x[t, b] = ids[b*n + w*T + t] and y[t, b] = ids[b*n + w*T + t + 1]. There are n // T windows
    per epoch; the last partial window (and the < B leftover tokens) are dropped.
    """

    def __init__(self, ids, batch_size: int, seq_len: int):
        check_positive(batch_size=batch_size, seq_len=seq_len)
        n_ids = len(ids)
        self.ids = ids if isinstance(ids, np.ndarray) else np.asarray(ids)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.n = (n_ids - 1) // batch_size if n_ids > 1 else 0  # tokens per stream
        self.windows_per_epoch = self.n // seq_len
        if self.windows_per_epoch < 1:
            fits = (n_ids - 1) // seq_len
            hint = (f"the largest batch_size that fits is {fits}" if fits else
                    f"even batch_size 1 needs seq_len <= {max(n_ids - 1, 0)}")
            raise ConfigError(
                f"the training text has {n_ids} tokens, too few for one window of batch_size "
                f"{batch_size} x seq_len {seq_len} (needs {batch_size * seq_len + 1}); {hint}")
        # (T+1, B) offsets of one window relative to its start
        self._grid = np.arange(seq_len + 1)[:, None] + np.arange(batch_size)[None, :] * self.n
        self._position, self._epoch = 0, 0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """x, y: (T, B) int64, time-major; y is x shifted one token ahead."""
        window = np.asarray(self.ids[self._grid + self._position * self.seq_len], np.int64)
        self.advance()
        return window[:-1], window[1:]


def sequential_windows(ids, seq_len: int):
    """Yield x, y of shape (T', 1) int64 covering ``ids`` once, in order: every id but the first
    is a target exactly once. T' = seq_len except for the shorter last window. For an exact
    full evaluation pass with the state carried across windows."""
    check_positive(seq_len=seq_len)
    n = len(ids)
    for start in range(0, n - 1, seq_len):
        chunk = np.asarray(ids[start:min(start + seq_len, n - 1) + 1], np.int64)
        yield chunk[:-1, None], chunk[1:, None]
