"""What the training loop reports (``Loop.events()``) and the position an exact resume needs.

The loop never prints: it yields these events and the CLI renders them. One set serves every
task: an evaluation carries the task's own scores and names the headline one that ranks them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TimeSplit:
    """Where the wall-clock time of a run went, in seconds, across resumes."""

    train: float = 0.0       # forward, backward and optimiser steps
    eval: float = 0.0        # validation passes
    checkpoint: float = 0.0  # writing checkpoints and metrics, and the sampling start state
    compile: float = 0.0     # first-use kernel compilation (not charged to the budget)

    def to_dict(self) -> dict:
        return {"train_s": round(self.train, 3), "eval_s": round(self.eval, 3),
                "checkpoint_s": round(self.checkpoint, 3), "compile_s": round(self.compile, 3)}

    @classmethod
    def from_dict(cls, d: dict) -> "TimeSplit":
        return cls(*(float(d.get(k, 0.0)) for k in ("train_s", "eval_s", "checkpoint_s", "compile_s")))


@dataclass
class StepEvent:
    step: int               # optimiser steps done so far
    epoch: float            # fractional epochs done
    loss: float             # training loss of this step
    grad_norm: float        # global gradient norm before clipping
    lr: float
    tokens_per_s: float     # of this step
    elapsed: float          # seconds of the budget spent so far (across resumes)
    progress: float = 0.0   # fraction of the budget done


@dataclass
class EvalEvent:
    step: int
    train_loss: float       # mean training loss since the previous evaluation
    scores: dict            # the task's scores (language model: val_loss, val_bpc, val_ppl; seq: loss, accuracy, ...)
    metric: str             # the headline score in ``scores``, the one shown first
    best: dict              # scores of the best evaluation so far (these, when improved)
    improved: bool
    elapsed: float
    epoch: float = 0.0
    held_out: bool = True   # False: there is no held-out data and the scores are on the training data
    eval_seconds: float = 0.0
    time_split: TimeSplit | None = None

    @property
    def value(self) -> float:
        return self.scores[self.metric]

    @property
    def best_value(self) -> float:
        return self.best[self.metric]


@dataclass
class CheckpointEvent:
    step: int
    path: Path
    best: bool              # this is the new best model


@dataclass
class DoneEvent:
    step: int
    reason: str             # "steps" | "epochs" | "time" | "stopped" | "diverged"
    best: dict | None       # scores of the best evaluation (None: none yet)
    elapsed: float
    run_dir: Path
    message: str = ""
    time_split: TimeSplit | None = None
    best_step: int = 0      # step of the best checkpoint (0: none written)
    metric: str = ""        # the headline score in ``best``

    @property
    def best_value(self) -> float:
        """The best headline score, NaN when there is none."""
        return float(self.best[self.metric]) if self.best and self.metric in self.best else math.nan

    def summary(self) -> dict:
        """What the run came to, JSON-able (a ``--json`` flag prints this)."""
        best = None if not self.best else {"metric": self.metric, "value": self.best_value,
                                           "step": self.best_step, "scores": self.best}
        return {"run_dir": str(self.run_dir), "reason": self.reason, "message": self.message,
                "steps": self.step, "seconds": round(self.elapsed, 3), "best": best,
                "time_split": None if self.time_split is None else self.time_split.to_dict()}


@dataclass
class SampleEvent:
    step: int
    text: str               # a short sample from the current weights (language model: sample_every)


@dataclass
class WarningEvent:
    step: int
    message: str


@dataclass
class Position:
    """Everything besides the task's weights, optimiser and data position that an exact resume needs."""

    step: int = 0
    elapsed: float = 0.0
    best: dict | None = None     # scores of the best evaluation
    best_step: int = 0
    bad_steps: int = 0
    train_loss_sum: float = 0.0
    train_loss_count: int = 0
    split: TimeSplit = field(default_factory=TimeSplit)
