"""``charlm bench-quality``: validation loss at equal wall-clock time, charlm beside PyTorch."""
from __future__ import annotations

import json
import shlex

import click

from .common import err, out
from .options import Duration


@click.command("bench-quality")
@click.argument("corpus", type=click.Path(dir_okay=False))
@click.option("--time", "seconds", type=Duration(), default="3m", show_default=True,
              help="training budget of every run")
@click.option("--baseline", "script", type=click.Path(dir_okay=False), required=True,
              help="the PyTorch training script to compare with")
@click.option("--hidden", "hiddens", default="256,384", show_default=True,
              help="hidden sizes of the PyTorch LSTM 2xH runs (the better one is the bar)")
@click.option("--train-args", default="", help="extra options for charlm train, e.g. '--hidden 384'")
@click.option("--torch-python", default=None, help="Python with torch for the baseline [default: this one]")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="threads for every run")
@click.option("--json", "as_json", is_flag=True, help="print the results as one JSON line")
def bench_quality(corpus, seconds, script, hiddens, train_args, torch_python, threads, as_json):
    """Train charlm and a PyTorch script on CORPUS for the same time, one
    after the other, and compare their validation losses (last 10% of the
    text held out, nats per character). Nothing else should run meanwhile.

    \b
    Example:
      charlm bench-quality shakespeare.txt --time 3m --baseline torch_train.py
    """
    from ..bench.quality import compare
    from ..errors import CharlmError

    try:
        sizes = tuple(int(h) for h in hiddens.split(",") if h.strip())
    except ValueError:
        raise CharlmError(f"--hidden takes sizes separated by commas, e.g. 256,384; got {hiddens!r}") from None
    console = err()
    runs = compare(corpus, seconds, script, sizes, shlex.split(train_args), torch_python, threads,
                   progress=lambda what: console.print(f"running {what}…", style="dim", markup=False))
    best_torch = min((r for r in runs if r.name != "charlm"), key=lambda r: r.val_nats, default=None)
    mine = runs[-1]
    if as_json:
        out().print(json.dumps({"runs": [vars(r) for r in runs],
                                "difference": None if best_torch is None else mine.val_nats - best_torch.val_nats}),
                    markup=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table(title=f"validation loss after {seconds:g}s of training")
    for col in ("run", "val nats/char", "steps", "process wall s"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in runs:
        table.add_row(r.name, f"{r.val_nats:.4f}", f"{r.steps:,}", f"{r.wall_s:.0f}")
    console.print(table)
    if best_torch is not None:
        console.print(f"charlm − best PyTorch: {mine.val_nats - best_torch.val_nats:+.4f} nats/char "
                      f"(negative: charlm's model is better)", markup=False)
