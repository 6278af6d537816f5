"""``charlm eval``: loss, bits per character and perplexity of a model on text files."""
from __future__ import annotations

import json
import os

import click

from .common import emit, out, runs_root, show_path

SURPRISAL_TOKENS = 600   # how much of the text the heat map shows


@click.command("eval")
@click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE...")
@click.option("--surprisal", is_flag=True,
              help="also show the start of the text coloured by how surprised the model was")
@click.option("--dynamic", is_flag=True,
              help="also score with dynamic evaluation (a gradient step after each window; a different protocol)")
@click.option("--dynamic-lr", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="dynamic evaluation: step size [default: 0.002]")
@click.option("--dynamic-decay", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="dynamic evaluation: pull back towards the trained weights per step [default: 0.002]")
@click.option("--dynamic-window", type=click.IntRange(1), default=None,
              help="dynamic evaluation: tokens per window [default: 64]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def eval_(args, surprisal, dynamic, dynamic_lr, dynamic_decay, dynamic_window, as_json):
    """Score text files with a trained model: how well does it predict them?

    RUN is a run directory, a run name under ./runs, or a .safetensors file;
    without it, the most recent run. Reports the loss in nats per token, bits
    per character (character models), perplexity, and the token and
    out-of-vocabulary counts.

    \b
    Examples:
      charlm eval held_out.txt                       # the latest run
      charlm eval runs/shakespeare-20250101-120000 act5.txt --surprisal
      charlm eval act5.txt --json | jq .perplexity
      charlm eval held_out.txt --dynamic             # also the dynamic-evaluation loss
    """
    from ..errors import CheckpointError
    from ..lm.checkpoint import load_checkpoint
    from ..lm.evaluate import evaluate
    from ..runs import find as run_find

    root = runs_root()
    # A first argument that names no file, followed by files, is a RUN (a mistyped one is
    # reported as a missing run, not as a missing text file).
    first_is_run = run_find.is_run_like(args[0], root) or (len(args) > 1 and not os.path.lexists(args[0]))
    run, files = (args[0], args[1:]) if first_is_run else (None, args)
    if not files:
        raise click.UsageError(f"{args[0]} is a run; give the text files to evaluate after it")
    if run is not None and not os.path.lexists(run) and not (root / run).exists():  # a typo: of which?
        names = ", ".join(p.name for p in run_find.list_runs(root)[-5:])
        raise CheckpointError(f"{run}: no such run directory, checkpoint or text file"
                              + (f" (recent runs in {root}: {names})" if names else ""))
    checkpoint = load_checkpoint(run_find.resolve_run(run, root))
    options = None
    if dynamic or dynamic_lr is not None or dynamic_decay is not None or dynamic_window is not None:
        from dataclasses import replace

        from ..lm.dynamic_eval import DynamicOptions

        given = {"lr": dynamic_lr, "decay": dynamic_decay, "window": dynamic_window}
        options = replace(DynamicOptions(), **{k: v for k, v in given.items() if v is not None})
    result = evaluate(checkpoint, files, surprisal=surprisal, dynamic=options)
    data = result.to_dict() | {"checkpoint": str(checkpoint.path), "files": list(files)}
    if as_json:
        if surprisal:
            data["surprisal_bits"] = [round(float(b), 4) for b in result.surprisal]
        emit(json.dumps(data))
        return
    from .render import eval_table, show, surprisal_text

    console = out()
    show(console, eval_table(data, show_path(checkpoint.path), [show_path(f) for f in files]))
    if surprisal:
        tokens = [checkpoint.tokenizer.tokens[i] for i in result.target_ids[:SURPRISAL_TOKENS].tolist()]
        console.print()
        console.print(surprisal_text(tokens, result.surprisal[:SURPRISAL_TOKENS].tolist(), result.level,
                                     len(result.surprisal)))
