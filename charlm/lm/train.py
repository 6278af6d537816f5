"""The training loop: truncated BPTT with carried state, clipping, evaluation, checkpoints.

``Trainer.events()`` yields events (training/events.py) and never prints; the CLI renders them.
The learning-rate schedule follows the fraction of the budget spent (training/budget.py), evaluation
runs on a cadence that keeps it a small share of the run, and step records are written at
checkpoints, not per step. Resuming is exact: the checkpoint holds the weights, optimiser
buffers, step, data position, carried hidden state, random state and schedule, so a run that
is stopped and resumed produces the same losses as one that never stopped (with a time budget
the schedule follows the clock, so only the losses up to a given step reproduce).

The time budget counts the training loop with its evaluations and checkpoints, not the
one-time kernel compilation before the first step (``TimeSplit.compile``): a fresh install
compiles for tens of seconds, which says nothing about the model the budget buys.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..config import ModelConfig, TrainConfig, from_dict, replace
from ..data.batches import StreamBatcher
from ..data.corpus import Corpus
from ..distributed import attach
from ..errors import CheckpointError, ConfigError
from ..training.budget import Budget, EvalCadence
from ..training.events import (
    CheckpointEvent,
    DoneEvent,
    EvalEvent,
    Position,
    SampleEvent,
    StepEvent,
    TimeSplit,
    WarningEvent,
)
from . import checkpoint as ckpt
from . import train_state as files
from .evaluate import mean_nll

__all__ = ["Trainer", "StepEvent", "EvalEvent", "CheckpointEvent", "DoneEvent", "SampleEvent",
           "WarningEvent", "TimeSplit", "MAX_BAD_STEPS"]

LN2 = math.log(2.0)
MAX_BAD_STEPS = 5   # consecutive non-finite steps before training gives up


class Trainer:
    """Owns a model, its optimiser and the data position for one run directory.

    ``clock`` (seconds, monotonic) is injectable so that tests can drive a time budget."""

    def __init__(self, corpus: Corpus, model_config: ModelConfig, train_config: TrainConfig,
                 run_dir, *, clock=time.perf_counter, _resume: ckpt.Checkpoint | None = None):
        from ..optim import Schedule, make_optimizer
        from .model import Model

        self.corpus, self.tcfg = corpus, train_config.validate()
        self.run_dir = Path(run_dir)
        self.mcfg = replace(model_config, vocab_size=len(corpus.tokenizer)).validate()
        self.batcher = StreamBatcher(corpus.train, self.tcfg.batch_size, self.tcfg.seq_len)
        self.model = Model(self.mcfg, dtype=np.dtype(self.tcfg.dtype))
        self.optimizer = make_optimizer(self.tcfg.optimizer, self.model.size, self.model.dtype,
                                        weight_decay=self.tcfg.weight_decay, momentum=self.tcfg.momentum)
        self.budget = Budget.of(self.tcfg)
        self.schedule = Schedule(self.tcfg.schedule, self.tcfg.lr, warmup=self.tcfg.warmup_steps,
                                 min_lr=self.tcfg.min_lr)
        self.rng = np.random.default_rng(self.tcfg.seed)
        self.pos = Position()
        self.state = self.model.init_state(self.tcfg.batch_size)
        self.metrics = files.MetricsBuffer(self.run_dir)
        self.clock = clock
        self.evaluating = False      # an evaluation is running (the live view shows it)
        self.auto_choice = None      # autoconfig.Choice.to_dict() when the model was chosen for the budget
        self._stop = False
        self._warm = False           # kernels compiled/loaded in this process
        self._saved_step = None      # step of the newest last.safetensors written or resumed from
        if _resume is None:
            self.model.init_weights(self.rng)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:
            files.restore(self, _resume)
            self._saved_step = self.pos.step
        self.comm = attach(self)     # alone: Solo; under mpiexec: one model trained by every rank

    # -- construction helpers -----------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir, corpus_builder, *, clock=time.perf_counter, **train_overrides) -> "Trainer":
        """Continue a run from its last checkpoint.

        ``corpus_builder(tokenizer, train_config, sources)`` must rebuild the corpus with the
        saved vocabulary. ``train_overrides`` may extend the budget (steps, epochs, time_budget,
        eval_every); anything that would change the data stream or the model is refused.
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
        frozen = ("level", "eos", "val_fraction", "val_file", "seq_len", "batch_size", "optimizer", "dtype",
                  "max_vocab", "min_count", "seed")
        for key, value in train_overrides.items():
            if value is not None and key in frozen and value != getattr(tcfg, key):
                raise ConfigError(f"cannot resume with {key}={value!r}: the run was trained with "
                                  f"{key}={getattr(tcfg, key)!r}")
        unknown = sorted(k for k, v in train_overrides.items()
                         if v is not None and k not in TrainConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"cannot change {', '.join(unknown)} when resuming: the model is "
                              "fixed by its checkpoint")
        tcfg = replace(tcfg, **train_overrides).validate()
        corpus = corpus_builder(last.tokenizer, tcfg, meta.get("sources", []))
        if meta.get("train_tokens") != int(corpus.train.size):
            raise ConfigError(f"cannot resume: the training text has changed "
                              f"({corpus.train.size} tokens now, {meta.get('train_tokens')} before)")
        return cls(corpus, last.config, tcfg, run_dir, clock=clock, _resume=last)


    # -- checkpoints (train_state.py) -------------------------------------------------------

    def save_last(self) -> Path:
        self.metrics.flush()  # before the checkpoint: records past it are dropped on resume
        path = files.save_last(self)
        self._saved_step = self.pos.step
        return path

    def _start_state(self) -> list:
        return files.start_state(self)

    # -- the loop ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to finish the current step, checkpoint and stop (Ctrl-C handler)."""
        self._stop = True

    @property
    def epoch(self) -> float:
        """Fractional passes over the training stream done."""
        return self.batcher.epoch + self.batcher.position / self.batcher.windows_per_epoch

    def progress(self, step: int, epoch: float, elapsed: float) -> float:
        """Fraction of the budget done (budget.Budget.progress)."""
        return self.budget.progress(step, epoch, elapsed)

    def events(self):
        """Train until a budget is reached or a stop is requested, yielding events. The thread
        limits (``TrainConfig.threads``) hold while it runs and are undone when it ends."""
        from ..runtime import thread_limits

        with thread_limits(self.tcfg.threads):
            yield from self._events()

    def _events(self):
        t, model, pos, clock = self.tcfg, self.model, self.pos, self.clock
        if not self._warm:
            self._warm_up()
        started, elapsed0 = clock(), pos.elapsed
        cadence = EvalCadence(t.eval_every, self.progress(pos.step, self.epoch, elapsed0), elapsed0)
        reason = None
        while not self._stop:
            pos.elapsed = elapsed0 + (clock() - started)
            reason = self.budget.reason(pos.step, self.epoch, pos.elapsed)
            if reason is not None:
                break
            lr = self.schedule.lr(pos.step, self.progress(pos.step, self.epoch, pos.elapsed))
            x, y = self.batcher.next_batch()
            t0 = clock()
            with np.errstate(all="ignore"):  # non-finite values are handled below, not warned about
                loss, new_state = self.comm.loss_and_grad(self, x, y)
                norm = self._clip()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                # Skip the update, keep the old state, and cool the learning rate down.
                pos.bad_steps += 1
                self.schedule.scale *= 0.5
                yield WarningEvent(pos.step, f"non-finite loss or gradient at step {pos.step + 1}: "
                                         f"step skipped, learning rate halved to {lr * 0.5:.3g}")
                if pos.bad_steps >= MAX_BAD_STEPS:
                    reason = "diverged"
                    break
                continue
            pos.bad_steps = 0
            with np.errstate(all="ignore"):
                self.optimizer.step(model.flat, model.grad_flat, lr)
            self.state = new_state
            pos.step += 1
            now = clock()
            pos.elapsed = elapsed0 + (now - started)
            pos.split.train += now - t0
            pos.train_loss_sum += loss
            pos.train_loss_count += 1
            self.metrics.add({"kind": "step", "step": pos.step, "loss": loss, "grad_norm": norm, "lr": lr,
                              "elapsed": pos.elapsed} | self.comm.step_record())
            progress = self.progress(pos.step, self.epoch, pos.elapsed)
            self.evaluating = (self.budget.reason(pos.step, self.epoch, pos.elapsed) is not None
                               or cadence.due(pos.step, progress, pos.elapsed))
            yield StepEvent(pos.step, self.epoch, loss, norm, lr, x.size / max(now - t0, 1e-9), pos.elapsed)
            if self.evaluating:
                yield from self._evaluate_and_save()
                pos.elapsed = elapsed0 + (clock() - started)
                cadence.record(progress, pos.elapsed, self._last_eval_seconds)
                self.evaluating = False
            if t.sample_every and pos.step % t.sample_every == 0:
                yield SampleEvent(pos.step, self.sample_text())
        if self._saved_step != pos.step and reason != "diverged" and self._weights_finite():
            if reason is None:  # Ctrl-C: save the exact position quickly, skip the validation pass
                yield CheckpointEvent(pos.step, self.save_last(), False)
            else:  # the budget ran out during a sample or an evaluation's aftermath: end evaluated
                yield from self._evaluate_and_save()
        self.metrics.flush()
        # A diverged run writes nothing more: the last good checkpoint stays as it was.
        reason = reason or "stopped"
        yield DoneEvent(pos.step, reason, pos.best_val_loss, pos.elapsed, self.run_dir,
                        _done_message(reason, self._saved_step is not None), pos.split, pos.best_step)

    def _warm_up(self) -> None:
        """Compile (or load from Numba's cache) the training and evaluation kernels on a 2x2
        batch before the budget's clock starts. Touches no weight, state or random stream."""
        t0 = self.clock()
        x = np.zeros((2, 2), np.int64)
        with np.errstate(all="ignore"):
            self.model.loss_and_grad(x, x, self.model.init_state(2), np.random.default_rng(0))
            self.model.token_nll(x, x, self.model.init_state(2))
        self.pos.split.compile += self.clock() - t0
        self._warm = True

    def sample_text(self, max_length: int = 200, temperature: float = 0.8) -> str:
        """A short sample from the current weights. Seeded by (seed, step) with its own
        generator, so showing samples never changes the training run."""
        from .sample import SampleOptions, Sampler

        options = SampleOptions(temperature=temperature, max_length=max_length,
                                seed=self.tcfg.seed * 1_000_003 + self.pos.step)
        sampler = Sampler(self.model, self.corpus.tokenizer, self._start_state())
        return "".join(sampler.stream("", options))

    def _clip(self) -> float:
        from ..optim import clip_grad_norm, clip_grad_value, grad_norm

        if self.tcfg.clip_value:  # the norm reported is the gradient's own, before any clipping
            norm = grad_norm(self.model.grad_flat)
            clip_grad_value(self.model.grad_flat, self.tcfg.clip_value)
            clip_grad_norm(self.model.grad_flat, self.tcfg.clip_norm)
            return norm
        return clip_grad_norm(self.model.grad_flat, self.tcfg.clip_norm)

    def _evaluate_and_save(self):
        pos, model, clock = self.pos, self.model, self.clock
        train_loss = pos.train_loss_sum / max(pos.train_loss_count, 1)
        pos.train_loss_sum, pos.train_loss_count = 0.0, 0
        held_out = self.corpus.val.size > 1
        t0 = clock()
        if held_out:
            with np.errstate(all="ignore"):
                val_loss = mean_nll(model, np.asarray(self.corpus.val), self.comm)
        else:  # no held-out text: judge by the training loss, and say so in the event
            val_loss = train_loss
        self._last_eval_seconds = clock() - t0
        pos.split.eval += self._last_eval_seconds
        pos.elapsed += self._last_eval_seconds  # the record's elapsed includes the evaluation it reports
        improved = val_loss < pos.best_val_loss
        if improved:
            pos.best_val_loss = val_loss
        self.schedule.observe(val_loss)
        char_level = self.corpus.tokenizer.level == "char"
        event = EvalEvent(pos.step, train_loss, val_loss, val_loss / LN2 if char_level else None,
                          math.exp(min(val_loss, 700.0)), pos.best_val_loss, improved, pos.elapsed,
                          held_out, self._last_eval_seconds, pos.split)
        self.metrics.add({"kind": "eval", "step": pos.step, "train_loss": train_loss, "val_loss": val_loss,
                          "val_bpc": event.val_bpc, "val_ppl": event.val_ppl, "held_out": held_out,
                          "elapsed": pos.elapsed} | pos.split.to_dict())
        if self.tcfg.track_gradients:  # its own seeded generator: training's random stream is untouched
            from .gradflow import tracking_record

            text = self.corpus.val if held_out else self.corpus.train
            record = tracking_record(model, text, pos.step, self.tcfg.seed)
            if record is not None:
                self.metrics.add(record)
        yield event
        if not self._weights_finite():  # an overflowing update: keep the last good checkpoints
            yield WarningEvent(pos.step, "weights are no longer finite; checkpoints not updated")
            return
        t1 = clock()
        if improved:
            pos.best_step = pos.step
            yield CheckpointEvent(pos.step, files.save_best(self, val_loss), True)
        yield CheckpointEvent(pos.step, self.save_last(), False)
        pos.split.checkpoint += clock() - t1

    def _weights_finite(self) -> bool:
        return bool(np.isfinite(self.model.flat).all())


def _done_message(reason: str, has_checkpoint: bool) -> str:
    diverged = f"stopped: {MAX_BAD_STEPS} non-finite steps in a row; " + (
        "the last good checkpoint is intact" if has_checkpoint else
        "no checkpoint had been written yet (try a lower --lr)")
    return {
        "steps": "reached the step budget", "epochs": "reached the epoch budget",
        "time": "reached the time budget", "stopped": "stopped on request; checkpoint saved",
        "diverged": diverged,
    }[reason]
