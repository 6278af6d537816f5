"""``charlm inspect``: gradient flow, long-range memory and single neurons (charlm.inspect)."""
from __future__ import annotations

import json
import os

import click

from ..config import COMPARED_CELLS, PER_LAYER_CELLS, ModelConfig
from .common import emit, err, out, runs_root
from .options import setting_options
from .safe_text import printable, printable_text

PROPERTY_NAMES = ("in_quotes", "in_brackets", "bracket_depth", "line_position", "after_newline",
                  "after_space", "in_word", "uppercase", "after_punctuation")   # charlm.inspect.neurons


def _given(**options) -> dict:
    """Only the options the user gave: the library's signatures hold the defaults."""
    return {k: v for k, v in options.items() if v is not None}


def _cells(text: str) -> tuple:
    from ..config import CELLS

    cells = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise click.BadParameter(f"cells must be among {', '.join(CELLS)}; got {text!r}", param_hint="--cells")
    return cells


def _split_run(args, root, need_file: bool):
    from ..runs import find as run_find

    if args and run_find.is_run_like(args[0], root):
        run, files = args[0], args[1:]
    else:
        run, files = None, args
    if need_file and not files:
        raise click.UsageError("give the text file(s) to read after the run")
    return run, list(files)


@click.group("inspect")
def inspect_():
    """See inside a network: gradient flow, long-range memory, single neurons.

    \b
    Examples:
      charlm inspect gradients                     # the latest run, on its training text
      charlm inspect gradients --compare           # ... beside fresh RNN, GRU, LSTM of its size
      charlm inspect gradients --fresh text.txt    # fresh RNN, GRU, LSTM only, no run needed
      charlm inspect neurons book.txt --property in_quotes
      charlm inspect memory                        # which cells remember across d characters?
    """


@inspect_.command("gradients")
@click.argument("args", nargs=-1, metavar="[RUN]... [FILE]...")
@click.option("--compare", is_flag=True, help="also measure fresh models of --cells with the run's size")
@click.option("--fresh", is_flag=True, help="no run: only fresh models of --cells (sizes from --hidden, --layers, --embed)")
@click.option("--cells", default=",".join(PER_LAYER_CELLS), show_default=True,
              help=f"cells for --compare/--fresh, among {', '.join(COMPARED_CELLS)}")
@click.option("--max-lag", type=click.IntRange(1), help="longest lag k [default: 50]")
@click.option("--samples", type=click.IntRange(1), help="windows averaged [default: 64]")
@click.option("--warmup", type=click.IntRange(0), help="tokens read before each window [default: 32]")
@setting_options(ModelConfig, only=("hidden", "layers", "embed"), prefix="--fresh: ")
@click.option("--seed", type=click.IntRange(0), help="which windows are drawn, and fresh initialisation [default: 0]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a plot and tables")
def gradients(args, compare, fresh, cells, max_lag, samples, warmup, hidden, layers, embed, seed, as_json):
    """How gradients flow back through time: the mean norm of ∂L_t/∂h_(t−k)
    against the lag k, per layer, on a log scale, and the largest singular
    values of each recurrent matrix (per gate block).

    RUN is a run directory, a run name under ./runs, or a .safetensors file
    (default: the most recent run; give several to compare them); FILE is the
    text to measure on (default: the first run's training text). A vanilla
    RNN's curve falls (or rises) geometrically; gated cells keep it flatter.

    \b
    Examples:
      charlm inspect gradients --compare
      charlm inspect gradients runs/shakespeare-20250101-120000 act5.txt --max-lag 100
      charlm inspect gradients runs/rnn-run runs/lstm-run     # trained models side by side
      charlm inspect gradients --fresh corpus.txt --cells rnn,lstm,jordan --hidden 128
    """
    from ..config import ModelConfig, replace
    from ..inspect.gradients import inspect_gradients
    from ..lm.checkpoint import load_checkpoint
    from ..runs import find as run_find

    root = runs_root()
    k = 0
    while k < len(args) and run_find.is_run_like(args[k], root):
        k += 1
    if fresh and k:
        raise click.UsageError("--fresh measures fresh models only: give a text file, not a run")
    if fresh and not args:
        raise click.UsageError("--fresh needs a text file to measure on")
    if fresh or compare:
        _check_fresh_fits(hidden, layers, embed, max_lag, samples, warmup)
    checkpoints = [] if fresh else [load_checkpoint(run_find.resolve_run(r, root)) for r in (args[:k] or [None])]
    reports = inspect_gradients(
        checkpoints, args[k:], compare_cells=_cells(cells) if (compare or fresh) else (),
        model_config=replace(ModelConfig(), hidden=hidden, layers=layers, embed=embed),
        **_given(max_lag=max_lag, samples=samples, warmup=warmup, seed=seed))
    if as_json:
        emit(json.dumps({"reports": [{k: v for k, v in r.to_record(0).items() if k not in ("kind", "step")}
                                           for r in reports]}))
        return
    from .inspect_view import lag_plot, lag_table, spectra_table

    for r in reports:  # labels name runs and files: shown, never obeyed (plotext output is read as ANSI)
        r.curves.label = printable(r.curves.label)
    console = out()
    console.print(lag_plot([r.curves for r in reports], console.width - 2))
    console.print(lag_table([r.curves for r in reports]))
    console.print(spectra_table(reports))


@inspect_.command("neurons")
@click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE...")
@click.option("--kind", type=click.Choice(["h", "c"]), help="hidden state h, or cell state c (LSTM) [default: c for LSTM]")
@click.option("--property", "prop", type=click.Choice(PROPERTY_NAMES),
              help="colour the text by the unit that best tracks this [default: in_quotes if the text has quotes]")
@click.option("--unit", metavar="[LAYER:]UNIT", help="colour the text by this unit instead (layer counts from 1)")
@click.option("--top", type=click.IntRange(1), default=3, show_default=True, help="units listed per property")
@click.option("--chars", type=click.IntRange(1), default=1500, show_default=True, help="tokens of the text shown")
@click.option("--bars", is_flag=True, help="a line of ▁…█ under each line of text (automatic without colours)")
@click.option("--json", "as_json", is_flag=True, help="print the matches and the unit's activations as JSON")
def neurons(args, kind, prop, unit, top, chars, bars, as_json):
    """Single units: the text coloured by one unit's activation, and the units
    whose activation best tracks simple properties of the text (inside quotes or
    brackets, position in the line, after a newline, ...), ranked by correlation.

    RUN is a run directory, a run name under ./runs, or a .safetensors file
    (default: the most recent run). In the spirit of Karpathy, Johnson and
    Fei-Fei, "Visualizing and Understanding Recurrent Networks" (2015).

    \b
    Examples:
      charlm inspect neurons book.txt
      charlm inspect neurons runs/warpeace-20250101-120000 chapter.txt --property line_position
      charlm inspect neurons book.txt --unit 2:17 --kind h
    """
    from ..inspect.neurons import inspect_neurons
    from ..lm.checkpoint import load_checkpoint
    from ..runs import find as run_find

    root = runs_root()
    run, files = _split_run(args, root, need_file=True)
    report = inspect_neurons(load_checkpoint(run_find.resolve_run(run, root)), files, kind=kind, top=top)
    layer, index = _pick_unit(report, unit, prop)
    if as_json:
        emit(json.dumps({"kind": report.kind, "matches": [m.__dict__ for m in report.matches],
                               "unit": {"layer": layer + 1, "unit": index},
                               "activations": [round(float(v), 4) for v in report.unit(layer, index)[:chars]]}))
        return
    from .inspect_view import neuron_table, neuron_text

    console = out()
    console.print(neuron_table(report))
    # the property the unit was picked for (--property), else the one it tracks best
    mine = [m for m in report.matches if (m.layer, m.unit) == (layer, index)]
    match = next((m for m in mine if m.property == prop), None) or max(mine, key=lambda m: abs(m.r), default=None)
    why = f" (tracks {match.property}, r = {match.r:+.2f})" if match else ""
    console.print(neuron_text([printable_text(t) for t in report.tokens[:chars]], report.unit(layer, index)[:chars],
                              f"\nunit L{layer + 1}:{index}, {report.kind}{why}",
                              bars=bars or console.color_system is None))


def _pick_unit(report, unit, prop):
    L, H = report.values.shape[0], report.values.shape[2]
    if unit:
        try:
            layer, index = (int(p) for p in unit.split(":")) if ":" in unit else (L, int(unit))
        except ValueError:
            raise click.BadParameter(f"expected UNIT or LAYER:UNIT, got {unit!r}", param_hint="--unit") from None
        if not (1 <= layer <= L and 0 <= index < H):
            raise click.BadParameter(f"the model has layers 1..{L} and units 0..{H - 1}", param_hint="--unit")
        return layer - 1, index
    best = report.best(prop or ("in_quotes" if report.properties["in_quotes"].any() else None))
    if best is None:
        raise click.UsageError(f"{prop} is constant over this text; choose another --property or --unit")
    return best.layer, best.unit


@inspect_.command("memory")
@click.option("--cells", default=",".join(COMPARED_CELLS), show_default=True, help="cells to train and compare")
@click.option("--distances", default="2,4,8,16,32,64", show_default=True, help="distances d, comma-separated (>= 2)")
@click.option("--steps", type=click.IntRange(1), help="training steps per model [default: 800]")
@click.option("--hidden", type=click.IntRange(1), help="hidden width of every model [default: 64]")
@click.option("--seq-len", type=click.IntRange(1), help="steps of truncated BPTT [default: 96]")
@click.option("--batch-size", type=click.IntRange(1), help="parallel streams [default: 32]")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="learning rate [default: 0.003]")
@click.option("--per-distance", is_flag=True, help="train a separate model for every d (slower; see below)")
@click.option("--seed", type=click.IntRange(0), help="seed of the text, initialisation and data order [default: 0]")
@click.option("--threads", type=click.IntRange(0), help="CPU threads (0 = all cores)")
@click.option("--run-dir", type=click.Path(file_okay=False), help="keep the runs here [default: a temporary directory]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table and plot")
def memory(cells, distances, steps, hidden, seq_len, batch_size, lr, per_distance, seed, threads, run_dir,
           as_json):
    """Long-range memory: train every cell under the same budget on lines like
    '(fcjbhaeg:)' (a bracket, d − 2 letters, a cue, the matching closer) and
    show how often each predicts the closer, against d.

    A model that remembers the opener is always right; one that forgot can only
    guess among the four closers (25%). With the default, one model per cell
    learns all distances at once (so the short lines teach the trick, and the
    long ones test how far memory reaches); --per-distance trains one model
    per d. Takes about a minute on two cores.

    \b
    Examples:
      charlm inspect memory
      charlm inspect memory --cells rnn,lstm --distances 8,32,128 --seq-len 160 --steps 1500
    """
    from ..inspect.memory import run_memory_experiment
    from ..lm.train import StepEvent

    cell_list = _cells(cells)
    try:
        dists = tuple(int(d) for d in distances.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {distances!r}",
                                 param_hint="--distances") from None
    if min(dists) < 2:
        raise click.BadParameter("every distance must be >= 2", param_hint="--distances")
    if run_dir and os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        raise click.BadParameter(f"{run_dir} is not an empty directory: inspect memory writes its texts "
                                 "and runs into a new or empty one", param_hint="--run-dir")
    _check_memory_fits(cell_list, dists, per_distance, hidden, seq_len, batch_size)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err(), transient=True) as bar:
        tasks = {}

        def progress(cell, d, event):
            key = (cell, d)
            if key not in tasks:
                label = f"training {cell}" + (f" d={d}" if d else "")
                tasks[key] = bar.add_task(label, total=steps or 800)
            if isinstance(event, StepEvent):
                bar.update(tasks[key], completed=event.step)

        result = run_memory_experiment(cell_list, dists, per_distance=per_distance, run_root=run_dir,
                                       progress=progress, **_given(steps=steps, hidden=hidden, seq_len=seq_len,
                                                                   batch_size=batch_size, lr=lr, seed=seed,
                                                                   threads=threads))
    if as_json:
        emit(json.dumps({"cells": result.cells, "distances": result.distances.tolist(),
                               "accuracy": result.accuracy.tolist(), "prob": result.prob.tolist(),
                               "parameters": result.parameters, "chance": result.chance,
                               "settings": result.settings}))
        return
    from .inspect_view import memory_plot, memory_table

    console = out()
    console.print(memory_table(result))
    console.print(memory_plot(result, console.width - 2))


def _check_fresh_fits(hidden, layers, embed, max_lag, samples, warmup) -> None:
    """Refuse fresh models (--fresh/--compare) too big for memory before building them."""
    from ..config import ModelConfig, TrainConfig, replace
    from ..lm.footprint import check_training_fits

    model = replace(ModelConfig(vocab_size=256), hidden=hidden, layers=layers, embed=embed)
    # the measurement keeps every step of `samples` windows of warm-up + lag for the backward pass
    check_training_fits(model, TrainConfig(batch_size=samples or 64, seq_len=(max_lag or 50) + (warmup or 32)))


def _check_memory_fits(cells, distances, per_distance, hidden, seq_len, batch_size) -> None:
    """Refuse an experiment whose texts or models cannot fit in memory, before writing anything:
    its training text holds ``train_lines`` lines of mean length d, its evaluation text
    ``eval_lines`` lines per d, scored with a row of logits per character."""
    import inspect as pyinspect

    from ..config import ModelConfig, TrainConfig, replace
    from ..inspect.memory import run_memory_experiment
    from ..lm.footprint import check_training_fits
    from ..training.memory import check_fits

    defaults = {k: p.default for k, p in pyinspect.signature(run_memory_experiment).parameters.items()}
    ds = sorted(set(distances))
    groups = [[d] for d in ds] if per_distance else [ds]
    text_bytes = max(defaults["train_lines"] * (sum(g) / len(g) + 2) * 16
                     + defaults["eval_lines"] * sum(d + 2 for d in g) * 200 for g in groups)
    check_fits(int(text_bytes), f"--distances up to {max(ds):,} (the texts and their scores)")
    for cell in cells:
        check_training_fits(replace(ModelConfig(cell=cell, layers=1, embed=defaults["embed"],
                                                hidden=defaults["hidden"], vocab_size=20), hidden=hidden),
                            replace(TrainConfig(seq_len=defaults["seq_len"], batch_size=defaults["batch_size"]),
                                    seq_len=seq_len, batch_size=batch_size))
