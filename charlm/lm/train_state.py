"""A Trainer's files: last/best checkpoints, the restore of an exact position, buffered metrics.

``last.safetensors`` holds everything an exact resume needs (weights, optimiser buffers, the
carried state, data position, random generator, schedule, time split); ``model.safetensors``
the best weights by validation loss. Step records go to ``metrics.jsonl`` in one write at each
checkpoint, so a step costs no file I/O; a crash loses at most the step lines since the last
checkpoint, never a checkpoint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..config import to_dict
from ..distributed import world
from ..errors import CheckpointError
from ..runs.fingerprint import corpus_fingerprint
from ..training.events import Position, TimeSplit
from . import checkpoint as ckpt


class MetricsBuffer:
    """Records kept in memory until ``flush`` appends them to metrics.jsonl (one write, one fsync)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.pending = run_dir, []

    def add(self, record: dict) -> None:
        self.pending.append(record)

    def flush(self) -> None:
        if self.pending:
            ckpt.append_metrics(self.run_dir, *self.pending)
            self.pending = []


def metadata(trainer) -> dict:
    pos = trainer.pos
    return {"train_config": to_dict(trainer.tcfg), "sources": list(trainer.corpus.sources),
            "train_tokens": int(trainer.corpus.train.size), "eos": trainer.corpus.eos, "step": pos.step,
            "best_val_loss": finite_or_none(pos.best_val_loss), "start_state": start_state(trainer),
            "fingerprint": corpus_fingerprint(trainer.corpus),  # a resume refuses changed text
            "auto_choice": trainer.auto_choice}


def start_state(trainer, context: int = 2048) -> list:
    """Where sampling starts: the state just before the last <eos> of the training text, after
    reading up to ``context`` tokens before it. A model trained with carried state almost
    never sees the zero state, so text generated from it begins garbled."""
    from .evaluate import state_after

    cached = getattr(trainer, "_start_cache", None)
    if cached is not None and cached[0] == trainer.pos.step:  # best and last are saved at one step
        return cached[1]
    train = trainer.corpus.train
    tail = np.asarray(train[max(0, len(train) - 8 * context):])
    ends = np.flatnonzero(tail == trainer.corpus.tokenizer.eos_id)
    ends = ends[ends >= min(64, len(tail) - 1)]  # an <eos> with some text before it, else the end
    end = int(ends[-1]) if ends.size else len(tail) - 1
    state = state_after(trainer.model, tail[max(0, end - context):end + 1].astype(np.int64))
    value = np.round(state[:, :, 0, :].astype(np.float64), 6).tolist()  # (L, S, H)
    trainer._start_cache = (trainer.pos.step, value)
    return value


def save_last(trainer) -> Path:
    """Write last.safetensors: weights, optimiser buffers and the whole position."""
    arrays, scalars = trainer.optimizer.state_dict()
    extra = dict(arrays)
    extra["train_state"] = trainer.comm.full_state(trainer.state)   # every rank's streams
    path = trainer.run_dir / ckpt.LAST_FILE
    if not trainer.comm.writes:
        return path
    pos = trainer.pos
    meta = metadata(trainer) | {
        "optimizer": scalars, "schedule": trainer.schedule.state_dict(),
        "batcher": trainer.batcher.state_dict(), "rng": trainer.rng.bit_generator.state,
        "position": {"elapsed": pos.elapsed, "bad_steps": pos.bad_steps, "best_step": pos.best_step,
                     "train_loss_sum": pos.train_loss_sum, "train_loss_count": pos.train_loss_count,
                     "time_split": pos.split.to_dict()},
    }
    ckpt.save_checkpoint(path, trainer.mcfg, trainer.corpus.tokenizer, trainer.model.state_dict(),
                         extra_tensors=extra, metadata=meta)
    return path


def save_best(trainer, val_loss: float) -> Path:
    path = trainer.run_dir / ckpt.MODEL_FILE
    if not trainer.comm.writes:
        return path
    ckpt.save_checkpoint(path, trainer.mcfg, trainer.corpus.tokenizer, trainer.model.state_dict(),
                         metadata=metadata(trainer) | {"val_loss": finite_or_none(val_loss)})
    return path


def restore(trainer, last: ckpt.Checkpoint) -> None:
    """Load weights, optimiser, state, data position and schedule from ``last`` into ``trainer``."""
    try:
        _restore_state(trainer, last)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"{last.path}: training state is incomplete or malformed "
                              f"({type(e).__name__}: {str(e)[:100]})") from None
    # model.safetensors may be newer than last.safetensors (a crash between the two writes,
    # which happen in that order): never let the resumed run replace it with a worse model.
    trainer.pos.best_val_loss = min(trainer.pos.best_val_loss, saved_val_loss(trainer.run_dir))
    if world().writes:  # under mpiexec, rank 0 alone touches the run directory
        ckpt.remove_stale_temp_files(trainer.run_dir)
        ckpt.truncate_metrics(trainer.run_dir, trainer.pos.step)


def _restore_state(trainer, last: ckpt.Checkpoint) -> None:
    meta = last.metadata
    trainer.model.load_state_dict(last.tensors)
    extra = dict(last.extra)
    state = extra.pop("train_state", None)
    if state is None or state.shape != trainer.state.shape:
        raise CheckpointError(f"{last.path}: carried training state is missing or has the wrong shape")
    trainer.state[...] = state
    trainer.optimizer.load_state_dict(extra, meta["optimizer"])
    trainer.schedule.load_state_dict(meta["schedule"])
    trainer.batcher.load_state_dict(meta["batcher"])
    trainer.rng.bit_generator.state = meta["rng"]
    trainer.auto_choice = meta.get("auto_choice")
    p = meta["position"]
    best = meta.get("best_val_loss")
    best = math.inf if best is None or not math.isfinite(best) else float(best)
    trainer.pos = Position(step=int(meta["step"]), elapsed=float(p["elapsed"]), best_val_loss=best,
                           best_step=int(p.get("best_step", 0)), bad_steps=int(p["bad_steps"]),
                           train_loss_sum=float(p["train_loss_sum"]),
                           train_loss_count=int(p["train_loss_count"]),
                           split=TimeSplit.from_dict(p.get("time_split") or {}))


def saved_val_loss(run_dir: Path) -> float:
    """val_loss recorded in the run's best checkpoint (inf if there is none or it is unreadable)."""
    try:
        header, _ = ckpt.read_header(run_dir / ckpt.MODEL_FILE)
        value = json.loads(header["__metadata__"]["charlm.val_loss"])
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf
    except (CheckpointError, KeyError, TypeError, ValueError):
        return math.inf


def finite_or_none(x: float):
    return x if math.isfinite(x) else None
