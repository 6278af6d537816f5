"""Starting and resuming a language-model run: the configuration, the corpus, the chosen model, the lock."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from ..distributed import from_rank0, on_rank0
from ..runs.find import run_stem
from ..settings import Overrides


def corpus_for(train_config, paths, tokenizer=None):
    """The corpus a run trains on, built from its TrainConfig (with ``tokenizer``: the saved
    vocabulary, for a resume)."""
    from ..data.corpus import build_corpus

    t = train_config
    if t.labelled:
        from ..data.labelled import build_labelled_corpus

        return build_labelled_corpus([os.path.abspath(p) for p in paths], level=t.level, split=t.split,
                                     val_fraction=t.val_fraction, val_file=t.val_file or None,
                                     tokenizer=tokenizer, max_vocab=t.max_vocab, min_count=t.min_count)
    return build_corpus([os.path.abspath(p) for p in paths], level=t.level, eos=t.eos, split=t.split,
                        val_fraction=t.val_fraction, val_file=t.val_file or None, tokenizer=tokenizer,
                        max_vocab=t.max_vocab, min_count=t.min_count)


def start_training(paths, model_config: ModelConfig, train_config: TrainConfig, *,
                   given: frozenset[str] = frozenset(), run_dir=None, root="runs", overwrite: bool = False):
    """A ``Trainer`` for a new run on ``paths`` with these configurations (validated: make_configs);
    ``given`` names the settings the user chose, which the model chosen for a time budget keeps
    (autoconfig.py).

    No paths: the built-in stdlib corpus. With no budget given, the time budget is the default
    every task trains for (``DEFAULT_TIME_BUDGET``), set here so that the model is chosen for it.
    No ``run_dir``: a fresh ``<corpus>-<time>`` directory under ``root``. The run
    directory is locked for this process (runs/directory.py) before anything is read or written; if
    setting up fails, a directory made here is removed again.
    """
    from ..config import replace
    from ..data.builtin_corpora import default_corpus_path
    from ..data.text_files import check_file
    from ..runs.directory import claim_new_run, make_run_dir, release_new
    from ..training.budget import DEFAULT_TIME_BUDGET
    from .autoconfig import settle_model
    from .train import Trainer

    if train_config.val_file:
        train_config = replace(train_config, val_file=os.path.abspath(train_config.val_file))
    for path in [*paths, *([train_config.val_file] if train_config.val_file else [])]:
        check_file(path)  # a missing or unreadable file is refused before a directory is made
    stem = paths[0] if paths else "stdlib"
    lock = on_rank0(lambda: claim_new_run(run_dir, overwrite=overwrite) if run_dir else make_run_dir(root, run_stem(stem)))
    try:
        if not paths:
            paths = [default_corpus_path()]
            if not (train_config.steps or train_config.epochs or train_config.time_budget):
                train_config = replace(train_config, time_budget=DEFAULT_TIME_BUDGET)
        corpus = corpus_for(train_config, paths)
        model_config, train_config, choice = from_rank0(
            lambda: settle_model(model_config, train_config, corpus, given))
        trainer = Trainer(corpus, model_config, train_config, lock.run_dir)
        trainer.auto_choice = None if choice is None else choice.to_dict()
    except BaseException:
        release_new(lock)
        raise
    trainer.run_lock = lock  # held as long as the trainer lives
    return trainer


def resume_training(run, overrides: Overrides, paths=()):
    """A ``Trainer`` that continues ``run`` (a run directory or one of its checkpoints).

    ``overrides`` (config.resume_overrides) may change training settings such as the budget.
    ``paths`` replace the saved corpus paths (the text itself must be unchanged: its content
    fingerprint is checked). The run is locked for this process first, so that two processes
    never continue one run at once.
    """
    from ..runs.directory import claim_run, release_new
    from ..runs.fingerprint import check_same_corpus, check_same_model
    from .train import Trainer

    run_dir = Path(run)
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    changes = overrides.changes()
    if changes.get("val_file"):
        changes["val_file"] = os.path.abspath(changes["val_file"])
    lock = on_rank0(lambda: claim_run(run_dir) if run_dir.is_dir() else None)  # (a missing run is reported below)

    def builder(tokenizer, train_config, sources):
        check_same_model(run_dir)
        corpus = corpus_for(train_config, list(paths) or sources, tokenizer)
        check_same_corpus(run_dir, corpus)
        return corpus

    try:
        trainer = Trainer.resume(run_dir, builder, **changes)
    except BaseException:
        if lock is not None:
            release_new(lock)  # a refused resume leaves no lock file behind
        raise
    trainer.run_lock = lock  # held as long as the trainer lives
    return trainer


class LmTrials:
    """How a sweep (training/sweep.py) starts language-model trials on ``paths``: its settings are
    ``charlm train``'s, and a lower validation loss is better."""

    metric = "val_loss"
    command = "charlm train"

    def __init__(self, paths):
        self.paths = [os.path.abspath(p) for p in paths]

    def specs(self):
        from ..settings import user_specs

        return user_specs(ModelConfig, TrainConfig)

    def configs(self, values: dict):
        from ..config import make_configs

        return make_configs(values)

    def start(self, values: dict, run_dir):
        model_config, train_config = self.configs(values)
        return start_training(list(self.paths), model_config, train_config, given=frozenset(values), run_dir=run_dir)

    def better(self, scores: dict, best: dict | None) -> bool:
        from .task import LmTask

        return LmTask.better(scores, best)
