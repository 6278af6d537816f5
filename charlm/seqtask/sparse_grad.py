"""A flat gradient that is dense in a few spans and row-sparse in the hashed tables.

Most of a sequence model's parameters sit in hashed lookup tables (the n-gram embeddings, the
wide path's buckets x labels table; an ensemble has one set per member), and a batch touches a
few thousand of their rows. The gradient of every other row is zero, so zeroing the gradient,
dividing it, measuring its norm and clipping it need only the dense spans (the encoder, the head,
the token embedding) and the touched rows: each step then costs what the batch uses, not the size
of the tables.

``GradLayout`` says where the flat buffer holds what; ``rows`` is a list aligned with its tables,
the distinct row ids each table's gradient holds this step (the model's ``touched``). Everything
outside the dense spans and those rows must be zero: the model keeps it so by zeroing, before each
backward pass, only what the previous one wrote.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GradLayout:
    dense: tuple[tuple[int, int], ...]        # [start, stop) spans of the flat buffer, every element live
    tables: tuple[tuple[int, int, int], ...]  # (start, K rows, D width) of each row-sparse table

    @classmethod
    def of(cls, shapes, table_names) -> "GradLayout":
        """The layout of parameters stored one after another in ``shapes`` order ((name, shape)
        pairs); the ones named in ``table_names`` are row-sparse tables, adjacent others merge."""
        dense, tables, offset = [], [], 0
        for name, shape in shapes:
            n = math.prod(shape)
            if name in table_names:
                tables.append((offset, shape[0], n // shape[0]))
            elif dense and dense[-1][1] == offset:
                dense[-1] = (dense[-1][0], offset + n)
            else:
                dense.append((offset, offset + n))
            offset += n
        return cls(tuple(dense), tuple(tables))

    @classmethod
    def joined(cls, layouts, offsets) -> "GradLayout":
        """Layouts of consecutive slices of one buffer (an ensemble's members), as one."""
        return cls(tuple((a + o, b + o) for lay, o in zip(layouts, offsets) for a, b in lay.dense),
                   tuple((s + o, k, d) for lay, o in zip(layouts, offsets) for s, k, d in lay.tables))

    def entries(self, rows, piece: int = 1 << 14, chunk: int = 256):
        """What a parallel pass over the live part of the buffer visits (row_kernels.lazy_adam):
        pieces (P, 2), the dense spans cut into [start, end) of at most ``piece`` elements; the
        tables (T, 3) as (start, K, D); the listed rows of all tables one after another (rows[i]
        of table i, int64); chunks (Q, 3) (table, lo, hi), those rows in runs of at most ``chunk``.
        Enough pieces and chunks to spread over the threads, each long enough for a vector loop."""
        pieces = np.array([(a, min(a + piece, b)) for lo, b in self.dense for a in range(lo, b, piece)],
                          np.int64).reshape(-1, 2)
        tables = np.array(self.tables, np.int64).reshape(-1, 3)
        chunks, offset = [], 0
        for t, r in enumerate(rows):
            chunks += [(t, lo, min(lo + chunk, offset + len(r))) for lo in range(offset, offset + len(r), chunk)]
            offset += len(r)
        flat = np.concatenate([np.asarray(r, np.int64) for r in rows]) if len(rows) else np.zeros(0, np.int64)
        return pieces, tables, flat, np.array(chunks, np.int64).reshape(-1, 3)

    def table(self, flat: np.ndarray, i: int) -> np.ndarray:
        """Table i of ``flat`` (or of a buffer shaped as it: a gradient, a moment) as a (K, D) view."""
        start, K, D = self.tables[i]
        return flat[start:start + K * D].reshape(K, D)


def zero(grad: np.ndarray, layout: GradLayout, rows) -> None:
    """Zero the dense spans and the listed rows (the whole gradient, when nothing else was
    written), in one pass across the threads."""
    from .row_kernels import zero_rows

    zero_rows(grad, *layout.entries(rows))


def divide(grad: np.ndarray, layout: GradLayout, rows, divisor) -> None:
    """grad /= divisor, element for element as the dense division (the other rows are zero), in
    one pass across the threads."""
    from .row_kernels import divide_rows

    divide_rows(grad, *layout.entries(rows), divisor)


def sum_squares(grad: np.ndarray, layout: GradLayout, rows) -> float:
    """sum(grad ** 2) in float64, read from the dense spans and the listed rows only."""
    from ..kernels.update import sum_squares as span_sum_squares
    from .row_kernels import rows_sum_squares

    total = 0.0
    for a, b in layout.dense:
        total += float(span_sum_squares(grad[a:b]))
    for i, r in enumerate(rows):
        total += float(rows_sum_squares(layout.table(grad, i), r))
    return total


def clip_norm(grad: np.ndarray, layout: GradLayout, rows, max_norm: float) -> float:
    """charlm.optim.clip_grad_norm over dense spans and listed rows: rescale so that the global L2
    norm is at most ``max_norm`` (0: only measure), return the norm before clipping; a non-finite
    norm comes back unchanged (the caller skips the step). The norm is the full buffer's (the
    rest is zero), summed in another order, so it agrees to rounding, not bit for bit."""
    from ..optim import clip_factor
    from .row_kernels import rows_multiply

    norm = math.sqrt(sum_squares(grad, layout, rows))
    factor = clip_factor(norm, max_norm)
    if factor is not None:
        for a, b in layout.dense:
            grad[a:b] *= grad.dtype.type(factor)
        for i, r in enumerate(rows):
            rows_multiply(layout.table(grad, i), r, factor)
    return norm
