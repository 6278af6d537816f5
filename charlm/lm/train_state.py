"""A language-model run's checkpoint contents: last/best files and the restore of an exact position.

``last.safetensors`` holds everything an exact resume needs (weights, optimiser buffers, the
carried state, data position, random generator, and the loop's position and schedule);
``model.safetensors`` the best weights by validation loss, with the sampling start state.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..config import to_dict
from ..errors import CheckpointError
from ..runs.fingerprint import corpus_fingerprint
from ..training.run_state import read_position
from . import checkpoint as ckpt


def metadata(task, step: int, best: dict | None) -> dict:
    best_val_loss = best.get("val_loss") if isinstance(best, dict) else None
    return {"train_config": to_dict(task.tcfg), "sources": list(task.corpus.sources),
            "train_tokens": int(task.corpus.train.size), "eos": task.corpus.eos, "step": step,
            "best_val_loss": finite_or_none(best_val_loss if best_val_loss is not None else math.inf),
            "start_state": start_state(task, step),
            "fingerprint": corpus_fingerprint(task.corpus),  # a resume refuses changed text
            "auto_choice": task.auto_choice} | ({"init_from": task.init_from} if task.init_from else {}) | (
            {"labels": task.corpus.labels.names} if task.labelled else {})


def start_state(task, step: int, context: int = 2048) -> list:
    """Where sampling starts: the state just before the last <eos> of the training text, after
    reading up to ``context`` tokens before it. A model trained with carried state almost
    never sees the zero state, so text generated from it begins garbled."""
    from .evaluate import state_after

    if task.labelled:  # every line starts from its label (lm/labels.conditioned), not from here
        return np.zeros((task.mcfg.layers, task.mcfg.states, task.mcfg.hidden)).tolist()
    cached = getattr(task, "_start_cache", None)
    if cached is not None and cached[0] == step:  # best and last are saved at one step
        return cached[1]
    train = task.corpus.train
    tail = np.asarray(train[max(0, len(train) - 8 * context):])
    ends = np.flatnonzero(tail == task.corpus.tokenizer.eos_id)
    ends = ends[ends >= min(64, len(tail) - 1)]  # an <eos> with some text before it, else the end
    end = int(ends[-1]) if ends.size else len(tail) - 1
    state = state_after(task.model, tail[max(0, end - context):end + 1].astype(np.int64))
    value = np.round(state[:, :, 0, :].astype(np.float64), 6).tolist()  # (L, S, H)
    task._start_cache = (step, value)
    return value


def save_last(task, path: Path, loop_meta: dict, comm, arrays=None) -> Path:
    """Write last.safetensors: weights, optimiser buffers, the carried state, the loop's ``arrays``
    (its weight average) and the whole position."""
    state, scalars = task.optimizer.state_dict()
    extra = dict(state) | (arrays or {})
    extra["train_state"] = comm.full_state(task.state)   # every rank's streams
    if not comm.writes:
        return path
    meta = metadata(task, loop_meta["step"], loop_meta["position"]["best"]) | loop_meta | {
        "optimizer": scalars, "batcher": task.batcher.state_dict(), "rng": task.rng.bit_generator.state}
    ckpt.save_checkpoint(path, task.mcfg, task.corpus.tokenizer, task.model.state_dict(),
                         extra_tensors=extra, metadata=meta)
    return path


def save_best(task, path: Path, step: int, scores: dict, comm) -> Path:
    if not comm.writes:
        return path
    ckpt.save_checkpoint(path, task.mcfg, task.corpus.tokenizer, task.model.state_dict(),
                         metadata=metadata(task, step, scores) | {"val_loss": finite_or_none(scores["val_loss"])})
    return path


def restore(task, last: ckpt.Checkpoint, run_dir: Path):
    """Load weights, optimiser, state, data position and random state from ``last`` into
    ``task``; returns the loop's (Position, schedule state)."""
    try:
        _restore_state(task, last)
        best = last.metadata.get("best_val_loss")
        best = math.inf if best is None or not math.isfinite(best) else float(best)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"{last.path}: training state is incomplete or malformed "
                              f"({type(e).__name__}: {str(e)[:100]})") from None
    # model.safetensors may be newer than last.safetensors (a crash between the two writes,
    # which happen in that order): never let the resumed run replace it with a worse model.
    best = min(best, saved_val_loss(run_dir))
    return read_position(last.metadata, {"val_loss": best} if math.isfinite(best) else None, last.path, last.extra)


def _restore_state(task, last: ckpt.Checkpoint) -> None:
    meta = last.metadata
    if task.labelled and meta.get("labels") != task.corpus.labels.names:
        raise CheckpointError(f"{last.path}: the training lines' labels have changed since the run began")
    task.model.load_state_dict(last.tensors)
    extra = dict(last.extra)
    state = extra.pop("train_state", None)
    if state is None or state.shape != task.state.shape:
        raise CheckpointError(f"{last.path}: carried training state is missing or has the wrong shape")
    task.state[...] = state
    task.optimizer.load_state_dict(extra, meta["optimizer"])
    task.batcher.load_state_dict(meta["batcher"])
    task.rng.bit_generator.state = meta["rng"]
    task.auto_choice = meta.get("auto_choice")
    task.init_from = meta.get("init_from")


def saved_val_loss(run_dir: Path) -> float:
    """val_loss recorded in the run's best checkpoint (inf if there is none or it is unreadable)."""
    try:
        header, _ = ckpt.read_header(run_dir / ckpt.MODEL_FILE)
        value = json.loads(header["__metadata__"]["charlm.val_loss"])
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf
    except (CheckpointError, KeyError, TypeError, ValueError):
        return math.inf


def finite_or_none(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
