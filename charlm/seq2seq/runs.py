"""Encoder-decoder runs: the data description stored in checkpoints, starting and resuming a run
(``Seq2SeqTrainer``: the one training loop over a ``Seq2SeqTask``). Nothing here prints.

The description (``charlm.data``) lets a resume re-read the data with no arguments: the training
file, the dev file or the fraction of the sources held out, both levels and the hold-out's seed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..runs.find import LAST_FILE
from ..errors import CheckpointError, ConfigError
from ..seqtask.config import SeqTrainConfig
from ..settings import Overrides
from ..training.loop import Loop
from ..training.run_state import check_fingerprint, resume_config
from . import store
from .config import LEVELS, Seq2SeqConfig
from .data import hold_out, read_lines_as_pairs, read_pairs


def data_spec(train_file, *, dev_file=None, dev_fraction: float = 0.1, source_level: str = "char",
              target_level: str = "char", seed: int = 1234, autoencode: bool = False) -> dict:
    """``autoencode``: the files hold plain lines, each its own target (both sides at ``source_level``)."""
    from ..data.text_files import check_file

    check_file(train_file)   # standard input cannot be read again on resume
    if dev_file:
        check_file(dev_file)
    for side, level in (("source", source_level), ("target", target_level)):
        if level not in LEVELS:
            raise ConfigError(f"{side} level must be one of {', '.join(LEVELS)}; got {level!r}")
    if not (0.0 <= dev_fraction < 1.0):
        raise ConfigError(f"dev fraction must be in [0, 1), got {dev_fraction}")
    if autoencode:
        target_level = source_level
    return {"task": store.TASK, "format": "lines" if autoencode else "tsv", "train": os.path.abspath(train_file),
            "dev": os.path.abspath(dev_file) if dev_file else None,
            "dev_fraction": 0.0 if dev_file else float(dev_fraction),
            "levels": {"source": source_level, "target": target_level}, "seed": int(seed)}


def load_data(spec: dict) -> tuple[list, list]:
    """(training pairs, dev pairs) as ``spec`` describes them."""
    levels = spec["levels"]

    def read(path):
        if spec.get("format") == "lines":
            return read_lines_as_pairs(path, levels["source"])
        return read_pairs(path, levels["source"], levels["target"])
    train = read(spec["train"])
    if spec.get("dev"):
        return train, read(spec["dev"])
    if not spec.get("dev_fraction"):
        return train, []
    return hold_out(train, spec["dev_fraction"], spec.get("seed", 0), spec["train"])


class Seq2SeqTrainer(Loop):
    """Trains an encoder-decoder in ``run_dir`` (``trainer.model``, ``trainer.source``... are its task's)."""

    def __init__(self, train, dev, model_config, train_config, run_dir, *, data_spec, clock=time.perf_counter,
                 _resume: store.Seq2SeqCheckpoint | None = None):
        from .task import Seq2SeqTask

        task = Seq2SeqTask(train, dev, model_config, train_config, levels=data_spec["levels"], data_spec=data_spec,
                           resume=_resume)
        if _resume is None:
            task.init_weights()
        super().__init__(task, run_dir, clock=clock, resumed=None if _resume is None else task.restore(_resume))


def start(spec: dict, model_config: Seq2SeqConfig, train_config: SeqTrainConfig, root, run_dir=None,
          clock=time.perf_counter) -> Seq2SeqTrainer:
    """A new trainer in ``run_dir`` or a fresh directory under ``root``, claimed for this process
    (what the claim made is removed again if reading the data fails)."""
    from ..runs.directory import claim_new_run, make_run_dir, release_new
    from ..runs.find import run_stem

    lock = claim_new_run(run_dir) if run_dir is not None else make_run_dir(root, run_stem(spec["train"]))
    try:
        train, dev = load_data(spec)
        trainer = Seq2SeqTrainer(train, dev, model_config, train_config, lock.run_dir, data_spec=spec, clock=clock)
    except BaseException:
        release_new(lock)
        raise
    trainer.run_lock = lock
    return trainer


def resume(run_dir, overrides: Overrides, clock=time.perf_counter) -> Seq2SeqTrainer:
    """The trainer of a stopped run, its data re-read from the stored description and refused if
    its content changed; ``overrides`` may change the budget, eval_every and threads only."""
    from ..runs.directory import claim_run, release_new
    from ..seqtask.train import saved_train_config

    run_dir = Path(run_dir)
    run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
    if not (run_dir / LAST_FILE).exists():
        raise CheckpointError(f"{run_dir}: no {LAST_FILE} to resume from")
    lock = claim_run(run_dir)
    try:
        last = store.load(run_dir / LAST_FILE)
        spec = last.metadata.get("data")
        if not isinstance(spec, dict) or "train" not in spec or not isinstance(spec.get("levels"), dict):
            raise CheckpointError(f"{run_dir}: no description of the training data to resume with")
        tcfg = resume_config(saved_train_config(last.metadata, run_dir), overrides.changes())
        train, dev = load_data(spec)
        trainer = Seq2SeqTrainer(train, dev, last.config, tcfg, run_dir, data_spec=spec, clock=clock, _resume=last)
        check_fingerprint(last.metadata.get("fingerprint"), trainer.fingerprint(), run_dir)
    except BaseException:
        release_new(lock)
        raise
    trainer.run_lock = lock
    return trainer
