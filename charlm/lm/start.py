"""Starting and resuming a language-model run: the configuration, the corpus, the chosen model, the lock."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..config import ModelConfig, make_configs
from ..distributed import from_rank0, on_rank0
from ..errors import ConfigError
from ..runs.find import run_stem

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def corpus_for(train_config, paths, tokenizer=None):
    """The corpus a run trains on, built from its TrainConfig (with ``tokenizer``: the saved
    vocabulary, for a resume)."""
    from ..data.corpus import build_corpus

    t = train_config
    return build_corpus([os.path.abspath(p) for p in paths], level=t.level, eos=t.eos,
                        val_fraction=t.val_fraction, val_file=t.val_file or None, tokenizer=tokenizer,
                        max_vocab=t.max_vocab, min_count=t.min_count)


def start_training(paths, values: dict, *, run_dir=None, root="runs", overwrite: bool = False):
    """A ``Trainer`` for a new run on ``paths`` with settings ``values`` (field name -> value).

    No paths: the built-in stdlib corpus. With no budget given, the time budget is the default
    every task trains for (``DEFAULT_TIME_BUDGET``), set here so that the model is chosen for it. No ``run_dir``: a fresh ``<corpus>-<time>`` directory under ``root``. The run
    directory is locked for this process (runs/directory.py) before anything is read or written; if
    setting up fails, a directory made here is removed again.
    """
    from ..config import replace
    from ..data.builtin_corpora import default_corpus_path
    from ..data.text_files import check_path
    from ..runs.directory import claim_new_run, make_run_dir, release_new
    from ..training.budget import DEFAULT_TIME_BUDGET
    from .autoconfig import choose_model
    from .footprint import check_training_fits
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
                train_config = replace(train_config, time_budget=DEFAULT_TIME_BUDGET)
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
    from ..runs.directory import claim_run, release_new
    from ..runs.fingerprint import check_same_corpus, check_same_model
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
