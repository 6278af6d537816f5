"""Long-range memory text: each line's last character depends on one exactly d characters earlier.

Each line is an opening bracket, d − 2 random filler letters, a cue, and the matching closer:

    (fcjbhaeg:)        d = 10: the closer sits exactly d characters after its opener
    <ba:>              d = 4

The filler is drawn independently of the opener, so nothing between the two says which closer is
due; the cue says *when* (otherwise the model would also have to count, and its accuracy would
mix two skills). After the cue the closer is determined: a model that remembers the opener gets it
right every time, one that does not can do no better than 1 / len(OPENERS) = 25 %.

This is the built-in ``memory`` corpus; ``charlm inspect memory`` (charlm.inspect.memory) trains
cells on it and scores the closers.
"""
import numpy as np

from charlm.errors import CorpusError

OPENERS = "([{<"
CLOSERS = ")]}>"
FILLER = "abcdefghij"
CUE = ":"
DISTANCES = (2, 4, 8, 16, 32, 64)


def memory_lines(distances, seed: int = 0, *, shuffle: bool = True) -> list[str]:
    """One line (without newline) per entry of ``distances``: opener, d − 2 filler, cue, closer."""
    rng = np.random.default_rng(seed)
    distances = [int(d) for d in distances]
    if any(d < 2 for d in distances):
        raise CorpusError("every distance must be >= 2 (opener, cue, closer)")
    if shuffle:
        distances = [distances[i] for i in rng.permutation(len(distances))]
    kinds = rng.integers(0, len(OPENERS), len(distances))
    lines = []
    for d, k in zip(distances, kinds):
        lines.append(OPENERS[k] + _filler(d - 2, rng) + CUE + CLOSERS[k])
    return lines


# The filler is an order-1 Markov chain: letter i is followed by i+1, i+3 or i+7 (mod 10) with
# probabilities 0.6, 0.3, 0.1. Predicting it means reading it, so the model cannot simply learn to
# ignore the filler: its state keeps being pushed around by input while it must hold the opener.
_STEPS = np.array([1, 3, 7])
_CUM = np.array([0.6, 0.9, 1.0])


def _filler(n: int, rng) -> str:
    if n <= 0:
        return ""
    out = np.empty(n, np.int64)
    out[0] = rng.integers(0, len(FILLER))
    steps = _STEPS[np.searchsorted(_CUM, rng.random(n - 1), side="right")]
    out[1:] = steps
    out = np.cumsum(out) % len(FILLER)
    return "".join(FILLER[i] for i in out)


def memory_text(n_lines: int = 20_000, distances=DISTANCES, seed: int = 0) -> str:
    """``n_lines`` lines with d drawn uniformly from ``distances``; the built-in ``memory`` corpus."""
    if isinstance(n_lines, bool) or not isinstance(n_lines, int) or n_lines < 0:
        raise CorpusError(f"n_lines must be an integer >= 0, got {n_lines!r}")
    if len(distances) == 0:
        raise CorpusError("distances must name at least one distance")
    rng = np.random.default_rng(seed)
    ds = np.asarray(distances)[rng.integers(0, len(distances), n_lines)]
    return "".join(line + "\n" for line in memory_lines(ds, seed=seed + 1, shuffle=False))
