"""Training a classifier or tagger: bucketed batches, Adam with clipping (lazy on the hashed
tables' rows: sparse_adam.py), a learning rate that decays over the budget, dev evaluation,
best/last checkpoints, exact resume, stop on request.

``SeqTrainer.events()`` yields events and never prints. The budget is steps, epochs or wall-clock
time (the first reached stops; none given: 10 epochs); the cosine schedule follows the fraction
of the budget spent, so it reaches ``min_lr`` when the run ends however the budget was given.
The best checkpoint is the one with the highest dev accuracy (ties: lower dev loss); without a
dev split, the training data is scored instead, and the events say so.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import from_dict
from ..errors import CheckpointError, ConfigError
from ..runs.metrics import append_metrics, truncate_metrics
from . import store
from .batching import encode_examples, epoch_batches, fit_labels, fit_vocabulary, pad
from .config import SeqModelConfig, SeqTrainConfig
from .events import SeqCheckpointEvent, SeqDoneEvent, SeqEvalEvent, SeqStepEvent
from .metrics import score
from .model import kernel_scope

MAX_BAD_STEPS = 5


@dataclass
class _Position:
    step: int = 0
    epoch: int = 0
    batch: int = 0          # batches of this epoch done
    elapsed: float = 0.0
    best: list = field(default_factory=lambda: [-1.0, math.inf])  # (accuracy, loss) of the best
    loss_sum: float = 0.0
    loss_count: int = 0


class SeqTrainer:
    def __init__(self, train, dev, model_config: SeqModelConfig, train_config: SeqTrainConfig, run_dir,
                 *, data_spec=None, _resume: store.SeqCheckpoint | None = None):
        from .ensemble import build_model
        from .sparse_adam import LazyAdam

        self.tcfg = train_config.validate()
        task = model_config.task
        if _resume is None:
            tokenizer = fit_vocabulary(train, model_config.level, task)
            labels = fit_labels(train, task)
            split = tokenizer.split if tokenizer.level == "word" else ""
            model_config = replace(model_config, vocab_size=len(tokenizer), num_labels=len(labels), split=split)
        else:
            tokenizer, labels, model_config = _resume.tokenizer, _resume.labels, _resume.config
        self.mcfg, self.tokenizer, self.labels = model_config.validate(), tokenizer, labels
        self.data_spec = dict(data_spec or {})
        self.train = encode_examples(train, tokenizer, labels, task, max_length=self.tcfg.max_length,
                                     where="training data: ")
        self.dev = encode_examples(dev, tokenizer, labels, task, where="dev data: ") if dev else None
        self.run_dir = Path(run_dir)
        self.model = build_model(self.mcfg, np.dtype(self.tcfg.dtype))
        self.optimizer = LazyAdam(self.model.layout, self.model.size, self.model.dtype,
                                  weight_decay=self.tcfg.weight_decay)
        self.rng = np.random.default_rng(self.tcfg.seed)
        self.pos = _Position()
        self._stop, self._saved_step = False, None
        if _resume is None:
            self.model.init_weights(self.rng)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._restore(_resume)
        self._epoch_cache = None

    @classmethod
    def resume(cls, run_dir, train, dev, **overrides) -> "SeqTrainer":
        """Continue a run from its last.safetensors; ``overrides`` may change the budget, the
        evaluation cadence and the thread count (which never changes the results), nothing else."""
        run_dir = Path(run_dir)
        if not (run_dir / store.LAST_FILE).exists():
            raise CheckpointError(f"{run_dir}: no {store.LAST_FILE} to resume from")
        last = store.load(run_dir / store.LAST_FILE)
        try:
            tcfg = from_dict(SeqTrainConfig, last.metadata["train_config"]).validate()
        except (KeyError, TypeError, ConfigError):
            raise CheckpointError(f"{run_dir}: last checkpoint has no valid training state") from None
        allowed = {"steps", "epochs", "time_budget", "eval_every", "threads"}
        changed = sorted(k for k, v in overrides.items() if v is not None and k not in allowed
                         and v != getattr(tcfg, k, v))
        if changed:
            raise ConfigError(f"cannot change {', '.join(changed)} when resuming (only the budget, "
                              "eval_every and threads)")
        tcfg = replace(tcfg, **{k: v for k, v in overrides.items() if v is not None and k in allowed}).validate()
        trainer = cls(train, dev, last.config, tcfg, run_dir, data_spec=last.metadata.get("data"), _resume=last)
        if last.metadata.get("train_examples") != len(trainer.train):
            raise ConfigError(f"cannot resume: the training data has changed ({len(trainer.train)} "
                              f"examples now, {last.metadata.get('train_examples')} before)")
        saved = last.metadata.get("fingerprint")
        if isinstance(saved, dict):  # (checkpoints written before fingerprints: the count only)
            changed = [name for name, now in trainer.fingerprint.items() if saved.get(name) != now]
            if changed:
                raise ConfigError(f"cannot resume: the {' and '.join(changed)} data differ from what this run "
                                  "was trained on (same number of examples, other content); resume with "
                                  "the original files, or start a new run")
        return trainer

    @functools.cached_property
    def fingerprint(self) -> dict:
        """Content digests of the training and dev splits, computed once."""
        return {"training": self.train.digest(), "dev": self.dev.digest() if self.dev is not None else None}

    # -- budget and schedule -------------------------------------------------------------------

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.tcfg.batch_size)

    def epochs_done(self) -> float:
        return self.pos.epoch + self.pos.batch / self.batches_per_epoch()

    def progress(self) -> float:
        t, p = self.tcfg, self.pos
        parts = [p.step / t.steps if t.steps else 0.0, p.elapsed / t.time_budget if t.time_budget else 0.0]
        if t.default_epochs:
            parts.append(self.epochs_done() / t.default_epochs)
        return min(1.0, max(parts))

    def lr(self) -> float:
        t = self.tcfg
        lr = t.lr
        if t.schedule == "cosine":
            lr = t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * self.progress()))
        if t.warmup_steps and self.pos.step < t.warmup_steps:
            lr *= (self.pos.step + 1) / t.warmup_steps
        return lr

    def _budget_reason(self) -> str | None:
        t, p = self.tcfg, self.pos
        if t.steps and p.step >= t.steps:
            return "steps"
        if t.default_epochs and self.epochs_done() >= t.default_epochs - 1e-12:
            return "epochs"
        if t.time_budget and p.elapsed >= t.time_budget:
            return "time"
        return None

    def _eval_due(self) -> bool:
        every = self.tcfg.eval_every
        return self.pos.step % every == 0 if every else self.pos.batch == 0

    # -- the loop ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop = True

    def _next_batch(self):
        p = self.pos
        if self._epoch_cache is None or self._epoch_cache[0] != p.epoch:
            self._epoch_cache = (p.epoch, epoch_batches(self.train.lengths, self.tcfg.batch_size,
                                                        self.tcfg.seed, p.epoch))
        return pad(self.train, self._epoch_cache[1][p.batch], self.mcfg.task)

    def events(self):
        """Train until a budget is reached or a stop is requested, yielding events."""
        with kernel_scope(self.tcfg.threads):
            yield from self._events()

    def _events(self):
        from .sparse_grad import clip_norm

        p, model = self.pos, self.model
        started, elapsed0 = time.perf_counter(), p.elapsed
        reason, bad = self._budget_reason(), 0
        while reason is None and not self._stop:
            ids, lengths, targets = self._next_batch()
            lr = self.lr()
            with np.errstate(all="ignore"):
                loss = model.loss_and_grad(ids, lengths, targets, self.rng)
                norm = clip_norm(model.grad_flat, model.layout, model.touched, self.tcfg.clip_norm)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                bad += 1
                if bad >= MAX_BAD_STEPS:
                    reason = "diverged"
                    break
                continue
            bad = 0
            self.optimizer.step(model.flat, model.grad_flat, lr, model.touched)
            p.step += 1
            p.batch += 1
            if p.batch >= self.batches_per_epoch():
                p.epoch, p.batch = p.epoch + 1, 0
            p.elapsed = elapsed0 + time.perf_counter() - started
            p.loss_sum, p.loss_count = p.loss_sum + loss, p.loss_count + 1
            yield SeqStepEvent(p.step, self.epochs_done(), loss, norm, lr, self.progress(), p.elapsed)
            reason = self._budget_reason()
            if self._eval_due() or reason is not None:
                yield from self._evaluate_and_save()
        if reason is None and self._saved_step != p.step:  # stopped on request: keep the exact position
            yield SeqCheckpointEvent(p.step, self.save_last(), False)
        yield SeqDoneEvent(p.step, reason or "stopped", self.pos.best[0], p.elapsed, self.run_dir)

    def _evaluate_and_save(self):
        p = self.pos
        train_loss = p.loss_sum / max(p.loss_count, 1)
        p.loss_sum, p.loss_count = 0.0, 0
        scores = score(self.model, self.dev or self.train, self.labels)
        key = [scores["accuracy"], scores["loss"]]
        improved = key[0] > p.best[0] or (key[0] == p.best[0] and key[1] < p.best[1])
        if improved:
            p.best = key
        yield SeqEvalEvent(p.step, self.epochs_done(), train_loss, scores, improved, p.best[0],
                           self.dev is None, p.elapsed)
        append_metrics(self.run_dir, {"kind": "eval", "step": p.step, "train_loss": train_loss,
                                           "loss": scores["loss"], "accuracy": scores["accuracy"],
                                           "macro_f1": scores["macro_f1"], "elapsed": p.elapsed})
        if not np.isfinite(self.model.flat).all():
            return
        if improved:
            yield SeqCheckpointEvent(p.step, self._save(store.MODEL_FILE, scores=_brief(scores)), True)
        yield SeqCheckpointEvent(p.step, self.save_last(), False)

    # -- checkpoints -----------------------------------------------------------------------------

    def _save(self, name, extra=None, **metadata):
        meta = {"train_config": dataclasses.asdict(self.tcfg), "data": self.data_spec, "step": self.pos.step,
                "train_examples": len(self.train), "fingerprint": self.fingerprint} | metadata
        return store.save(self.run_dir / name, self.mcfg, self.tokenizer, self.labels,
                          self.model.state_dict(), extra=extra, metadata=meta)

    def save_last(self) -> Path:
        arrays, scalars = self.optimizer.state_dict()
        p = self.pos
        path = self._save(store.LAST_FILE, extra=arrays, optimizer=scalars, rng=self.rng.bit_generator.state,
                          position={"epoch": p.epoch, "batch": p.batch, "elapsed": p.elapsed, "best": p.best,
                                    "loss_sum": p.loss_sum, "loss_count": p.loss_count})
        self._saved_step = p.step
        return path

    def _restore(self, last: store.SeqCheckpoint) -> None:
        try:
            meta, q = last.metadata, last.metadata["position"]
            self.model.load_state_dict(last.tensors)
            self.optimizer.load_state_dict(last.extra, meta["optimizer"])
            self.rng.bit_generator.state = meta["rng"]
            best = [float(q["best"][0]), math.inf if q["best"][1] is None else float(q["best"][1])]
            self.pos = _Position(int(meta["step"]), int(q["epoch"]), int(q["batch"]), float(q["elapsed"]),
                                 best, float(q["loss_sum"]), int(q["loss_count"]))
        except (KeyError, TypeError, ValueError, IndexError, ConfigError) as e:
            raise CheckpointError(f"{last.path}: training state is incomplete or malformed "
                                  f"({type(e).__name__})") from None
        self._saved_step = self.pos.step
        truncate_metrics(self.run_dir, self.pos.step)


def _brief(scores: dict) -> dict:
    return {k: scores[k] for k in ("accuracy", "macro_f1", "loss") if k in scores}
