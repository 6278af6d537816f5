"""Run directories: naming new runs, finding existing ones, rebuilding their corpus, describing them.

A run directory is whatever ``Trainer`` writes (see checkpoint.py). Runs live under a root
directory (the CLI uses ``./runs``); "the most recent run" is the one whose checkpoint was
written last. Nothing here prints.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

from . import checkpoint as ckpt
from .config import ModelConfig, make_configs, to_dict
from .distributed import from_rank0, on_rank0
from .errors import CharlmError, CheckpointError, ConfigError
from .checkpoint_header import json_or_none
from .metrics import METRICS_FILE, read_metrics_checked

CHECKPOINT_FILES = (ckpt.MODEL_FILE, ckpt.LAST_FILE)
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def run_stem(stem: str) -> str:
    """A corpus file's stem made safe as a directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "run"


def _last_written(run_dir: Path) -> float:
    times = [(run_dir / n).stat().st_mtime for n in CHECKPOINT_FILES if (run_dir / n).exists()]
    return max(times, default=-math.inf)


def list_runs(root) -> list[Path]:
    """Run directories under ``root`` (those holding a checkpoint), most recent last."""
    root = Path(root)
    if not root.is_dir():
        return []
    try:
        runs = [p for p in root.iterdir() if p.is_dir() and _last_written(p) > -math.inf]
    except OSError as e:
        raise CheckpointError(f"cannot list the runs in {root}: {e.strerror or e}") from None
    return sorted(runs, key=lambda p: (_last_written(p), p.name))


def resolve_run(arg, root) -> Path:
    """The run directory or checkpoint file meant by ``arg``: a path, the name of a run under
    ``root``, or (``None``) the most recent run under ``root``."""
    root = Path(root)
    if arg is None:
        runs = list_runs(root)
        if not runs:
            where = "does not exist" if not root.exists() else "holds no runs"
            raise CheckpointError(f"no runs yet ({root} {where}): train one with `charlm train`, "
                                  "or name a run directory or checkpoint file")
        return runs[-1]
    path = Path(arg)
    if path.exists():
        return path
    if (root / arg).exists():
        return root / arg
    names = [p.name for p in list_runs(root)][-5:]
    known = f" (recent runs in {root}: {', '.join(names)})" if names else ""
    raise CheckpointError(f"{arg}: no such run directory or checkpoint file{known}")


def is_run_like(arg, root) -> bool:
    """Whether ``arg`` names a run or checkpoint rather than a text file (for ``eval [RUN] FILE...``)."""
    path = Path(arg)
    if path.suffix == ".safetensors":
        return True
    if path.exists():
        return path.is_dir() and any((path / n).exists() for n in CHECKPOINT_FILES)
    return (Path(root) / arg).is_dir()


def corpus_for(train_config, paths, tokenizer=None):
    """The corpus a run trains on, built from its TrainConfig (with ``tokenizer``: the saved
    vocabulary, for a resume)."""
    from .corpus import build_corpus

    t = train_config
    return build_corpus([os.path.abspath(p) for p in paths], level=t.level, eos=t.eos,
                        val_fraction=t.val_fraction, val_file=t.val_file or None, tokenizer=tokenizer,
                        max_vocab=t.max_vocab, min_count=t.min_count)


def describe_run(path) -> dict:
    """Everything ``charlm info`` shows, as plain JSON-able data. ``problems``: damaged lines of
    the metrics log, which are skipped (the checkpoint is what matters)."""
    from .model import parameter_shapes

    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    loaded = ckpt.load_checkpoint(path)
    meta, tok = loaded.metadata, loaded.tokenizer
    params = sum(math.prod(shape) for _, shape in parameter_shapes(loaded.config))
    metrics, problems = read_metrics_checked(run_dir)
    evals = [r for r in metrics if r.get("kind") == "eval" and _finite(r.get("val_loss"))]
    steps = [r for r in metrics if r.get("kind") == "step" and _finite(r.get("loss"))]
    best = min(evals, key=lambda r: r["val_loss"], default=None)
    files = [{"name": p.name, "bytes": p.stat().st_size}
             for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    tcfg = meta.get("train_config") or {}
    return {
        "run": str(run_dir), "checkpoint": str(loaded.path),
        "model_config": to_dict(loaded.config), "train_config": tcfg,
        "parameters": params, "step": _steps_trained(run_dir, meta, metrics),
        "sources": meta.get("sources", []),
        "validation": bool(tcfg.get("val_file") or tcfg.get("val_fraction", 0.1)),
        "vocab": {"level": tok.level, "size": len(tok), "eos": meta.get("eos"),
                  "specials": tok.tokens[:2], "first_tokens": tok.tokens[2:42]},
        "best": None if best is None else {k: best.get(k) for k in ("step", "val_loss", "val_bpc", "val_ppl")},
        "elapsed": (evals or steps or [{}])[-1].get("elapsed"),
        "time_split": _time_split(evals),
        "history": {"eval": evals, "step": [{"step": step, "loss": loss} for step, loss in
                                            bucket_means([(r["step"], r["loss"]) for r in steps], 400)]},
        "files": files,
        "problems": [p.describe(run_dir / METRICS_FILE) for p in problems],
    }


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _steps_trained(run_dir: Path, meta: dict, metrics: list) -> int | None:
    """Steps trained: the latest checkpoint's step (model.safetensors holds the best step,
    which is earlier when the model stopped improving), else the latest logged step."""
    steps = [meta.get("step")] if isinstance(meta.get("step"), int) else []
    try:
        header, _ = ckpt.read_header(run_dir / ckpt.LAST_FILE)
        last = json_or_none(header["__metadata__"]["charlm.step"])
        if isinstance(last, int) and not isinstance(last, bool):
            steps.append(last)
    except (CharlmError, KeyError, TypeError, OSError):
        pass
    steps += [r["step"] for r in metrics[-1:]]
    return max(steps, default=None)


def _time_split(evals: list) -> dict | None:
    """Seconds of training, evaluation, checkpoints and kernel loading at the last evaluation
    that recorded them (None for a run from before they were recorded)."""
    keys = ("train_s", "eval_s", "checkpoint_s", "compile_s")
    for record in reversed(evals):
        if all(_finite(record.get(k)) for k in keys) and _finite(record.get("elapsed")):
            return {k: record[k] for k in keys} | {"elapsed": record["elapsed"]}
    return None


def bucket_means(points: list, n: int) -> list:
    """(step, value) points averaged over at most ``n`` consecutive buckets, each labelled with
    its last step: a readable learning curve instead of per-step noise."""
    size = max(1, math.ceil(len(points) / n))
    out = []
    for i in range(0, len(points), size):
        part = points[i:i + size]
        out.append((part[-1][0], sum(v for _, v in part) / len(part)))
    return out


def start_training(paths, values: dict, *, run_dir=None, root="runs", overwrite: bool = False):
    """A ``Trainer`` for a new run on ``paths`` with settings ``values`` (field name -> value).

    No paths: the built-in stdlib corpus, for ``DEFAULT_CORPUS_TIME_BUDGET`` unless a budget
    is given. No ``run_dir``: a fresh ``<corpus>-<time>`` directory under ``root``. The run
    directory is locked for this process (rundir.py) before anything is read or written; if
    setting up fails, a directory made here is removed again.
    """
    from .autoconfig import choose_model
    from .builtin_corpora import default_corpus_path
    from .config import DEFAULT_CORPUS_TIME_BUDGET, replace
    from .footprint import check_training_fits
    from .rundir import claim_new_run, make_run_dir, release_new
    from .text_files import check_path
    from .train import Trainer

    model_config, train_config = make_configs(values)
    check_training_fits(model_config, train_config)  # before any reading: the vocabulary comes later
    if train_config.val_file:
        train_config = replace(train_config, val_file=os.path.abspath(train_config.val_file))
    for path in paths:  # a missing or unreadable file is refused before a directory is made
        check_path(path)
    stem = Path(paths[0]).stem if paths else "stdlib"
    lock = on_rank0(lambda: claim_new_run(run_dir, overwrite=overwrite) if run_dir else make_run_dir(root, run_stem(stem)))
    try:
        if not paths:
            paths = [default_corpus_path()]
            if not (train_config.steps or train_config.epochs or train_config.time_budget):
                train_config = replace(train_config, time_budget=DEFAULT_CORPUS_TIME_BUDGET)
        corpus = corpus_for(train_config, paths)
        model_config, train_config, choice = from_rank0(
            lambda: choose_model(model_config, train_config, corpus, set(values)))
        check_training_fits(model_config, train_config, len(corpus.tokenizer))
        trainer = Trainer(corpus, model_config, train_config, lock.run_dir)
        trainer.auto_choice = None if choice is None else choice.to_dict()
    except BaseException:
        release_new(lock)
        raise
    trainer.run_lock = lock  # held as long as the trainer lives
    return trainer


def resume_training(run, values: dict, paths=()):
    """A ``Trainer`` that continues ``run`` (a run directory or one of its checkpoints).

    ``values`` may change training settings such as the budget; model settings are refused.
    ``paths`` replace the saved corpus paths (the text itself must be unchanged: its content
    fingerprint is checked). The run is locked for this process first, so that two processes
    never continue one run at once.
    """
    from .fingerprint import check_same_corpus, check_same_model
    from .rundir import claim_run, release_new
    from .train import Trainer

    run_dir = Path(run)
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    model_keys = sorted(k for k in values if k in _MODEL_FIELDS and values[k] is not None)
    if model_keys:
        raise ConfigError(f"cannot change the model when resuming ({', '.join(model_keys)}); "
                          "start a new run instead")
    _, checked = make_configs(values)  # unknown names and bad values fail here, as for a new run
    overrides = {k: getattr(checked, k) for k, v in values.items() if v is not None}
    if overrides.get("val_file"):
        overrides["val_file"] = os.path.abspath(overrides["val_file"])
    lock = on_rank0(lambda: claim_run(run_dir) if run_dir.is_dir() else None)  # (a missing run is reported below)

    def builder(tokenizer, train_config, sources):
        check_same_model(run_dir)
        corpus = corpus_for(train_config, list(paths) or sources, tokenizer)
        check_same_corpus(run_dir, corpus)
        return corpus

    try:
        trainer = Trainer.resume(run_dir, builder, **overrides)
    except BaseException:
        if lock is not None:
            release_new(lock)  # a refused resume leaves no lock file behind
        raise
    trainer.run_lock = lock  # held as long as the trainer lives
    return trainer
