"""``charlm bench``: training and sampling speed, memory and start-up, optionally beside PyTorch."""
from __future__ import annotations

import json

import click

from ..bench.speed import STANDARD, BenchConfig
from .common import err
from .options import given, setting_options

CUSTOM = ("cell", "layers", "hidden", "batch", "seq_len", "vocab", "embed")   # a configuration of its own
MEASURE = ("threads", "steps", "warmup", "sample_chars")                        # how every one is measured


@click.command("bench")
@click.option("-c", "--config", "names", multiple=True, type=click.Choice(sorted(STANDARD)),
              help="standard configuration(s) to run (repeatable) [default: all five]")
@setting_options(BenchConfig, only=CUSTOM + MEASURE)
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="fresh processes per configuration (and per side), interleaved; medians are reported")
@click.option("--no-train", is_flag=True, help="skip training")
@click.option("--no-sample", is_flag=True, help="skip sampling")
@click.option("--compare-torch", is_flag=True,
              help="also run a PyTorch baseline script (--torch-baseline) on each configuration and show the ratios")
@click.option("--torch-baseline", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the PyTorch baseline script to run beside charlm (implies --compare-torch)")
@click.option("--torch-python", default=None, help="Python with torch for the baseline [default: this one]")
def bench(names, repeat, no_train, no_sample, compare_torch, torch_baseline, torch_python, **options):
    """Measure training and sampling speed, peak memory and start-up.

    Runs the five standard configurations (a: lstm 1x128 B32 T64; b: lstm
    2x256, c: lstm 2x512, d: gru 2x512, e: rnn 1x512, all B64 T128; V=65), or
    one given by --cell/--layers/--hidden/--batch/--seq-len/--vocab, each in a
    fresh process. One JSON line per configuration goes to stdout; a table
    goes to stderr. With --compare-torch --torch-baseline SCRIPT, a PyTorch
    script that takes the same configuration (--cell --layers --hidden --batch
    --seq --vocab --threads ...) and prints one JSON line with the same field
    names runs interleaved with charlm, and the table shows the ratios. Unset
    OPENBLAS_CORETYPE for both sides: charlm warns when it slows BLAS down.

    \b
    Examples:
      charlm bench -c b --repeat 3
      charlm bench --compare-torch --torch-baseline torch_baseline.py --repeat 5
      charlm bench --cell gru --layers 1 --hidden 256 --batch 32 --seq-len 64
    """
    import dataclasses
    import sys

    from ..lm.footprint import training_bytes
    from ..settings import spec_of
    from ..training.memory import check_fits

    values = given(options)
    custom = {k: v for k, v in values.items() if k in CUSTOM}
    if custom and names:
        raise click.UsageError("give either --config or a custom configuration, not both")
    common = {k: v for k, v in values.items() if k in MEASURE} | dict(train=not no_train, sample=not no_sample)
    if no_train and no_sample:
        raise click.UsageError("--no-train and --no-sample leave nothing to measure")
    if custom:
        configs = {"custom": dataclasses.replace(BenchConfig(), **custom, **common)}
    else:
        configs = {n: dataclasses.replace(STANDARD[n], **common) for n in (names or sorted(STANDARD))}
    for cfg in configs.values():  # refuse a size that cannot fit before a measuring process fails on it
        check_fits(training_bytes(*cfg.configs()),
                   " ".join(f"{spec_of(BenchConfig, k).option} {v}" for k, v in custom.items()) or "this configuration")
    if compare_torch and torch_baseline is None:
        raise click.UsageError("--compare-torch needs the PyTorch baseline script: give --torch-baseline PATH")
    torch_python = torch_python or sys.executable
    if torch_baseline is not None:
        from ..bench.compare import check_torch_python

        check_torch_python(torch_python)
    _run(configs, repeat, torch_baseline, torch_python)


def _run(configs, repeat, baseline, torch_python):
    from ..bench.compare import (
        blas_warning,
        measure_isolated,
        median_result,
        ratios,
        run_torch_baseline,
    )

    console = err()
    rows, warned = [], False
    for name, cfg in configs.items():
        ours, theirs = [], []
        for rep in range(repeat):
            sides = ["charlm", "torch"] if baseline else ["charlm"]
            for side in sides if rep % 2 == 0 else sides[::-1]:  # alternate who goes first
                with console.status(f"[dim]{name}: {cfg.label()} · {side} ({rep + 1}/{repeat})[/]"):
                    if side == "charlm":
                        ours.append(measure_isolated(cfg))
                    else:
                        theirs.append(run_torch_baseline(cfg, baseline, torch_python))
        result = median_result(ours) | {"name": name}
        if not warned and (warning := blas_warning(result.get("blas", []))):
            console.print(f"[yellow]warning:[/] {warning}")
            warned = True
        torch_result = median_result(theirs) if theirs else None
        if torch_result is not None:
            result["torch"] = {"train_chars_per_s": torch_result.get("train", {}).get("chars_per_s"),
                               "sample_chars_per_s": _torch_sample(torch_result),
                               "peak_rss_mb": torch_result.get("peak_rss_mb"),
                               "cpu_capability": torch_result.get("env", {}).get("cpu_capability")}
            result["ratio"] = ratios(result, torch_result)
        click.echo(json.dumps(result))
        rows.append((name, cfg, result, torch_result))
    console.print(_table(rows))


def _torch_sample(t):
    from ..bench.compare import torch_sample_chars_per_s

    return torch_sample_chars_per_s(t)


def _table(rows):
    """One row per configuration and measure: charlm, PyTorch and their ratio (narrow enough for 80
    columns), with the speed targets (bench.TARGETS) for the standard configurations."""
    from rich.table import Table

    from ..bench.speed import TARGETS

    compare = any(t is not None for *_, t in rows)
    table = Table(title="charlm bench" + (" vs PyTorch, same machine, interleaved" if compare else ""),
                  title_justify="left")
    for title, justify in [("config", "left"), ("measure", "left"), ("charlm", "right")] + (
            [("PyTorch", "right"), ("ratio", "right"), ("target", "right")] if compare else []):
        table.add_column(title, justify=justify)
    for name, cfg, r, t in rows:
        ours = {"train": r.get("train", {}).get("chars_per_s"), "sample": r.get("sample", {}).get("chars_per_s"),
                "peak_rss": r.get("peak_rss_mb")}
        tor = r.get("torch", {})
        theirs = {"train": tor.get("train_chars_per_s"), "sample": tor.get("sample_chars_per_s"),
                  "peak_rss": tor.get("peak_rss_mb")}
        label = [f"{name}: {cfg.cell} {cfg.layers}x{cfg.hidden}", f"B{cfg.batch} T{cfg.seq_len} V{cfg.vocab}", ""]
        measures = [("train", "train chars/s"), ("sample", "sample chars/s"), ("peak_rss", "peak RSS MB")]
        for i, (key, title) in enumerate(measures):
            cells = [label[i], title, _num(ours[key])]
            if compare:
                ratio = r.get("ratio", {}).get(key)
                goal = TARGETS.get(name, {}).get(key)
                met = ratio is not None and goal is not None and (ratio <= goal if key == "peak_rss" else ratio >= goal)
                cells += [_num(theirs[key]), f"{ratio:.2f}x" if ratio is not None else "-",
                          ("" if goal is None else ("<= " if key == "peak_rss" else ">= ") + f"{goal:g}x"
                           + (" [green]ok[/]" if met else " [red]no[/]"))]
            table.add_row(*cells, end_section=i == len(measures) - 1)
    return table


def _num(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"
