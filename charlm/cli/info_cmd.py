"""``charlm info``: what a run is, how it trained, and what it holds."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.text import Text

from .common import emit, err, out, runs_root, shell_command
from .safe_text import printable


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
    from ..inspect.gradients import gradient_history
    from ..lm import describe as lm_describe
    from ..lm.checkpoint import read_metrics
    from ..runs import find as run_find

    path = run_find.resolve_run(run, runs_root())
    refuse_mixed_run(path)
    described = lm_describe.describe_run(path)
    tracked = []   # train --track-gradients: a damaged record is skipped like any damaged line
    for record in read_metrics(described["run"]):
        try:
            tracked += gradient_history([record])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            described["problems"].append(f"{described['run']}: the gradient record of step "
                                         f"{record['step']} in the metrics is malformed; skipped")
    for problem in described["problems"]:  # damaged metrics lines: reported, skipped, never fatal
        err().print(Text.assemble(("warning: ", "yellow"), printable(problem)), soft_wrap=True)
    if as_json:
        emit(json.dumps(described | {"gradients": [c.to_dict() | {"step": s} for s, c in tracked]}))
        return
    from .render import info_view, show

    console = out()
    parts = info_view(described, console.width)
    if described["labels"]:  # a labelled model: what charlm sample --label takes
        from ..lm.labels import known

        parts.insert(1, Text.assemble(("labels  ", "bold"), printable(f"{len(described['labels'])}: "
                                                               + known(described["labels"], 50))))
    show(console, parts)
    if tracked:
        from .inspect_view import lag_plot

        shown = [tracked[0], tracked[-1]] if len(tracked) > 1 else tracked  # first and last evaluation
        for step, curves in shown:
            curves.label = f"step {step}"
        console.print(lag_plot([c for _, c in shown], console.width - 2, 16))


def refuse_mixed_run(path) -> None:
    """One line when a run directory holds the checkpoints of more than one run (another run's
    ``model.safetensors`` beside this run's ``last.safetensors``): describing it would mix them."""
    from ..errors import CheckpointError
    from ..runs.find import LAST_FILE, MODEL_FILE
    from ..runs.fingerprint import checkpoints_apart

    apart = checkpoints_apart(path) if os.path.isdir(path) else None
    if apart:
        raise CheckpointError(f"{path}: its {MODEL_FILE} and {LAST_FILE} {apart}, so they belong to different runs; "
                              f"describe one: {shell_command('charlm', 'info', Path(path) / LAST_FILE)}")
