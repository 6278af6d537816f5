"""The loop's part of a checkpoint (step, position, schedule), buffered metrics, and the resume rule.

Both tasks store the same ``position`` record. Checkpoints written before the loop was shared
hold older shapes (a classifier's ``loss_sum``/``loss_count`` and ``best`` as [accuracy, loss]);
``read_position`` reads those too, so every existing run resumes.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..runs.metrics import append_metrics
from .average import ARRAY
from .events import Position, TimeSplit

BUDGET_SETTINGS = ("steps", "epochs", "time_budget")
RESUMABLE = BUDGET_SETTINGS + ("eval_every", "threads")   # may change on resume, for every task


class MetricsBuffer:
    """Records kept in memory until ``flush`` appends them to metrics.jsonl (one write, one fsync)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.pending = run_dir, []

    def add(self, record: dict) -> None:
        self.pending.append(record)

    def flush(self) -> None:
        if self.pending:
            append_metrics(self.run_dir, *self.pending)
            self.pending = []


def loop_meta(pos: Position, schedule) -> dict:
    """The loop's keys in last.safetensors."""
    return {"step": pos.step, "schedule": schedule.state_dict(),
            "position": {"elapsed": pos.elapsed, "bad_steps": pos.bad_steps, "best_step": pos.best_step,
                         "train_loss_sum": pos.train_loss_sum, "train_loss_count": pos.train_loss_count,
                         "time_split": pos.split.to_dict(), "best": pos.best}}


def read_position(meta: dict, best: dict | None, path, extra: dict | None = None) -> tuple:
    """(Position, schedule state or None, the weight average's (arrays, metadata)) from a
    checkpoint's metadata and its training-state arrays ``extra``; ``best`` is the task's reading
    of its best scores. Anything malformed is one CheckpointError."""
    try:
        p = meta["position"]
        old = "train_loss_sum" not in p and "loss_sum" in p   # a classifier's checkpoint before the shared loop
        position = Position(step=int(meta["step"]), elapsed=float(p["elapsed"]), best=best,
                            best_step=int(p.get("best_step", 0)), bad_steps=int(p["bad_steps"] if not old else 0),
                            train_loss_sum=float(p["loss_sum" if old else "train_loss_sum"]),
                            train_loss_count=int(p["loss_count" if old else "train_loss_count"]),
                            split=TimeSplit.from_dict(p.get("time_split") or {}))
        schedule = None if old else meta["schedule"]
        if not (math.isfinite(position.elapsed) and position.step >= 0):
            raise ValueError("position out of range")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"{path}: training state is incomplete or malformed "
                              f"({type(e).__name__}: {str(e)[:100]})") from None
    return position, schedule, ({ARRAY: extra[ARRAY]} if extra and ARRAY in extra else {}, meta.get("average"))


def resume_config(saved, overrides: dict, extra: tuple = ()):
    """``saved`` (a training configuration) with ``overrides`` applied: only the budget,
    eval_every, threads and the task's ``extra`` display settings may change; any other setting
    given with another value is refused, in one line naming it."""
    known = {f.name for f in dataclasses.fields(saved)}
    given = {k: v for k, v in overrides.items() if v is not None}
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE + tuple(extra)
                     and (k not in known or v != getattr(saved, k)))
    if changed:
        key = changed[0]
        was = f" (the run was trained with {key}={getattr(saved, key)!r})" if key in known else ""
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming{was}: only the budget "
                          f"({', '.join(BUDGET_SETTINGS)}), eval_every, threads"
                          f"{''.join(', ' + e for e in extra)} may change; start a new run instead")
    return dataclasses.replace(saved, **given).validate()


def check_fingerprint(saved, now: dict, run_dir) -> None:
    """Refuse to resume on data whose content digests differ from the checkpoint's ``saved``
    ones (checkpoints without digests: nothing to compare)."""
    if not isinstance(saved, dict):
        return
    changed = [name for name, value in now.items() if saved.get(name) != value]
    if changed:
        raise ConfigError(f"cannot resume {run_dir}: the {' and '.join(changed)} data differ from what this "
                          "run was trained on (the content changed); resume with the original data, or "
                          "start a new run")
