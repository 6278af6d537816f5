"""What a classifier or tagger run reports while it trains: ``SeqTrainer.events()`` yields these,
the CLI renders them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SeqStepEvent:
    step: int
    epoch: float
    loss: float
    grad_norm: float
    lr: float
    progress: float         # fraction of the budget done
    elapsed: float


@dataclass
class SeqEvalEvent:
    step: int
    epoch: float
    train_loss: float       # mean training loss since the previous evaluation
    scores: dict            # metrics.score on the dev split (or the training data: on_train)
    improved: bool
    best_accuracy: float
    on_train: bool
    elapsed: float


@dataclass
class SeqCheckpointEvent:
    step: int
    path: Path
    best: bool


@dataclass
class SeqDoneEvent:
    step: int
    reason: str             # steps | epochs | time | stopped | diverged
    best_accuracy: float
    elapsed: float
    run_dir: Path
