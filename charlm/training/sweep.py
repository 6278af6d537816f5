"""Many small trainings instead of one large one: a grid or random search of settings, for any task.

Each trial is an independent training run in its own directory under the sweep's directory
(``trial-001``, ...; each locked by its process, runs/directory.py), executed by local worker
processes (sweep_workers.py: a killed worker is a failed trial, a stop saves the running ones) or,
given a scheduler address, by the workers of a Dask distributed cluster (the ``dask`` extra). The
sweep directory itself is locked: one sweep writes it. The results, one JSON line per finished,
failed or stopped trial in ``sweep.jsonl`` naming the task's headline metric, are ranked as the
task ranks its own evaluations. Nothing here prints.

The sweep knows no task: a ``kind`` says how the task's trials start (its data and settings
given), which settings exist and what is better (``lm.start.LmTrials``,
``seqtask.runs.SeqTrials``):

- ``metric``: the headline score's name; ``command``: the command whose settings these are;
- ``specs()``: the settings a user may set (settings.py declarations);
- ``configs(values)``: validate a trial's settings (raises ``ConfigError``);
- ``start(values, run_dir)``: a training loop (training/loop.py) for a new run in ``run_dir``;
- ``better(scores, best)``: the task's own ranking of two evaluations' scores.

A kind is pickled to the workers, so it holds only plain data (its data description).

Settings are ``name=value`` with the field names of the task's settings (``hidden``, ``lr``,
``steps``...). A grid axis lists values, ``hidden=64,128``; a random axis gives a range,
``lr=1e-4:1e-2:log`` (log-uniform), ``dropout=0:0.3`` (uniform; integers when both ends are).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..runs.metrics import append_metrics

RESULTS_FILE = "sweep.jsonl"


@dataclass
class Trial:
    name: str                 # directory name under the sweep directory
    values: dict              # settings of this run (field name -> value)


@dataclass
class TrialResult:
    name: str
    values: dict
    run_dir: str
    metric: str = ""                     # the task's headline score (val_loss, accuracy)
    best_value: float | None = None      # its best value; None: failed (see ``error``) or diverged
    best: dict | None = None             # every score of that best evaluation (what ranks it)
    best_step: int | None = None
    steps: int = 0
    seconds: float = 0.0
    reason: str = ""
    error: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SweepPlan:
    trials: list[Trial] = field(default_factory=list)
    threads: int = 1          # kernel threads of each trial (0: all cores of its machine)


def parse_setting(kind, text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not value.strip():
        raise ConfigError(f"{text!r}: a sweep setting is name=value (e.g. hidden=64,128 or lr=1e-4:1e-2:log)")
    if name not in _settings(kind):
        raise ConfigError(f"{name!r} is not a setting of {kind.command} (see {kind.command} -h)")
    return name, value.strip()


def _settings(kind) -> dict:
    return {s.name: s for s in kind.specs()}


def typed(kind, name: str, text: str):
    """``text`` as the type of setting ``name`` of ``kind`` (its declared type; a duration in seconds)."""
    spec = _settings(kind)[name]
    if spec.meta.kind == "duration":
        from ..config import parse_duration

        return parse_duration(text)
    declared = spec.type
    try:
        if declared is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if declared is int:
            return int(text)
        return float(text) if declared is float else text
    except ValueError:
        raise ConfigError(f"{name}={text!r}: {name} takes {declared.__name__} values") from None


def plan_sweep(kind, grid: list[str], randoms: list[str], trials: int = 0, seed: int = 0,
               workers: int | None = 1, cores: int | None = None) -> SweepPlan:
    """The trials of the task ``kind``: every combination of the grid axes, times ``trials``
    random draws of the random axes (one draw per trial when there is no grid). Every trial's
    settings are validated before any runs. Each trial gets this machine's ``cores`` shared among
    ``workers``; ``workers=None`` (a cluster's workers): all cores of the machine it runs on."""
    axes = [(name, [typed(kind, name, v.strip()) for v in value.split(",")])
            for name, value in (parse_setting(kind, g) for g in grid)]
    ranges = [_range(kind, name, value) for name, value in (parse_setting(kind, r) for r in randoms)]
    if ranges and trials < 1:
        raise ConfigError("a random search needs --trials N (how many draws)")
    if not ranges and trials:
        raise ConfigError("--trials is for random axes (name=low:high); a grid runs every combination")
    names = [n for n, _ in axes] + [n for n, *_ in ranges]
    if len(set(names)) != len(names):
        raise ConfigError("a setting appears twice in the sweep")
    rng = np.random.default_rng(seed)
    combos = [dict(zip([n for n, _ in axes], c)) for c in itertools.product(*[v for _, v in axes])]
    points = [dict(c, **{n: draw(rng) for n, draw in ranges}) for c in combos for _ in range(max(trials, 1))]
    if len(points) < 1:
        raise ConfigError("the sweep has no trials")
    for values in points:
        kind.configs(values)
    cores = cores or os.cpu_count() or 1
    threads = 0 if workers is None else max(1, cores // max(1, workers))
    return SweepPlan([Trial(f"trial-{i:03d}", v) for i, v in enumerate(points, 1)], threads=threads)


def _range(task, name: str, value: str):
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise ConfigError(f"{name}={value!r}: a random axis is low:high or low:high:log")
    kind = _settings(task)[name].type
    if kind not in (int, float):
        raise ConfigError(f"{name} is not a number: list its values instead ({name}=a,b)")
    low, high = (float(typed(task, name, p)) for p in parts[:2])
    log = len(parts) == 3
    if not low < high or (log and low <= 0):
        raise ConfigError(f"{name}={value!r}: needs low < high" + (" and low > 0 for :log" if log else ""))

    def draw(rng):
        x = math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)
        return int(round(x)) if kind is int else float(f"{x:.4g}")
    return name, draw


def run_trial(kind, trial: Trial, sweep_dir: str, threads: int, stop=None) -> dict:
    """Train one trial of the task ``kind`` to the end in this process; its result as a dict
    (errors included, so that one failing trial does not end the sweep). ``stop()``, asked after
    each event, returns True once the trial should save and stop."""
    from ..errors import CharlmError

    run_dir = Path(sweep_dir) / trial.name
    result = TrialResult(trial.name, trial.values, str(run_dir), kind.metric)
    try:
        trainer = kind.start({"threads": threads} | trial.values, run_dir)
        done = None
        for event in trainer.events():
            done = event
            if stop is not None and stop():
                trainer.request_stop()
        result.best_value = _finite(done.best_value)
        result.best = done.best if result.best_value is not None else None
        result.best_step, result.steps = done.best_step, done.step
        result.seconds, result.reason = round(done.elapsed, 3), done.reason
    except CharlmError as e:
        result.error = str(e)
    return result.to_dict()


def run_sweep(kind, plan: SweepPlan, sweep_dir, *, workers: int = 1, scheduler: str | None = None,
              on_result=None, poll=None) -> list[TrialResult]:
    """Run every trial of ``plan`` (of the task ``kind``), ``workers`` at a time in local processes
    (sweep_workers.py), or on the Dask cluster at ``scheduler``; each result is appended to
    ``sweep_dir``/sweep.jsonl as it comes and passed to ``on_result``. ``poll()`` returns True
    once the sweep should stop (the running trials save and are recorded; no other starts). The
    sweep directory is locked for this process (runs/directory.py): a second sweep into it is
    refused. Returns the results ranked as the task ranks evaluations (``ranked``)."""
    from ..runs.directory import lock_run_dir

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(sweep_dir)  # noqa: F841 - held until the sweep returns
    taken = sorted(t.name for t in plan.trials if (sweep_dir / t.name).exists())
    if taken:
        raise ConfigError(f"{sweep_dir} already holds {', '.join(taken[:3])}: choose another --sweep-dir")
    jobs = [(kind, t, str(sweep_dir), plan.threads) for t in plan.trials]
    results = []
    if scheduler:
        records = _on_dask(scheduler, jobs, poll)
    else:
        from .sweep_workers import run_on_processes

        records = run_on_processes(workers, jobs, run_trial, _failed, poll)
    for record in records:
        result = TrialResult(**record)
        append_metrics(sweep_dir, result.to_dict(), file=RESULTS_FILE)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return ranked(results, kind.better)


def _failed(job, why: str) -> dict:
    """The record of a trial whose worker ended without a result."""
    kind, trial, sweep_dir, _ = job
    return TrialResult(trial.name, trial.values, str(Path(sweep_dir) / trial.name), kind.metric, error=why).to_dict()


def ranked(results: list[TrialResult], better) -> list[TrialResult]:
    """The best first as ``better(scores, best)`` (the task's own rule) orders the trials' best
    scores; equal ones by name, failed and diverged trials last."""
    def order(a: TrialResult, b: TrialResult) -> int:
        if (a.best is None) != (b.best is None):
            return 1 if a.best is None else -1
        if a.best is not None and better(a.best, b.best):
            return -1
        if a.best is not None and better(b.best, a.best):
            return 1
        return (a.name > b.name) - (a.name < b.name)
    return sorted(results, key=functools.cmp_to_key(order))


def _on_dask(scheduler: str, jobs, poll=None):
    """The trials on a Dask cluster; a trial whose task fails (its worker died) is a failed
    record, and a stop cancels the trials still queued or running there."""
    try:
        from dask.distributed import Client, wait
    except ImportError:
        raise ConfigError("a sweep on a Dask cluster needs dask: pip install 'charlm[dask]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    with client:
        futures = {client.submit(run_trial, *job, pure=False): job for job in jobs}
        try:
            while futures:
                if poll is not None and poll():
                    return
                try:
                    done, _ = wait(list(futures), timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in done:
                    job = futures.pop(future)
                    try:
                        record = future.result()
                    except Exception as e:  # noqa: BLE001 - the trial's failure, whatever it was
                        record = _failed(job, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
                    yield record
        finally:
            client.cancel(list(futures))


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None
