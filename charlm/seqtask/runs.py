"""Classifier and tagger runs: reading a run's data from its description, starting and resuming a
run, and finding runs under the runs directory. Nothing here prints.

A run's data is described by a small dict stored in its checkpoints (``charlm.data``), so that a
resume needs no arguments: task, format (tsv | conll | spaces), the training file, the dev file
or the fraction of the training examples held out as dev, the TSV header rule and the seed of
the hold-out.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError
from . import data, store
from ..settings import Overrides
from .config import SeqModelConfig, SeqTrainConfig

FORMATS = {"classify": ("tsv",), "tag": ("conll", "spaces")}


def data_spec(task: str, train_file, *, dev_file=None, dev_fraction: float = 0.1, fmt: str = "",
              header: str = "auto", seed: int = 1234) -> dict:
    fmt = fmt or FORMATS[task][0]
    if fmt not in FORMATS[task]:
        raise ConfigError(f"format must be one of {', '.join(FORMATS[task])} for {task}; got {fmt!r}")
    if not (0.0 <= dev_fraction < 1.0):
        raise ConfigError(f"dev fraction must be in [0, 1), got {dev_fraction}")
    return {"task": task, "format": fmt, "train": os.path.abspath(train_file),
            "dev": os.path.abspath(dev_file) if dev_file else None,
            "dev_fraction": 0.0 if dev_file else float(dev_fraction), "header": header, "seed": int(seed)}


def read_split(spec: dict, path) -> list:
    fmt = spec["format"]
    if fmt == "tsv":
        return data.read_tsv(path, header=spec.get("header", "auto"))
    if fmt == "conll":
        return data.read_conll(path)
    return data.read_restore_spaces(path)


def load_data(spec: dict) -> tuple[list, list]:
    """(training examples, dev examples) as the spec describes them."""
    train = read_split(spec, spec["train"])
    if spec.get("dev"):
        return train, read_split(spec, spec["dev"])
    fraction = spec.get("dev_fraction", 0.0)
    if not fraction:
        return train, []
    order = np.random.default_rng([spec.get("seed", 0), 7]).permutation(len(train))
    n_dev = int(round(len(train) * fraction))
    if n_dev < 1 or n_dev >= len(train):
        raise ConfigError(f"{spec['train']}: {len(train)} examples are too few to hold out "
                          f"{fraction:g} of them as dev (give a dev file, or a dev fraction of 0)")
    dev_idx = set(order[:n_dev].tolist())
    return ([e for i, e in enumerate(train) if i not in dev_idx], [train[i] for i in sorted(dev_idx)])


def start(spec: dict, model_config: SeqModelConfig, train_config: SeqTrainConfig, root, run_dir=None):
    """A new SeqTrainer for ``spec`` with these configurations (validated: config.make_seq_configs),
    in ``run_dir`` or a fresh directory under ``root``. The directory is claimed for this process
    (runs/directory.py: a directory that holds anything is refused, and a second process cannot
    write it); if reading the data fails, what the claim made is removed again."""
    from ..runs.directory import claim_new_run, make_run_dir, release_new
    from .train import SeqTrainer

    lock = claim_new_run(run_dir) if run_dir is not None else make_run_dir(root, run_stem(spec["train"]))
    try:
        train, dev = load_data(spec)
        if spec["format"] == "spaces":
            spec = spec | {"derived_task": "restore-spaces"}
        trainer = SeqTrainer(train, dev, model_config, train_config, lock.run_dir, data_spec=spec)
    except BaseException:
        release_new(lock)
        raise
    trainer.run_lock = lock  # held as long as the trainer lives
    return trainer


def resume(run_dir, overrides: Overrides):
    """The SeqTrainer of a stopped run, its data re-read from the stored description (and refused
    if its content is not what the run trained on), with ``overrides`` (config.seq_resume_overrides).
    The run is locked for this process first."""
    from ..runs.directory import claim_run, release_new
    from .train import SeqTrainer

    run_dir = Path(run_dir)
    run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
    last = run_dir / store.LAST_FILE
    if not last.exists():
        raise CheckpointError(f"{run_dir}: no {store.LAST_FILE} to resume from")
    lock = claim_run(run_dir)
    try:
        spec = store.load(last).metadata.get("data")
        if not isinstance(spec, dict) or "train" not in spec:
            raise CheckpointError(f"{last}: no description of the training data to resume with")
        train, dev = load_data(spec)
        trainer = SeqTrainer.resume(run_dir, train, dev, **overrides.changes())
    except BaseException:
        release_new(lock)  # a refused resume leaves no lock file behind
        raise
    trainer.run_lock = lock
    return trainer


def run_stem(train_file) -> str:
    """A run's default name: the training file's stem, safe as a directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(train_file).stem).strip("-.") or "run"


def task_of(path: Path) -> str | None:
    """The task recorded in a run directory's (or checkpoint file's) header, or None."""
    from ..runs.header import read_header

    files = [path] if path.suffix == ".safetensors" else [path / store.MODEL_FILE, path / store.LAST_FILE]
    for file in files:
        if file.exists():
            try:
                header, _ = read_header(file)
            except CheckpointError:
                return None
            meta = header.get("__metadata__")
            return meta.get("charlm.task") if isinstance(meta, dict) else None
    return None


def find_run(arg, root, task: str) -> Path:
    """The run or checkpoint meant by ``arg`` (a path or a run name under ``root``), or with
    ``None`` the most recent ``task`` run under ``root``."""
    from ..runs.find import list_runs

    if arg is None:
        runs = [r for r in list_runs(root) if task_of(r) == task]
        if not runs:
            raise CheckpointError(f"no {task} runs in {root} yet: train one with `charlm {task} train`, "
                                  "or name a run directory or checkpoint file")
        return runs[-1]
    for path in (Path(arg), Path(root) / arg):
        if path.exists():
            return path
    raise CheckpointError(f"{arg}: no such run directory or checkpoint file")


def is_run_like(arg, root) -> bool:
    """Whether ``arg`` names a run or checkpoint rather than a data file."""
    path = Path(arg)
    if path.suffix == ".safetensors":
        return True
    for p in (path, Path(root) / arg):
        if p.is_dir() and any((p / n).exists() for n in (store.MODEL_FILE, store.LAST_FILE)):
            return True
    return False
