"""``charlm bench``: training and sampling speed, memory and start-up, optionally beside PyTorch."""
from __future__ import annotations

import json

import click

from ..bench.speed import STANDARD, STANDARD_SEQ, BenchConfig
from .common import err
from .options import given, setting_options

CUSTOM = ("cell", "layers", "hidden", "batch", "seq_len", "vocab", "embed")   # a configuration of its own
MEASURE = ("threads", "steps", "warmup", "sample_chars")                        # how every one is measured
TASKS = ("lm", "classify", "tag")


@click.command("bench")
@click.option("-c", "--config", "names", multiple=True, type=click.Choice(sorted(STANDARD) + sorted(STANDARD_SEQ)),
              help="standard configuration(s) to run (repeatable) [default: all of the task's]")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="lm (language model), or a bidirectional classifier or tagger (training only) [default: lm]")
@setting_options(BenchConfig, only=CUSTOM + MEASURE)
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="fresh processes per configuration (and per side), interleaved; medians are reported")
@click.option("--no-train", is_flag=True, help="skip training")
@click.option("--no-sample", is_flag=True, help="skip sampling")
@click.option("--compare", type=click.Choice(["torch"]), default=None,
              help="run the same model in PyTorch beside charlm (each side in its own process) and show the ratios")
@click.option("--compare-torch", is_flag=True, hidden=True)  # the earlier spelling of --compare torch
@click.option("--torch-baseline", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a PyTorch script of your own to compare with instead (language model; implies --compare torch)")
@click.option("--torch-python", default=None, help="Python with torch for the PyTorch side [default: this one]")
@click.option("--fma-units", type=click.IntRange(1), default=2, show_default=True,
              help="FMA units per core assumed for the host's FLOP limit (not visible to software)")
@click.option("--clock-ghz", type=click.FloatRange(min=0, min_open=True), default=None,
              help="clock for the host's FLOP limit [default: /proc/cpuinfo's]")
@click.option("--isa", type=click.Choice(["native", "avx2"]), default="native", show_default=True,
              help="instruction set to measure: avx2 compiles charlm for AVX2 + FMA only (its own Numba cache) "
                   "and holds PyTorch to AVX2, to see a CPU without AVX-512 on this one")
@click.option("--first-run", "first_run", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="TEXT_FILE", help="instead: time 'charlm train TEXT_FILE --steps 1' on an empty Numba cache, "
                                        "with each kernel it compiles")
def bench(names, task, repeat, no_train, no_sample, compare, compare_torch, torch_baseline, torch_python, fma_units,
          clock_ghz, isa, first_run, **options):
    """Measure training and sampling speed, peak memory and start-up.

    Runs the five standard configurations (a: lstm 1x128 B32 T64; b: lstm
    2x256, c: lstm 2x512, d: gru 2x512, e: rnn 1x512, all B64 T128; V=65), or
    one given by --cell/--layers/--hidden/--batch/--seq-len/--vocab, each in a
    fresh process. With --task classify or tag: a bidirectional one-layer
    LSTM and GRU (H 128, E 64) on batches of 64 sequences of 8 to 32 tokens,
    training only. One JSON line per configuration goes to stdout; a table
    goes to stderr, with training GFLOP/s (3x the forward products per
    character: 2*G*H*(I+H) per layer, 2*H*V for the decoder) and their share
    of the host's FMA limit (cores x FMA units x float32 lanes x 2 x clock).
    --compare torch runs the same model in PyTorch, interleaved with charlm.
    --isa avx2 measures both sides restricted to AVX2 + FMA (Numba compiling
    for haswell without AVX-512, PyTorch's ATen, oneDNN and MKL held to AVX2,
    OpenBLAS's Haswell kernels), the FMA limit with 8 float32 lanes.
    Unset OPENBLAS_CORETYPE for both sides: charlm warns when it slows BLAS down.

    \b
    Examples:
      charlm bench -c b --repeat 3
      charlm bench --compare torch --repeat 5
      charlm bench --task classify --compare torch
      charlm bench -c b --isa avx2 --compare torch
      charlm bench --cell gru --layers 1 --hidden 256 --batch 32 --seq-len 64
      charlm bench --first-run names.txt
    """
    import dataclasses
    import sys

    from ..lm.footprint import training_bytes
    from ..settings import spec_of
    from ..training.memory import check_fits

    if first_run:
        if isa != "native":
            raise click.UsageError("--isa measures speed: --first-run times the host's own first run")
        return _first_run(first_run)
    values = given(options)
    custom = {k: v for k, v in values.items() if k in CUSTOM}
    if custom and names:
        raise click.UsageError("give either --config or a custom configuration, not both")
    if task and names and any((STANDARD_SEQ.get(n) or STANDARD[n]).task != task for n in names):
        raise click.UsageError(f"--config names a configuration of another task than --task {task}")
    common = {k: v for k, v in values.items() if k in MEASURE} | dict(train=not no_train, sample=not no_sample)
    if no_train and no_sample:
        raise click.UsageError("--no-train and --no-sample leave nothing to measure")
    task = task or "lm"
    if custom:
        seq = {} if task == "lm" else {"embed": 64, "sample": False, "task": task}
        configs = {"custom": dataclasses.replace(BenchConfig(), **seq | custom | common)}
    elif names:
        configs = {n: dataclasses.replace(STANDARD_SEQ.get(n) or STANDARD[n], **common) for n in names}
    else:
        table = STANDARD if task == "lm" else {n: c for n, c in STANDARD_SEQ.items() if c.task == task}
        configs = {n: dataclasses.replace(c, **common) for n, c in table.items()}
    if any(c.task != "lm" for c in configs.values()):
        if no_train:
            raise click.UsageError("the sequence tasks measure training only: --no-train leaves nothing")
        configs = {n: dataclasses.replace(c, sample=False) for n, c in configs.items()}
    for cfg in configs.values():  # refuse a size that cannot fit before a measuring process fails on it
        if cfg.task == "lm":
            check_fits(training_bytes(*cfg.configs()), " ".join(
                f"{spec_of(BenchConfig, k).option} {v}" for k, v in custom.items()) or "this configuration")
    if torch_baseline is not None and any(c.task != "lm" for c in configs.values()):
        raise click.UsageError("--torch-baseline scripts measure language models: the sequence tasks compare "
                               "with the built-in PyTorch model (--compare torch)")
    compare = bool(compare or compare_torch or torch_baseline)
    torch_python = torch_python or sys.executable
    if compare:
        from ..bench.compare import check_torch_python

        check_torch_python(torch_python)
    from ..bench.host import describe, fma_limit
    from ..bench.isa import child_env

    envs = {side: child_env(isa, side) for side in ("charlm", "torch")}
    limit = fma_limit(max(c.threads for c in configs.values()), fma_units, clock_ghz or 0.0, isa=isa)
    configs = {n: dataclasses.replace(c, peak_gflops=limit["gflops"]) for n, c in configs.items()}
    _run(configs, repeat, compare, torch_baseline, torch_python, isa, envs)
    err().print(f"GFLOP/s: chars/s x 3 x the forward products per character (2*G*H*(I+H) per layer and "
                f"direction, 2*H*V for the decoder); {describe(limit)}", highlight=False, markup=False, soft_wrap=True)


def _run(configs, repeat, compare, baseline, torch_python, isa, envs):
    from ..bench.compare import (
        blas_warning,
        measure_isolated,
        median_result,
        ratios,
        run_torch,
        run_torch_baseline,
    )
    from ..bench.speed import TARGETS, TARGETS_AVX2
    from .bench_view import comparison_table, side

    console = err()
    rows, warned = [], False
    for name, cfg in configs.items():
        ours, theirs = [], []
        for rep in range(repeat):
            sides = ["charlm", "torch"] if compare else ["charlm"]
            for who in sides if rep % 2 == 0 else sides[::-1]:  # alternate who goes first
                with console.status(f"[dim]{name}: {cfg.label()} · {who} ({rep + 1}/{repeat})[/]"):
                    if who == "charlm":
                        ours.append(measure_isolated(cfg, env=envs["charlm"]))
                    elif baseline:
                        theirs.append(run_torch_baseline(cfg, baseline, torch_python, envs["torch"]))
                    else:
                        theirs.append(run_torch(cfg, torch_python, envs["torch"]))
        result = median_result(ours) | {"name": name, "isa": isa}
        if not warned and (warning := blas_warning(result.get("blas", []), isa)):
            console.print(f"[yellow]warning:[/] {warning}")
            warned = True
        torch_figures = None
        if theirs:
            torch_result = median_result(theirs)
            torch_figures = side(torch_result) | {"sample": _torch_sample(torch_result)}
            result["torch"] = {"train_chars_per_s": torch_figures["train"],
                               "sample_chars_per_s": torch_figures["sample"],
                               "train_gflops": torch_figures["gflops"], "peak_rss_mb": torch_figures["peak_rss"],
                               "cpu_capability": torch_result.get("env", {}).get("cpu_capability")}
            result["ratio"] = ratios(result, torch_result)
        click.echo(json.dumps(result))
        rows.append((name, cfg, result, torch_figures))
    console.print(comparison_table(rows, TARGETS_AVX2 if isa == "avx2" else TARGETS))


def _torch_sample(t):
    from ..bench.compare import torch_sample_chars_per_s

    return torch_sample_chars_per_s(t)


def _first_run(path):
    from ..bench.first_run import first_run
    from .bench_view import first_run_table

    console = err()
    with console.status("[dim]charlm train ... --steps 1 on an empty Numba cache[/]"):
        res = first_run(path)
    click.echo(json.dumps(res))
    console.print(first_run_table(res))
