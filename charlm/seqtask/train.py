"""``SeqTrainer``: a classifier or tagger trained by the one training loop (training/loop.py) as
a ``SeqTask`` (seqtask/task.py), and resumed from a run directory's last checkpoint."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import from_dict
from ..errors import CheckpointError, ConfigError
from ..training.loop import Loop
from ..training.run_state import check_fingerprint, resume_config
from . import store
from .config import SeqModelConfig, SeqTrainConfig, stored_eval_every
from .task import SeqTask


class SeqTrainer(Loop):
    """Trains a classifier or tagger in ``run_dir`` (``trainer.model``, ``trainer.labels``... are its task's)."""

    def __init__(self, train, dev, model_config: SeqModelConfig, train_config: SeqTrainConfig, run_dir,
                 *, data_spec=None, clock=time.perf_counter, _resume: store.SeqCheckpoint | None = None):
        task = SeqTask(train, dev, model_config, train_config, data_spec=data_spec, resume=_resume)
        if _resume is None:
            task.init_weights()
        super().__init__(task, run_dir, clock=clock, resumed=None if _resume is None else task.restore(_resume))

    @classmethod
    def resume(cls, run_dir, train, dev, *, clock=time.perf_counter, **overrides) -> "SeqTrainer":
        """Continue a run from its last.safetensors; ``overrides`` may change what
        training/run_state.resume_config allows (the budget, eval_every, threads), nothing else."""
        run_dir = Path(run_dir)
        if not (run_dir / store.LAST_FILE).exists():
            raise CheckpointError(f"{run_dir}: no {store.LAST_FILE} to resume from")
        last = store.load(run_dir / store.LAST_FILE)
        tcfg = resume_config(saved_train_config(last.metadata, run_dir), overrides)
        trainer = cls(train, dev, last.config, tcfg, run_dir, data_spec=last.metadata.get("data"), clock=clock,
                      _resume=last)
        if last.metadata.get("train_examples") != len(trainer.train):
            raise ConfigError(f"cannot resume: the training data has changed ({len(trainer.train)} "
                              f"examples now, {last.metadata.get('train_examples')} before)")
        check_fingerprint(last.metadata.get("fingerprint"), trainer.fingerprint(), run_dir)
        return trainer


def saved_train_config(metadata: dict, run_dir) -> SeqTrainConfig:
    """The training configuration a last checkpoint stored (eval_every in any shape it was written in)."""
    try:
        saved = dict(metadata["train_config"])
        saved["eval_every"] = stored_eval_every(saved.get("eval_every", "auto"))
        return from_dict(SeqTrainConfig, saved).validate()
    except (KeyError, TypeError, ValueError, ConfigError):
        raise CheckpointError(f"{run_dir}: last checkpoint has no valid training state") from None
