"""The training budget: how much of it is spent, when it ends, and when to evaluate.

A run may be bounded by optimiser steps, passes over the corpus (epochs) or wall-clock time;
the first one reached ends it, and with none given it trains for ``DEFAULT_TIME_BUDGET``, whatever
the task. ``progress`` is the
fraction of that budget done (the largest of the three fractions), which is what the learning-
rate schedule follows, so a cosine decay ends at ``min_lr`` on the last step of a ``--time``
run as it does on the last step of a ``--steps`` run.

Evaluation cadence (``TrainConfig.eval_every``): a number of steps (``"500"``), a duration
(``"30s"``, ``"5m"``), or ``"auto"``: about ``AUTO_EVALS`` evaluations spread evenly over the
budget, each one skipped while the evaluations so far would cost more than ``MAX_EVAL_SHARE``
of the training time since the previous one. A 3-minute and a 3-hour run both see a handful
of evaluations, and evaluation stays a small fraction of the run either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import parse_eval_every  # re-exported: the cadence is parsed where config is validated

AUTO_EVALS = 8          # evaluations per run with eval_every = "auto" (the last at the end)
DEFAULT_TIME_BUDGET = 300.0  # seconds of training when no budget is given, for every task
MAX_EVAL_SHARE = 0.02   # auto cadence: evaluation time / time between evaluations, at most (the final one comes on top)


@dataclass(frozen=True)
class Budget:
    steps: int = 0          # 0 = no step limit
    epochs: float = 0.0     # 0 = no epoch limit
    seconds: float = 0.0    # 0 = no time limit

    def __post_init__(self):
        if not (self.steps or self.epochs or self.seconds):  # none given: the default time
            object.__setattr__(self, "seconds", DEFAULT_TIME_BUDGET)

    @classmethod
    def of(cls, train_config) -> "Budget":
        t = train_config
        return cls(t.steps, t.epochs, t.time_budget)

    def progress(self, step: int, epoch: float, elapsed: float) -> float:
        """Fraction of the budget done, in [0, 1]: the largest fraction over the budgets set,
        since the first one reached stops training."""
        parts = [step / self.steps if self.steps else 0.0,
                 epoch / self.epochs if self.epochs else 0.0,
                 elapsed / self.seconds if self.seconds else 0.0]
        return min(1.0, max(parts))

    def reason(self, step: int, epoch: float, elapsed: float) -> str | None:
        """Why training stops now ("steps", "epochs", "time"), or None to go on."""
        if self.steps and step >= self.steps:
            return "steps"
        if self.epochs and epoch >= self.epochs:
            return "epochs"
        if self.seconds and elapsed >= self.seconds:
            return "time"
        return None


class EvalCadence:
    """Decides after each step whether to evaluate (and checkpoint) now.

    The state is derived from the position (progress, elapsed time), so a resumed run needs
    nothing saved: it continues at the next mark after its position."""

    def __init__(self, eval_every, progress: float = 0.0, elapsed: float = 0.0):
        self.kind, self.every = parse_eval_every(eval_every)
        self.last_elapsed = elapsed
        self.next_mark = self._mark_after(progress)
        self.eval_seconds = 0.0   # evaluation time spent in this process (auto: the cost cap)
        self.evals = 0

    @staticmethod
    def _mark_after(progress: float) -> float:
        return (math.floor(progress * AUTO_EVALS + 1e-9) + 1) / AUTO_EVALS

    def due(self, step: int, progress: float, elapsed: float) -> bool:
        if self.kind == "steps":
            return step % int(self.every) == 0
        if self.kind == "seconds":
            return elapsed - self.last_elapsed >= self.every
        if progress + 1e-12 < self.next_mark:
            return False
        if self.evals and self.eval_seconds / self.evals > MAX_EVAL_SHARE * (elapsed - self.last_elapsed):
            return False  # too expensive this often: wait for a later mark
        return True

    def record(self, progress: float, elapsed: float, eval_seconds: float) -> None:
        """An evaluation ended at ``elapsed`` (after it), having taken ``eval_seconds``."""
        self.last_elapsed = elapsed
        self.next_mark = self._mark_after(progress)
        self.eval_seconds += eval_seconds
        self.evals += 1

    def describe(self) -> str:
        if self.kind == "steps":
            return f"every {int(self.every):,} steps"
        if self.kind == "seconds":
            return f"every {self.every:g}s"
        return f"about {AUTO_EVALS} times (auto)"
