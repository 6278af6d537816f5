"""``Trainer``: a language model trained by the one training loop (training/loop.py) as an
``LmTask`` (lm/task.py), and resumed from a run directory's last checkpoint."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import ModelConfig, TrainConfig, from_dict
from ..data.corpus import Corpus
from ..errors import CheckpointError, ConfigError
from ..training.events import (
    CheckpointEvent,
    DoneEvent,
    EvalEvent,
    SampleEvent,
    StepEvent,
    TimeSplit,
    WarningEvent,
)
from ..training.loop import MAX_BAD_STEPS, Loop
from ..training.run_state import resume_config
from . import checkpoint as ckpt
from . import train_state as files
from .task import LmTask

__all__ = ["Trainer", "StepEvent", "EvalEvent", "CheckpointEvent", "DoneEvent", "SampleEvent",
           "WarningEvent", "TimeSplit", "MAX_BAD_STEPS"]


class Trainer(Loop):
    """Owns a language model, its optimiser and the data position for one run directory
    (``trainer.model``, ``trainer.corpus``... are its task's)."""

    def __init__(self, corpus: Corpus, model_config: ModelConfig, train_config: TrainConfig,
                 run_dir, *, clock=time.perf_counter, _resume: ckpt.Checkpoint | None = None):
        task = LmTask(corpus, model_config, train_config)
        if _resume is None:
            task.init_weights()
            resumed = None
        else:
            resumed = files.restore(task, _resume, Path(run_dir))
        super().__init__(task, run_dir, clock=clock, resumed=resumed)

    @classmethod
    def resume(cls, run_dir, corpus_builder, *, clock=time.perf_counter, **train_overrides) -> "Trainer":
        """Continue a run from its last checkpoint.

        ``corpus_builder(tokenizer, train_config, sources)`` must rebuild the corpus with the
        saved vocabulary. ``train_overrides`` may change what training/run_state.resume_config
        allows (the budget, eval_every, threads, sample_every, track_gradients); nothing else.
        """
        run_dir = Path(run_dir)
        if not (run_dir / ckpt.LAST_FILE).exists():
            why = (f"{run_dir} has no {ckpt.LAST_FILE} to resume from" if (run_dir / ckpt.MODEL_FILE).exists()
                   else f"{run_dir} is not a run directory (no {ckpt.LAST_FILE})" if run_dir.is_dir()
                   else f"{run_dir}: no such run directory")
            raise CheckpointError(why + (" (training stopped before its first full checkpoint: start it again)"
                                         if (run_dir / ckpt.MODEL_FILE).exists() else ""))
        last = ckpt.load_checkpoint(run_dir / ckpt.LAST_FILE)
        meta = last.metadata
        try:
            tcfg = from_dict(TrainConfig, meta["train_config"]).validate()
        except KeyError:
            raise CheckpointError(f"{run_dir}: last checkpoint has no training state to resume") from None
        except (ConfigError, TypeError, ValueError) as e:  # names come from the file: one line
            raise CheckpointError(f"{run_dir}: the saved training configuration is invalid "
                                  f"({ckpt.one_line(str(e))})") from None
        tcfg = resume_config(tcfg, train_overrides, LmTask.display_settings)
        corpus = corpus_builder(last.tokenizer, tcfg, meta.get("sources", []))
        if meta.get("train_tokens") != int(corpus.train.size):
            raise ConfigError(f"cannot resume: the training text has changed "
                              f"({corpus.train.size} tokens now, {meta.get('train_tokens')} before)")
        return cls(corpus, last.config, tcfg, run_dir, clock=clock, _resume=last)

    @property
    def auto_choice(self):
        """autoconfig.Choice.to_dict() when the model was chosen for the budget (the task's)."""
        return self.task.auto_choice

    @auto_choice.setter
    def auto_choice(self, value) -> None:
        self.task.auto_choice = value

    def sample_text(self, max_length: int = 200, temperature: float = 0.8) -> str:
        """A short sample from the current weights (seeded by the run's seed and step)."""
        return self.task.sample_text(self.pos.step, max_length, temperature)
