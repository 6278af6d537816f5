"""Choosing a run's recipe for its time budget, for every task: a ladder of candidate recipes,
cheapest first, each timed on this machine by a few real training steps, and the richest one
whose predicted work in the budget is still enough for it.

A task brings its ladder and its rule of "enough" (the language model: tokens per parameter,
lm/autoconfig.py; classifiers and taggers: epochs per ensemble member or tokens per parameter,
seqtask/recipe.py), and its memory estimate (its footprint module) says which candidates fit.
What is chosen, why, and which settings the user gave (and so were kept) is one ``Choice``,
stored in the run and shown as its "chosen" line.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

PROBE_STEPS = 4             # timed steps per candidate (after one untimed step); their median is the rate


@dataclass(frozen=True)
class Choice:
    values: dict                                   # field -> value chosen (only fields not given)
    reason: str                                    # one line for the terminal
    rates: dict = field(default_factory=dict)      # candidate -> probed training tokens per second
    probe_seconds: float = 0.0
    given: tuple = ()                              # settings the user gave, which the choice kept

    def to_dict(self) -> dict:
        return {"values": self.values, "reason": self.reason,
                "rates": {str(k): round(v, 1) for k, v in self.rates.items()},
                "probe_seconds": round(self.probe_seconds, 3), "given": list(self.given)}


def climb(ladder, fits, enough):
    """The richest rung of ``ladder`` (cheapest first) reached by walking up while each rung fits
    in memory (``fits``) and the budget gives it what it needs (``enough``); the walk stops at the
    first rung that does not, since the richer ones cost more still. The first rung is the floor,
    kept even when the budget is short; None when not even it fits. ``enough`` is called on every
    rung reached that fits (it may record what it measured)."""
    best = None
    for rung in ladder:
        if not fits(rung):
            break
        ok = enough(rung)
        if ok or best is None:
            best = rung
        if not ok:
            break
    return best


def step_seconds(step, steps: int = PROBE_STEPS) -> float:
    """Median seconds of ``steps`` calls of ``step()``, after one untimed call (which loads the
    compiled kernels and sizes the workspaces). The median, not the fastest: a training loop's
    steps scatter above the fastest one on a shared machine, and the work predicted should be
    the work the run will do."""
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])
