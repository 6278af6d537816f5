"""Classifier and tagger runs: reading a run's data from its description, starting and resuming a
run, and finding runs under the runs directory. Nothing here prints.

A run's data is described by a small dict stored in its checkpoints (``charlm.data``), so that a
resume needs no arguments: task, format (tsv | conll | spaces), the training file, the dev file
or the fraction of the training examples held out as dev, the TSV header rule and the seed of
the hold-out.
"""
from __future__ import annotations

import os
from pathlib import Path


from ..errors import CheckpointError, ConfigError
from . import data, store
from ..settings import Overrides
from .config import SeqModelConfig, SeqTrainConfig

FORMATS = {"classify": ("tsv",), "tag": ("conll", "spaces")}


def data_spec(task: str, train_file, *, dev_file=None, dev_fraction: float = 0.1, fmt: str = "",
              header: str = "auto", seed: int = 1234) -> dict:
    from ..data.text_files import check_file

    check_file(train_file)  # a FIFO, /dev/zero or standard input is refused before any run is made
    if dev_file:
        check_file(dev_file)
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
    """(training examples, dev examples) as the spec describes them; training data with nothing
    to learn is refused, and a held-out dev keeps every label in training (learnable.py)."""
    from .learnable import check_learnable, hold_out

    train = read_split(spec, spec["train"])
    check_learnable(train, spec["train"], spec["format"])
    if spec.get("dev"):
        return train, read_split(spec, spec["dev"])
    fraction = spec.get("dev_fraction", 0.0)
    if not fraction:
        return train, []
    return hold_out(train, fraction, spec.get("seed", 0), spec["train"])


def start(spec: dict, model_config: SeqModelConfig, train_config: SeqTrainConfig, root, run_dir=None,
          given: frozenset[str] | None = None):
    """A new SeqTrainer for ``spec`` with these configurations (validated: config.make_seq_configs),
    in ``run_dir`` or a fresh directory under ``root``. The directory is claimed for this process
    (runs/directory.py: a directory that holds anything is refused, and a second process cannot
    write it); if reading the data fails, what the claim made is removed again.
    ``given``: the settings the user gave; the others are chosen for the budget (recipe.py) and
    the choice is stored with the data's description (``chosen``). None: the configurations as
    they are."""
    from ..distributed import from_rank0, on_rank0, world
    from ..runs.directory import claim_new_run, make_run_dir, release_new
    from ..runs.find import run_stem
    from .recipe import settle_recipe
    from .train import SeqTrainer

    # under mpiexec, rank 0 claims the directory and the others train in it without a lock
    lock = on_rank0(lambda: claim_new_run(run_dir) if run_dir is not None else make_run_dir(root, run_stem(spec["train"])))
    try:
        train, dev = load_data(spec)
        if spec["format"] == "conll" and model_config.level == "char":
            from .learnable import check_single_characters

            check_single_characters(train + dev, spec["train"])
        if spec["format"] == "spaces":
            spec = spec | {"derived_task": "restore-spaces"}
        if given is not None:
            model_config, train_config, choice = from_rank0(
                lambda: settle_recipe(train, model_config, train_config, given, world().size, held_out=bool(dev)))
            spec = spec | ({"chosen": choice.to_dict()} if choice is not None else {})
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
    from ..distributed import on_rank0
    from ..runs.directory import claim_run, release_new
    from .train import SeqTrainer

    run_dir = Path(run_dir)
    run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
    last = run_dir / store.LAST_FILE
    if not last.exists():
        raise CheckpointError(f"{run_dir}: no {store.LAST_FILE} to resume from")
    lock = on_rank0(lambda: claim_run(run_dir))
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


class SeqTrials:
    """How a sweep (training/sweep.py) starts classifier or tagger trials (``task``) on the data
    ``data_spec`` describes (checked here, once): its settings are ``charlm <task> train``'s, and
    a higher dev accuracy is better (ties: a lower dev loss, as the run itself ranks them)."""

    metric = "accuracy"

    def __init__(self, task: str, train_file, **data):
        self.task, self.command = task, f"charlm {task} train"
        self.spec = data_spec(task, train_file, **data)

    def specs(self):
        from ..settings import user_specs
        from .config import CLASSIFY_ONLY

        return user_specs(SeqModelConfig, SeqTrainConfig, exclude=() if self.task == "classify" else CLASSIFY_ONLY)

    def configs(self, values: dict):
        from .config import make_seq_configs

        return make_seq_configs(self.task, with_natural_level(values, self.spec["format"]))

    def start(self, values: dict, run_dir):
        model_config, train_config = self.configs(values)
        return start(self.spec | {"seed": train_config.seed}, model_config, train_config, None, run_dir,
                     given=recipe_given(values, self.spec))

    def better(self, scores: dict, best: dict | None) -> bool:
        from .task import SeqTask

        return SeqTask.better(scores, best)


# The level a tagging format implies unless one is given: restoring spaces tags characters; a
# CoNLL file's tokens are words.
NATURAL_LEVEL = {"spaces": "char", "conll": "word"}


def with_natural_level(values: dict, fmt: str) -> dict:
    """``values`` with the level ``fmt`` implies, unless they give one."""
    natural = NATURAL_LEVEL.get(fmt)
    return values if natural is None else {"level": natural} | values


def recipe_given(values: dict, spec: dict) -> frozenset[str]:
    """The settings a user gave (``values``: field name -> value), for the recipe chooser: the
    level a format implies (NATURAL_LEVEL) is not the user's choice."""
    natural = NATURAL_LEVEL.get(spec.get("format"))
    implied = {"level"} if natural is not None and values.get("level") == natural else set()
    return frozenset(values) - implied
