"""The Task interface: what a task supplies to the one training loop (training/loop.py).

The loop owns the budget, the learning-rate schedule, the evaluation cadence, divergence,
checkpoint timing, metrics and events; a task supplies only what differs between tasks. The
language model implements it in ``lm/task.py``, classifiers and taggers in ``seqtask/task.py``.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class Evaluation:
    """One evaluation of a task's current weights."""

    scores: dict            # JSON-able numbers, the task's headline metric among them
    loss: float             # a loss (lower is better) for the plateau schedule
    held_out: bool = True   # False: scored on the training data (there is no held-out split)
    records: list = field(default_factory=list)   # extra metrics.jsonl records (language model: gradient tracking)


class Task(Protocol):
    """What the loop needs from a task. Attributes: ``model`` (``flat`` and ``grad_flat``, the
    weights the loop checks and the ranks keep equal), ``tcfg`` (a training configuration with
    steps, epochs, time_budget, eval_every, threads, lr, min_lr, schedule, warmup_steps),
    ``rng`` (the random stream of dropout, restored on resume), ``metric`` (the headline score's
    name), ``display_settings`` (settings besides the budget that a resume may change) and,
    optionally, ``sum_carry`` (see ``merge_blocks``)."""

    model: Any
    tcfg: Any
    rng: Any
    metric: str
    display_settings: tuple

    def epoch(self) -> float:
        """Fractional passes over the training data done (the data position)."""

    def next_batch(self) -> Any:
        """The next training batch; advances the data position (saved by ``save_last``)."""

    def tokens(self, batch) -> int:
        """Tokens in ``batch`` (the step's rate)."""

    def loss_and_grad(self, batch) -> tuple[float, Any]:
        """Forward and backward on ``batch``: (mean loss, what ``commit`` keeps if the step is
        taken); the gradient lands in ``model.grad_flat``. Leaves the task's state unchanged."""

    def streams(self, batch) -> int:
        """Several ranks only: the rows of ``batch`` that ranks share out (its streams or sequences)."""

    def split_problem(self) -> str | None:
        """Several ranks only: why this run cannot be split across ranks exactly, or None."""

    def block_loss_and_grad(self, batch, b0: int, b1: int, rng) -> tuple[float, Any, float]:
        """Several ranks only (distributed/ranks.py): loss and gradient of rows b0..b1 of the
        batch with dropout from ``rng`` (drawn for the whole batch), what they carry, and their
        share of the batch (the weight of their mean in the batch's mean: rows, or tokens)."""

    def merge_blocks(self, carry, b0: int, b1: int) -> Any:
        """Several ranks only: what ``commit`` keeps, with this rank's rows b0..b1 set to ``carry``;
        a task whose ``sum_carry`` is true gets instead the sum of every rank's carry (a 1-D float
        array of a fixed size, summed in the step's one Allreduce)."""

    def commit(self, carry) -> None:
        """The step was taken: keep ``carry`` (the language model's carried hidden state)."""

    def clip(self) -> float:
        """Clip the gradient in place; the global norm before clipping."""

    def step(self, lr: float) -> None:
        """Apply the optimiser with learning rate ``lr`` (dense, or lazy on the rows touched)."""

    def warm_up(self) -> None:
        """Compile the kernels before the budget's clock starts; changes no weight, state or random stream."""

    def thread_scope(self, threads: int) -> AbstractContextManager:
        """The thread limits training runs under (0 = all cores)."""

    def evaluate(self, step: int, train_loss: float, comm) -> Evaluation:
        """Score the current weights after ``step`` (on held-out data if there is any)."""

    def better(self, scores: dict, best: dict | None) -> bool:
        """Whether ``scores`` beat ``best`` (None: no evaluation yet)."""

    def sample(self, step: int) -> str | None:
        """A short sample to show after ``step``, or None (not due, or not a generative task)."""

    def save_last(self, path: Path, loop_meta: dict, comm, arrays: dict | None = None) -> Path:
        """Write the exact-resume checkpoint: weights, optimiser, data position, random state, the
        loop's ``loop_meta`` (step, position, schedule) under its keys and its ``arrays`` (the weight
        average, training/average.py) beside the optimiser's buffers. Every rank calls it."""

    def save_best(self, path: Path, step: int, scores: dict, comm) -> Path:
        """Write the best model with its ``scores``."""

    def fingerprint(self) -> dict:
        """Content digests of the training (and held-out) data: a resume refuses other data."""
