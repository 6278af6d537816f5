"""A classifier's or tagger's batch split across ranks (charlm/distributed/) as one process trains it.

The model sorts a batch by length (longest first, stable) before it runs, and draws its dropout
masks in that order, T = the longest length steps deep. A rank's block is therefore cut from
the batch sorted the same way: its sequences then keep, among themselves, the order they have
in the whole batch, and a block's masks are the part of the whole batch's masks that falls on
its sequences, its first T_block steps. ``BlockDraws`` hands the model exactly that part: it
knows the order and the axes of the draws the model makes (``draw_plan``), draws each for the
whole batch from the shared generator (advanced alike on every rank) and keeps the block's part.
A draw the plan does not expect is an error, never a silently different run.

The loss is a mean over sequences (classify) or over tokens (tag): a block's share of the batch
is its rows or its tokens. Lazy Adam moves the table rows a batch touched: each rank sends the
rows its block touched as a 0/1 mask over all table rows, summed with the gradient.
"""
from __future__ import annotations

import numpy as np

from .wide import bag


def sort_batch(batch):
    """The batch ordered as the model orders it (longest first, ties in batch order)."""
    ids, lengths, targets = batch
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return ids[:, order], lengths[order], targets[order] if targets.ndim == 1 else targets[:, order]


def block_of(batch, b0: int, b1: int):
    """Columns b0..b1 of a sorted batch, its ids cut to the block's longest length."""
    ids, lengths, targets = batch
    T = int(lengths[b0:b1].max())
    cut = (lambda a: np.ascontiguousarray(a[b0:b1])) if targets.ndim == 1 else \
        (lambda a: np.ascontiguousarray(a[:T, b0:b1]))
    return np.ascontiguousarray(ids[:T, b0:b1]), lengths[b0:b1].copy(), cut(targets)


def share(batch, b0: int, b1: int, task: str) -> float:
    """The block's weight in the batch's mean loss: its sequences (classify) or tokens (tag)."""
    lengths = batch[1]
    if task == "classify":
        return (b1 - b0) / len(lengths)
    return float(lengths[b0:b1].sum()) / float(lengths.sum())


def draw_plan(config) -> list[str]:
    """The model's random draws of one training pass, in order (model.py, bidir.py): the axes of
    each, t steps, b sequences, n n-gram orders, f features; ``bag`` the wide path's grams."""
    plan = []
    if config.input_dropout:
        plan += ["tb"] + (["ntb"] if config.ngrams else [])
    if config.dropout:
        plan += ["tbf"] * (config.layers - 1) + ["bf" if config.task == "classify" else "tbf"]
    if config.wide_ngrams and config.wide_dropout:
        plan.append("bag")
    return plan


class BlockDraws:
    """The random generator a block's forward pass draws from (see the module docstring)."""

    def __init__(self, generator, batch, b0: int, b1: int, config):
        self.generator, self.batch, self.b0, self.b1, self.config = generator, batch, b0, b1, config
        self.plan = draw_plan(config)
        self.T = int(batch[1].max())
        self.T_block = int(batch[1][b0:b1].max())

    def random(self, shape):
        if not self.plan:
            raise RuntimeError(f"the model drew {shape} beyond its draw plan (seqtask/blocks.py)")
        kind = self.plan.pop(0)
        whole, keep = self._whole(kind, tuple(shape)[-1] if kind in ("bf", "tbf") else None)
        part = self.generator.random(whole)[keep]
        if part.shape != tuple(shape):
            raise RuntimeError(f"the model drew {shape} where its draw plan has {kind} {part.shape} (seqtask/blocks.py)")
        return part

    def finish(self) -> None:
        """Check that the pass drew its whole plan (the generator is where the whole batch leaves it)."""
        if self.plan:
            raise RuntimeError(f"the model left draws {self.plan} of its plan undrawn (seqtask/blocks.py)")

    def _whole(self, kind: str, width):
        """(shape of the whole batch's draw, index of the block's part)."""
        B, T, t, b = len(self.batch[1]), self.T, slice(0, self.T_block), slice(self.b0, self.b1)
        if kind == "tb":
            return (T, B), (t, b)
        if kind == "ntb":
            return (max(self.config.ngrams - 1, 0), T, B), (slice(None), t, b)
        if kind == "tbf":
            return (T, B, width), (t, b)
        if kind == "bf":
            return (B, width), (b,)
        ids, lengths, _ = self.batch
        c = self.config
        _, rows = bag(ids[:T], lengths, c.vocab_size, c.wide_ngrams, c.wide_buckets)
        return rows.shape, ((rows >= self.b0) & (rows < self.b1),)

    def __getattr__(self, name):
        return getattr(self.generator, name)


def touched_mask(layout, rows) -> np.ndarray:
    """1 at every table row in ``rows`` (one array per table of ``layout``), over all tables' rows."""
    sizes = [K for _, K, _ in layout.tables]
    mask = np.zeros(sum(sizes))
    offset = 0
    for K, r in zip(sizes, rows or []):
        mask[offset + r] = 1.0
        offset += K
    return mask


def mask_rows(layout, mask: np.ndarray) -> list[np.ndarray]:
    """The rows of each table marked in ``mask`` (touched_mask's layout, summed over ranks)."""
    rows, offset = [], 0
    for _, K, _ in layout.tables:
        rows.append(np.flatnonzero(mask[offset:offset + K] > 0))
        offset += K
    return rows
