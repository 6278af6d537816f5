"""The training loop: truncated BPTT with carried state, clipping, evaluation, checkpoints.

``Trainer.events()`` yields events (StepEvent, EvalEvent, CheckpointEvent, DoneEvent) and never
prints; the CLI renders them. Resuming is exact: the checkpoint holds the weights, optimiser
buffers, step, data position, carried hidden state, random state and schedule, so a run that
is stopped and resumed produces the same losses as one that never stopped.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .config import ModelConfig, TrainConfig, from_dict, replace, to_dict
from .batches import StreamBatcher
from .corpus import Corpus
from .errors import CheckpointError, ConfigError
from .evaluate import score_ids

LN2 = math.log(2.0)
MAX_BAD_STEPS = 5   # consecutive non-finite steps before training gives up


@dataclass
class StepEvent:
    step: int               # optimiser steps done so far
    epoch: float            # fractional epochs done
    loss: float             # training loss of this step, nats per token
    grad_norm: float        # global gradient norm before clipping
    lr: float
    tokens_per_s: float     # of this step
    elapsed: float          # seconds of training so far (across resumes)


@dataclass
class EvalEvent:
    step: int
    train_loss: float       # mean training loss since the previous evaluation
    val_loss: float         # nats per token on the validation text (nan when there is none)
    val_bpc: float | None   # bits per character (character models)
    val_ppl: float          # perplexity per token
    best_val_loss: float
    improved: bool
    elapsed: float


@dataclass
class CheckpointEvent:
    step: int
    path: Path
    best: bool              # this is the new best model


@dataclass
class DoneEvent:
    step: int
    reason: str             # "steps" | "epochs" | "time" | "stopped" | "diverged"
    best_val_loss: float
    elapsed: float
    run_dir: Path
    message: str = ""


@dataclass
class SampleEvent:
    step: int
    text: str               # a short sample from the current weights (TrainConfig.sample_every)


@dataclass
class WarningEvent:
    step: int
    message: str


@dataclass
class _Position:
    """Everything besides weights and optimiser buffers that an exact resume needs."""

    step: int = 0
    elapsed: float = 0.0
    best_val_loss: float = math.inf
    bad_steps: int = 0
    train_loss_sum: float = 0.0
    train_loss_count: int = 0
    extra: dict = field(default_factory=dict)


class Trainer:
    """Owns a model, its optimiser and the data position for one run directory."""

    def __init__(self, corpus: Corpus, model_config: ModelConfig, train_config: TrainConfig,
                 run_dir, *, _resume: ckpt.Checkpoint | None = None):
        from .model import Model
        from .optim import Schedule, make_optimizer

        self.corpus, self.tcfg = corpus, train_config.validate()
        seed = self.tcfg.seed  # (TrainConfig.validate does not check it yet)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.run_dir = Path(run_dir)
        self.mcfg = replace(model_config, vocab_size=len(corpus.tokenizer)).validate()
        self.batcher = StreamBatcher(corpus.train, self.tcfg.batch_size, self.tcfg.seq_len)
        self.model = Model(self.mcfg, dtype=np.dtype(self.tcfg.dtype))
        self.optimizer = make_optimizer(self.tcfg.optimizer, self.model.size, self.model.dtype,
                                        weight_decay=self.tcfg.weight_decay, momentum=self.tcfg.momentum)
        self.schedule = Schedule(self.tcfg.schedule, self.tcfg.lr, total=self._total_steps_estimate(),
                                 warmup=self.tcfg.warmup_steps, min_lr=self.tcfg.min_lr)
        self.rng = np.random.default_rng(self.tcfg.seed)
        self.pos = _Position()
        self.state = self.model.init_state(self.tcfg.batch_size)
        self._stop = False
        self._saved_step = None     # step of the newest last.safetensors written or resumed from
        if _resume is None:
            self.model.init_weights(self.rng)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._restore(_resume)

    # -- construction helpers -----------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir, corpus_builder, **train_overrides) -> "Trainer":
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
        return cls(corpus, last.config, tcfg, run_dir, _resume=last)

    def _total_steps_estimate(self) -> int:
        t = self.tcfg
        per_epoch = self.batcher.windows_per_epoch
        candidates = [t.steps] if t.steps else []
        if t.epochs:
            candidates.append(int(math.ceil(t.epochs * per_epoch)))
        if not candidates and not t.time_budget:
            candidates.append(per_epoch)
        return min(candidates) if candidates else 0

    # -- checkpoints ----------------------------------------------------------------------------

    def _metadata(self) -> dict:
        return {"train_config": to_dict(self.tcfg), "sources": list(self.corpus.sources),
                "train_tokens": int(self.corpus.train.size), "eos": self.corpus.eos, "step": self.pos.step,
                "best_val_loss": _finite_or_none(self.pos.best_val_loss), "start_state": self._start_state()}

    def _start_state(self, context: int = 2048) -> list:
        """Where sampling starts: the state just before the last <eos> of the training text, after
        reading up to ``context`` tokens before it. A model trained with carried state almost
        never sees the zero state, so text generated from it begins garbled."""
        from .evaluate import state_after

        cached = getattr(self, "_start_cache", None)
        if cached is not None and cached[0] == self.pos.step:  # best and last are saved at one step
            return cached[1]
        train = self.corpus.train
        tail = np.asarray(train[max(0, len(train) - 8 * context):])
        ends = np.flatnonzero(tail == self.corpus.tokenizer.eos_id)
        ends = ends[ends >= min(64, len(tail) - 1)]  # an <eos> with some text before it, else the end
        end = int(ends[-1]) if ends.size else len(tail) - 1
        state = state_after(self.model, tail[max(0, end - context):end + 1].astype(np.int64))
        value = np.round(state[:, :, 0, :].astype(np.float64), 6).tolist()  # (L, S, H)
        self._start_cache = (self.pos.step, value)
        return value

    def save_last(self) -> Path:
        """Write last.safetensors: weights, optimiser buffers and the whole position."""
        arrays, scalars = self.optimizer.state_dict()
        extra = dict(arrays)
        extra["train_state"] = self.state
        pos = self.pos
        meta = self._metadata() | {
            "optimizer": scalars, "schedule": self.schedule.state_dict(),
            "batcher": self.batcher.state_dict(), "rng": self.rng.bit_generator.state,
            "position": {"elapsed": pos.elapsed, "bad_steps": pos.bad_steps,
                         "train_loss_sum": pos.train_loss_sum, "train_loss_count": pos.train_loss_count},
        }
        path = self.run_dir / ckpt.LAST_FILE
        ckpt.save_checkpoint(path, self.mcfg, self.corpus.tokenizer, self.model.state_dict(),
                             extra_tensors=extra, metadata=meta)
        self._saved_step = pos.step
        return path

    def save_best(self, val_loss: float) -> Path:
        path = self.run_dir / ckpt.MODEL_FILE
        ckpt.save_checkpoint(path, self.mcfg, self.corpus.tokenizer, self.model.state_dict(),
                             metadata=self._metadata() | {"val_loss": _finite_or_none(val_loss)})
        return path

    def _restore(self, last: ckpt.Checkpoint) -> None:
        try:
            self._restore_state(last)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise CheckpointError(f"{last.path}: training state is incomplete or malformed "
                                  f"({type(e).__name__}: {str(e)[:100]})") from None
        # model.safetensors may be newer than last.safetensors (a crash between the two writes,
        # which happen in that order): never let the resumed run replace it with a worse model.
        self.pos.best_val_loss = min(self.pos.best_val_loss, _saved_val_loss(self.run_dir))
        self._saved_step = self.pos.step
        ckpt.remove_stale_temp_files(self.run_dir)
        ckpt.truncate_metrics(self.run_dir, self.pos.step)

    def _restore_state(self, last: ckpt.Checkpoint) -> None:
        meta = last.metadata
        self.model.load_state_dict(last.tensors)
        extra = dict(last.extra)
        state = extra.pop("train_state", None)
        if state is None or state.shape != self.state.shape:
            raise CheckpointError(f"{last.path}: carried training state is missing or has the wrong shape")
        self.state[...] = state
        self.optimizer.load_state_dict(extra, meta["optimizer"])
        self.schedule.load_state_dict(meta["schedule"])
        self.batcher.load_state_dict(meta["batcher"])
        self.rng.bit_generator.state = meta["rng"]
        p = meta["position"]
        best = meta.get("best_val_loss")
        best = math.inf if best is None or not math.isfinite(best) else float(best)
        self.pos = _Position(step=int(meta["step"]), elapsed=float(p["elapsed"]), best_val_loss=best,
                             bad_steps=int(p["bad_steps"]), train_loss_sum=float(p["train_loss_sum"]),
                             train_loss_count=int(p["train_loss_count"]))

    # -- the loop ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to finish the current step, checkpoint and stop (Ctrl-C handler)."""
        self._stop = True

    def _budget_reason(self, started: float, elapsed0: float) -> str | None:
        t, pos = self.tcfg, self.pos
        epochs_done = self.batcher.epoch + self.batcher.position / self.batcher.windows_per_epoch
        if t.steps and pos.step >= t.steps:
            return "steps"
        if t.epochs and epochs_done >= t.epochs:
            return "epochs"
        if t.time_budget and elapsed0 + (time.perf_counter() - started) >= t.time_budget:
            return "time"
        if not (t.steps or t.epochs or t.time_budget) and self.batcher.epoch >= 1:
            return "epochs"
        return None

    def events(self):
        """Train until a budget is reached or a stop is requested, yielding events. The thread
        limits (``TrainConfig.threads``) hold while it runs and are undone when it ends."""
        from .runtime import thread_limits

        with thread_limits(self.tcfg.threads):
            yield from self._events()

    def _events(self):
        t, model, pos = self.tcfg, self.model, self.pos
        started, elapsed0 = time.perf_counter(), pos.elapsed
        reason = self._budget_reason(started, elapsed0)
        while reason is None and not self._stop:
            x, y = self.batcher.next_batch()
            t0 = time.perf_counter()
            with np.errstate(all="ignore"):  # non-finite values are handled below, not warned about
                loss, new_state = model.loss_and_grad(x, y, self.state, self.rng)
                norm = self._clip()
            lr = self.schedule.lr(pos.step)
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
            pos.elapsed = elapsed0 + (time.perf_counter() - started)
            pos.train_loss_sum += loss
            pos.train_loss_count += 1
            dt = time.perf_counter() - t0
            epoch = self.batcher.epoch + self.batcher.position / self.batcher.windows_per_epoch
            event = StepEvent(pos.step, epoch, loss, norm, lr, x.size / max(dt, 1e-9), pos.elapsed)
            ckpt.append_metrics(self.run_dir, {"kind": "step", "step": pos.step, "loss": loss,
                                               "grad_norm": norm, "lr": lr, "elapsed": pos.elapsed})
            yield event
            reason = self._budget_reason(started, elapsed0)
            if pos.step % t.eval_every == 0 or reason is not None:
                yield from self._evaluate_and_save()
            if t.sample_every and pos.step % t.sample_every == 0:
                yield SampleEvent(pos.step, self.sample_text())
        if reason is None and self._saved_step != pos.step and self._weights_finite():
            # Ctrl-C: save the exact position quickly, skip the validation pass. (Placed after
            # the loop so that no branch, such as a skipped non-finite step, can miss it.)
            yield CheckpointEvent(pos.step, self.save_last(), False)
        # A diverged run writes nothing more: the last good checkpoint stays as it was.
        reason = reason or "stopped"
        yield DoneEvent(pos.step, reason, pos.best_val_loss, pos.elapsed, self.run_dir,
                        _done_message(reason))

    def sample_text(self, max_length: int = 200, temperature: float = 0.8) -> str:
        """A short sample from the current weights. Seeded by (seed, step) with its own
        generator, so showing samples never changes the training run."""
        from .sample import SampleOptions, Sampler

        options = SampleOptions(temperature=temperature, max_length=max_length,
                                seed=self.tcfg.seed * 1_000_003 + self.pos.step)
        sampler = Sampler(self.model, self.corpus.tokenizer, self._start_state())
        return "".join(sampler.stream("", options))

    def progress(self, step: int, epoch: float, elapsed: float) -> float:
        """Fraction of the budget done: the largest fraction over the budgets that are set,
        since the first one reached stops training (no budget = one epoch)."""
        t = self.tcfg
        parts = [step / t.steps if t.steps else 0.0, epoch / t.epochs if t.epochs else 0.0,
                 elapsed / t.time_budget if t.time_budget else 0.0]
        if not (t.steps or t.epochs or t.time_budget):
            parts.append(epoch)
        return min(1.0, max(parts))

    def _clip(self) -> float:
        from .optim import clip_grad_norm, clip_grad_value

        clip_grad_value(self.model.grad_flat, self.tcfg.clip_value)
        return clip_grad_norm(self.model.grad_flat, self.tcfg.clip_norm)

    def _evaluate_and_save(self):
        pos, model = self.pos, self.model
        train_loss = pos.train_loss_sum / max(pos.train_loss_count, 1)
        pos.train_loss_sum, pos.train_loss_count = 0.0, 0
        if self.corpus.val.size > 1:
            with np.errstate(all="ignore"):
                val_loss = float(score_ids(model, np.asarray(self.corpus.val)).mean())
        else:  # no held-out text: judge by the training loss, and say so in the event
            val_loss = train_loss
        improved = val_loss < pos.best_val_loss
        if improved:
            pos.best_val_loss = val_loss
        self.schedule.observe(val_loss)
        char_level = self.corpus.tokenizer.level == "char"
        event = EvalEvent(pos.step, train_loss, val_loss, val_loss / LN2 if char_level else None,
                          math.exp(min(val_loss, 700.0)), pos.best_val_loss, improved, pos.elapsed)
        ckpt.append_metrics(self.run_dir, {"kind": "eval", "step": pos.step, "train_loss": train_loss,
                                           "val_loss": val_loss, "val_bpc": event.val_bpc,
                                           "val_ppl": event.val_ppl, "elapsed": pos.elapsed})
        if self.tcfg.track_gradients:  # its own seeded generator: training's random stream is untouched
            from .inspect.gradients import tracking_record

            text = self.corpus.val if self.corpus.val.size > 1 else self.corpus.train
            record = tracking_record(model, text, pos.step, self.tcfg.seed)
            if record is not None:
                ckpt.append_metrics(self.run_dir, record)
        yield event
        if not self._weights_finite():  # an overflowing update: keep the last good checkpoints
            yield WarningEvent(pos.step, "weights are no longer finite; checkpoints not updated")
            return
        if improved:
            yield CheckpointEvent(pos.step, self.save_best(val_loss), True)
        yield CheckpointEvent(pos.step, self.save_last(), False)

    def _weights_finite(self) -> bool:
        return bool(np.isfinite(self.model.flat).all())


def _saved_val_loss(run_dir: Path) -> float:
    """val_loss recorded in the run's best checkpoint (inf if there is none or it is unreadable)."""
    try:
        header, _ = ckpt.read_header(run_dir / ckpt.MODEL_FILE)
        value = json.loads(header["__metadata__"]["charlm.val_loss"])
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf
    except (CheckpointError, KeyError, TypeError, ValueError):
        return math.inf


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


def _done_message(reason: str) -> str:
    return {
        "steps": "reached the step budget", "epochs": "reached the epoch budget",
        "time": "reached the time budget", "stopped": "stopped on request; checkpoint saved",
        "diverged": f"stopped: {MAX_BAD_STEPS} non-finite steps in a row; the last good checkpoint is intact",
    }[reason]
