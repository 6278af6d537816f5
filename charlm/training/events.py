"""What the training loop reports (``Trainer.events()``) and the position an exact resume needs.

The loop never prints: it yields these events and the CLI renders them.
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
    loss: float             # training loss of this step, nats per token
    grad_norm: float        # global gradient norm before clipping
    lr: float
    tokens_per_s: float     # of this step
    elapsed: float          # seconds of the budget spent so far (across resumes)


@dataclass
class EvalEvent:
    step: int
    train_loss: float       # mean training loss since the previous evaluation
    val_loss: float         # nats per token on the validation text (the training loss without one)
    val_bpc: float | None   # bits per character (character models)
    val_ppl: float          # perplexity per token
    best_val_loss: float
    improved: bool
    elapsed: float
    held_out: bool = True   # False: there is no validation text and val_loss is the training loss
    eval_seconds: float = 0.0
    time_split: TimeSplit | None = None


@dataclass
class CheckpointEvent:
    step: int
    path: Path
    best: bool              # this is the new best model


@dataclass
class DoneEvent:
    step: int
    reason: str             # "steps" | "epochs" | "time" | "stopped" | "diverged"
    best_val_loss: float
    elapsed: float
    run_dir: Path
    message: str = ""
    time_split: TimeSplit | None = None
    best_step: int = 0      # step of the best checkpoint (0: none written)


@dataclass
class SampleEvent:
    step: int
    text: str               # a short sample from the current weights (TrainConfig.sample_every)


@dataclass
class WarningEvent:
    step: int
    message: str


@dataclass
class Position:
    """Everything besides weights and optimiser buffers that an exact resume needs."""

    step: int = 0
    elapsed: float = 0.0
    best_val_loss: float = math.inf
    best_step: int = 0
    bad_steps: int = 0
    train_loss_sum: float = 0.0
    train_loss_count: int = 0
    split: TimeSplit = field(default_factory=TimeSplit)
