"""``charlm sweep``: a grid or random search of training settings, one run per trial, ranked; the
sweep of ``charlm classify|tag sweep`` too (``sweep_options``, ``run_sweep_command``)."""
from __future__ import annotations

import json
import time

import click
from rich.table import Table
from rich.text import Text

from .common import emit, err, runs_root, show_path
from .safe_text import printable


def sweep_options(func):
    """The options every task's sweep command takes: its axes, its workers, where it goes."""
    for option in reversed((
        click.option("--grid", "grid", multiple=True, metavar="NAME=A,B,...",
                     help="a grid axis: every listed value is tried with every other axis's (one value: fixed)"),
        click.option("--random", "randoms", multiple=True, metavar="NAME=LOW:HIGH[:log]",
                     help="a random axis: uniform (log-uniform with :log) draws; needs --trials"),
        click.option("--trials", type=click.IntRange(min=0), default=0, show_default=True,
                     help="random draws (per grid point)"),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="trials run at once in local processes (the cores are shared among them)"),
        click.option("--scheduler", metavar="ADDRESS", help="run the trials on this Dask scheduler (tcp://host:8786)"),
        click.option("--sweep-dir", type=click.Path(file_okay=False), help="where the trials go (default: runs/sweep-TIME)"),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="seed of the random draws"),
        click.option("--json", "as_json", is_flag=True, help="print the ranked results as JSON lines on stdout"))):
        func = option(func)
    return func


@click.command("sweep")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(dir_okay=False))
@sweep_options
def sweep(corpus, **options):
    """Train many small models on CORPUS, one run per combination of settings, and rank
    them by validation loss.

    Settings are charlm train's, by field name (hidden, layers, lr, dropout, steps,
    time_budget ...). Each trial is its own run directory under the sweep's directory,
    with sweep.jsonl holding one result line per trial. Classifiers and taggers have
    their own: charlm classify sweep, charlm tag sweep.

    \b
    Examples:
      charlm sweep shakespeare.txt --grid hidden=128,256 --grid lr=1e-3,3e-3 --grid time_budget=5m
      charlm sweep names.txt --grid steps=500 --random lr=1e-4:1e-2:log --random dropout=0:0.3 --trials 8
      charlm sweep big.txt --grid hidden=256,512 --grid steps=2000 --scheduler tcp://head:8786
    """
    from ..lm.start import LmTrials

    return run_sweep_command(LmTrials(corpus), **options)


def run_sweep_command(kind, grid, randoms, trials, workers, scheduler, sweep_dir, seed, as_json) -> int:
    """Plan, run and rank the sweep of the task ``kind`` (training/sweep.py), show it; the exit status."""
    from ..training.sweep import plan_sweep, run_sweep

    plan = plan_sweep(kind, list(grid), list(randoms), trials, seed, workers=None if scheduler else workers)
    where = sweep_dir or runs_root() / time.strftime("sweep-%Y%m%d-%H%M%S")
    metric = kind.metric.replace("_", " ")
    console = err()
    console.print(Text(f"{click.get_current_context().command_path} → {show_path(where)}: {len(plan.trials)} trials, "
                       + (f"on the Dask cluster at {printable(scheduler)}" if scheduler else
                          f"{min(workers, len(plan.trials))} at a time, {plan.threads} thread(s) each")),
                  soft_wrap=True)

    def finished(result):
        score = ("failed: " + result.error if result.error else "diverged" if result.best_value is None
                 else f"best {metric} {result.best_value:.4f}")
        console.print(Text(f"  {result.name} {_settings(result.values)}: {score}"), soft_wrap=True)

    from .stop_signals import StopSignals

    with StopSignals() as signals:
        # a stop signal is only recorded; the sweep looks between waits, stops its workers (they
        # save and are recorded), and a second signal aborts there
        signals.training(_NothingToStop(), _Note(console))
        results = run_sweep(kind, plan, where, workers=workers, scheduler=scheduler, on_result=finished,
                            poll=lambda: (signals.act(), signals.received is not None)[1])
    varied = [name for name in plan.trials[0].values
              if len({repr(t.values[name]) for t in plan.trials}) > 1]
    table = Table(title=Text(f"{len(results)} trials, best first"), title_justify="left")
    for heading in ("trial", *varied, f"best {metric}", "at step", "steps", "seconds"):
        table.add_column(printable(heading), justify="left" if heading == "trial" else "right")
    for r in results:
        best = Text("failed: " + printable(r.error)) if r.error else (
            "diverged" if r.best_value is None else f"{r.best_value:.4f}")
        cells = (r.name, *(printable(str(r.values[n])) for n in varied), best, str(r.best_step or ""),
                 str(r.steps), f"{r.seconds:.1f}")
        table.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells))
    console.print(table)
    if as_json:
        for r in results:
            emit(json.dumps(r.to_dict()))
    if signals.received is not None:
        console.print(Text(f"stopped: {len(results)} of {len(plan.trials)} trials recorded in "
                           f"{show_path(where)}/sweep.jsonl"), soft_wrap=True)
        return signals.exit_code
    return 0 if any(r.best_value is not None for r in results) else 1


class _NothingToStop:
    """The sweep polls for the stop itself (run_sweep's ``poll``)."""

    def request_stop(self) -> None:
        pass


class _Note:
    def __init__(self, console):
        self.console = console

    def note(self, message: str) -> None:
        self.console.print(Text(message.replace("after this step", "every trial after its step"), style="yellow"))


def _settings(values: dict) -> str:
    return printable(" ".join(f"{k}={v}" for k, v in values.items()))
