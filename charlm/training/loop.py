"""The one training loop every task runs on: budget, schedule, evaluation cadence, divergence,
checkpoints, metrics, stop requests and the events the views render.

``Loop.events()`` yields events (training/events.py) and never prints. The learning-rate schedule
(``optim.Schedule``) follows the fraction of the budget spent (training/budget.py: steps, epochs or
time, the first reached; none given: ``DEFAULT_TIME_BUDGET``); evaluation runs on an
``EvalCadence``; a non-finite loss or gradient skips the step and halves the learning rate, and
``MAX_BAD_STEPS`` in a row stop the run with the last good checkpoint intact. Step and evaluation
records are buffered and written at checkpoints. With ``average`` set, evaluations and the best
checkpoint use the mean of the weights over the budget's tail (training/average.py) while training
continues on the raw weights. Resuming is exact: last.safetensors holds the task's weights,
optimiser, data position and random state with the loop's position, schedule and weight average.

The time budget counts the loop with its evaluations and checkpoints, not the one-time kernel
compilation before the first step (``TimeSplit.compile``): a fresh install compiles for tens of
seconds, which says nothing about the model the budget buys.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..distributed import attach, world
from ..runs.find import LAST_FILE, MODEL_FILE
from .average import WeightAverage
from .budget import Budget, EvalCadence
from .events import CheckpointEvent, DoneEvent, EvalEvent, Position, SampleEvent, StepEvent, WarningEvent
from .run_state import MetricsBuffer, loop_meta

MAX_BAD_STEPS = 5   # consecutive non-finite steps before training gives up, for every task


class Loop:
    """Trains ``task`` (training/task.py) in ``run_dir``. ``clock`` (seconds, monotonic) is
    injectable so that tests can drive a time budget. ``resumed``: (Position, schedule state,
    weight average state) read from the run's last checkpoint, after the task restored its own
    part. Attributes the loop does not have are the task's (``trainer.model``, ``trainer.corpus``)."""

    def __init__(self, task, run_dir, *, clock=time.perf_counter, resumed=None):
        from ..optim import Schedule

        self.task, self.run_dir = task, Path(run_dir)
        t = task.tcfg
        self.budget = Budget.of(t)
        self.schedule = Schedule(t.schedule, t.lr, warmup=t.warmup_steps, min_lr=t.min_lr)
        self.pos = Position()
        self.average = WeightAverage(getattr(t, "average", 0.0), task.model.flat.size, task.model.flat.dtype)
        self.metrics = MetricsBuffer(self.run_dir)
        self.clock = clock
        self.evaluating = False      # an evaluation is running (the live view shows it)
        self._stop = False
        self._warm = False           # kernels compiled/loaded in this process
        self._saved_step = None      # step of the newest last.safetensors written or resumed from
        self._last_eval_seconds = 0.0
        if resumed is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._restore(*resumed)
        self.comm = attach(self)     # alone: Solo; under mpiexec: one model trained by every rank
        # Whether the first step has begun: until then a stop signal ends the command at once
        # (cli/stop_signals.py), as there is nothing new to save. Several ranks agree on a stop
        # only at a step (a rank waiting in a collective cannot act on a signal): for them it has.
        self.started = self.comm.size > 1

    def __getattr__(self, name):
        task = self.__dict__.get("task")
        if task is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(task, name)

    def _restore(self, position: Position, schedule_state, average=({}, None)) -> None:
        from ..errors import CheckpointError
        from ..fsutil import remove_temp_files
        from ..runs.metrics import METRICS_FILE, truncate_metrics

        self.pos = position
        if schedule_state is not None:
            try:
                self.schedule.load_state_dict(schedule_state)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
                raise CheckpointError(f"{self.run_dir / LAST_FILE}: training state is incomplete or malformed "
                                      f"({type(e).__name__}: {str(e)[:100]})") from None
        self.average.restore(*average, self.run_dir / LAST_FILE)
        self._saved_step = position.step
        if world().writes:  # under mpiexec, rank 0 alone touches the run directory
            remove_temp_files(self.run_dir, (MODEL_FILE, LAST_FILE, METRICS_FILE))
            truncate_metrics(self.run_dir, position.step)  # records past the checkpoint are redone

    # -- position ---------------------------------------------------------------------------------

    @property
    def epoch(self) -> float:
        """Fractional passes over the training data done."""
        return self.task.epoch()

    def progress(self, step: int, epoch: float, elapsed: float) -> float:
        """Fraction of the budget done (budget.Budget.progress)."""
        return self.budget.progress(step, epoch, elapsed)

    def request_stop(self) -> None:
        """Ask the loop to finish the current step, checkpoint and stop (Ctrl-C handler)."""
        self._stop = True

    def save_last(self) -> Path:
        self.metrics.flush()  # before the checkpoint: records past it are dropped on resume
        arrays, average = self.average.state()
        meta = loop_meta(self.pos, self.schedule) | ({"average": average} if average else {})
        # without an average the task's call is as it was (a task need not know of averaging)
        path = self.task.save_last(self.run_dir / LAST_FILE, meta, self.comm, *([arrays] if arrays else []))
        self._saved_step = self.pos.step
        return path

    # -- the loop ---------------------------------------------------------------------------------

    def events(self):
        """Train until a budget is reached or a stop is requested, yielding events. The thread
        limits (``tcfg.threads``) hold while it runs and are undone when it ends."""
        with self.task.thread_scope(self.task.tcfg.threads):
            try:
                yield from self._events()
            except OSError as e:
                raise self._write_failed(e) from None
            except BaseException:
                if not self.started:
                    self._undo_start()
                raise

    def _write_failed(self, error: OSError) -> BaseException:
        """A write into the run directory failed (a full disk, a quota): one line naming the file
        and what is still safe. Every write there is atomic or an append trimmed on resume, so the
        newest checkpoint is as it was. Other errors pass unchanged."""
        from ..errors import CheckpointError

        where = Path(error.filename) if error.filename else None
        if where is None or self.run_dir.resolve() not in where.resolve().parents:
            return error
        why = error.strerror or str(error)
        kept = (f"the last checkpoint, {LAST_FILE} at step {self._saved_step:,}, is intact: free space and "
                "resume from it" if self._saved_step is not None else "no checkpoint had been written yet")
        return CheckpointError(f"cannot write {where}: {why}; {kept}")

    def _undo_start(self) -> None:
        """Stopped or failed before the first step: nothing was trained, so the run directory
        is left as the claim found it (runs/directory.py ``release_new``): a directory made for
        this run goes again, an overwritten run's files come back, a resumed run is untouched."""
        lock = self.__dict__.get("run_lock")
        if lock is not None:
            from ..runs.directory import release_new

            release_new(lock)

    def _events(self):
        task, pos, clock = self.task, self.pos, self.clock
        if not self._warm:
            self._warm_up()
        self.started = True   # from here a stop request finishes the step and saves
        started, elapsed0 = clock(), pos.elapsed
        cadence = EvalCadence(task.tcfg.eval_every, self.progress(pos.step, self.epoch, elapsed0), elapsed0)
        reason = None
        while not self._stop:
            pos.elapsed = elapsed0 + (clock() - started)
            reason = self.budget.reason(pos.step, self.epoch, pos.elapsed)
            if reason is not None:
                break
            lr = self.schedule.lr(pos.step, self.progress(pos.step, self.epoch, pos.elapsed))
            batch = task.next_batch()
            t0 = clock()
            with np.errstate(all="ignore"):  # non-finite values are handled below, not warned about
                loss, carry = self.comm.loss_and_grad(self, batch)
                norm = task.clip()
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
                task.step(lr)
            task.commit(carry)
            pos.step += 1
            now = clock()
            pos.elapsed = elapsed0 + (now - started)
            pos.split.train += now - t0
            pos.train_loss_sum += loss
            pos.train_loss_count += 1
            self.metrics.add({"kind": "step", "step": pos.step, "loss": loss, "grad_norm": norm, "lr": lr,
                              "elapsed": pos.elapsed} | self.comm.step_record())
            progress = self.progress(pos.step, self.epoch, pos.elapsed)
            self.average.update(task.model.flat, pos.step, progress)
            self.evaluating = (self.budget.reason(pos.step, self.epoch, pos.elapsed) is not None
                               or cadence.due(pos.step, progress, pos.elapsed))
            yield StepEvent(pos.step, self.epoch, loss, norm, lr, task.tokens(batch) / max(now - t0, 1e-9),
                            pos.elapsed, progress)
            if self.evaluating:
                yield from self._evaluate_and_save()
                pos.elapsed = elapsed0 + (clock() - started)
                cadence.record(progress, pos.elapsed, self._last_eval_seconds)
                self.evaluating = False
            text = task.sample(pos.step)
            if text is not None:
                yield SampleEvent(pos.step, text)
        if self._saved_step != pos.step and reason != "diverged" and self._weights_finite():
            if reason is None:  # a stop request: save the exact position quickly, skip the evaluation
                yield CheckpointEvent(pos.step, self.save_last(), False)
            else:  # the budget ran out during a sample or an evaluation's aftermath: end evaluated
                yield from self._evaluate_and_save()
        self.metrics.flush()
        # A diverged run writes nothing more: the last good checkpoint stays as it was.
        reason = reason or "stopped"
        yield DoneEvent(pos.step, reason, pos.best, pos.elapsed, self.run_dir,
                        _done_message(reason, self._saved_step is not None), pos.split, pos.best_step,
                        task.metric)

    def _warm_up(self) -> None:
        t0 = self.clock()
        with np.errstate(all="ignore"):
            self.task.warm_up()
        self.pos.split.compile += self.clock() - t0
        self._warm = True

    def _evaluate_and_save(self):
        task, pos, clock = self.task, self.pos, self.clock
        train_loss = pos.train_loss_sum / max(pos.train_loss_count, 1)
        pos.train_loss_sum, pos.train_loss_count = 0.0, 0
        t0 = clock()
        # The weight average (when there is one) is what is scored and kept as the best model;
        # training goes on from the raw weights.
        with self.average.swapped_in(task.model.flat), np.errstate(all="ignore"):
            result = task.evaluate(pos.step, train_loss, self.comm)
        self._last_eval_seconds = clock() - t0
        pos.split.eval += self._last_eval_seconds
        pos.elapsed += self._last_eval_seconds  # the record's elapsed includes the evaluation it reports
        improved = task.better(result.scores, pos.best)
        if improved:
            pos.best = dict(result.scores)
        self.schedule.observe(result.loss)
        event = EvalEvent(pos.step, train_loss, result.scores, task.metric, pos.best or result.scores, improved,
                          pos.elapsed, self.epoch, result.held_out, self._last_eval_seconds, pos.split)
        self.metrics.add({"kind": "eval", "step": pos.step, "train_loss": train_loss} | result.scores
                         | {"held_out": result.held_out, "elapsed": pos.elapsed} | pos.split.to_dict())
        for record in result.records:
            self.metrics.add(record)
        yield event
        if not self._weights_finite():  # an overflowing update: keep the last good checkpoints
            yield WarningEvent(pos.step, "weights are no longer finite; checkpoints not updated")
            return
        t1 = clock()
        if improved:
            pos.best_step = pos.step
            with self.average.swapped_in(task.model.flat):
                best = task.save_best(self.run_dir / MODEL_FILE, pos.step, pos.best, self.comm)
            yield CheckpointEvent(pos.step, best, True)
        yield CheckpointEvent(pos.step, self.save_last(), False)
        pos.split.checkpoint += clock() - t1

    def _weights_finite(self) -> bool:
        return bool(np.isfinite(self.task.model.flat).all())


def _done_message(reason: str, has_checkpoint: bool) -> str:
    diverged = f"stopped: {MAX_BAD_STEPS} non-finite steps in a row; " + (
        "the last good checkpoint is intact" if has_checkpoint else
        "no checkpoint had been written yet (try a lower --lr)")
    return {
        "steps": "reached the step budget", "epochs": "reached the epoch budget",
        "time": "reached the time budget", "stopped": "stopped on request; checkpoint saved",
        "diverged": diverged,
    }[reason]
