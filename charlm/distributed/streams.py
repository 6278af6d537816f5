"""The streams a rank owns, and random draws that are made for the whole batch.

Rank r of N owns streams [r*B//N, (r+1)*B//N) of the global batch of B: contiguous blocks in
rank order, so that concatenating the ranks' columns gives the batch one process would train
on. A dropout mask is one row per stream; each rank draws the rows of all B streams from the
shared generator (seeded alike, advanced alike on every rank) and keeps its block, so its
masks are the ones a single process would use for those streams, and the generators of all
ranks stay in step.
"""
from __future__ import annotations

from ..stream_random import BlockRandom, stream_uniform  # noqa: F401  (re-exported)


def block(batch: int, rank: int, size: int) -> tuple[int, int]:
    """[begin, end) of the streams rank ``rank`` of ``size`` owns in a batch of ``batch``."""
    return rank * batch // size, (rank + 1) * batch // size
