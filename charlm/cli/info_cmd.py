"""``charlm info``: what a run is, how it trained, and what it holds."""
from __future__ import annotations

import json

import click

from .common import out, runs_root


@click.command("info")
@click.argument("run", required=False, metavar="[RUN]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
def info(run, as_json):
    """Describe a run: configuration, parameters, vocabulary, learning curve, files.

    RUN is a run directory, a run name under ./runs, or a .safetensors file;
    without it, the most recent run.

    \b
    Examples:
      charlm info                                    # the latest run
      charlm info runs/names-20250101-120000
      charlm info --json | jq .best.val_ppl
    """
    from .. import runs

    from ..checkpoint import read_metrics
    from ..inspect.gradients import gradient_history

    described = runs.describe_run(runs.resolve_run(run, runs_root()))
    tracked = gradient_history(read_metrics(described["run"]))  # train --track-gradients
    if as_json:
        click.echo(json.dumps(described | {"gradients": [c.to_dict() | {"step": s} for s, c in tracked]}))
        return
    from .render import info_view

    console = out()
    console.print(info_view(described, console.width))
    if tracked:
        from .inspect_view import lag_plot

        shown = [tracked[0], tracked[-1]] if len(tracked) > 1 else tracked  # first and last evaluation
        for step, curves in shown:
            curves.label = f"step {step}"
        console.print(lag_plot([c for _, c in shown], console.width - 2, 16))
