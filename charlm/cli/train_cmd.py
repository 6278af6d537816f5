"""``charlm train``: options mirror ModelConfig/TrainConfig field names; the loop is the Trainer's."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import fields

import click
from rich.markup import escape

from ..config import CELLS, EOS_MODES, LEVELS, OPTIMIZERS, SCHEDULES, ModelConfig, TrainConfig
from .common import EXIT_INTERRUPTED, Duration, err, runs_root, show_path

_DEFAULTS = {f.name: f.default for cls in (ModelConfig, TrainConfig) for f in fields(cls)}

POSITIVE, NON_NEG = click.IntRange(1), click.IntRange(0)
POSITIVE_F, NON_NEG_F = click.FloatRange(0, min_open=True), click.FloatRange(0)
FRACTION = click.FloatRange(0, 1, max_open=True)

# (field, option, click type, help). Every option defaults to None ("not given"), so the
# dataclasses stay the only place defaults live; the help shows them from there.
OPTIONS = [
    ("level", "--level", click.Choice(LEVELS), "tokenize into characters or words"),
    ("cell", "--cell", click.Choice(CELLS), "recurrent cell"),
    ("layers", "--layers", POSITIVE, "stacked recurrent layers"),
    ("hidden", "--hidden", POSITIVE, "hidden state width of every layer"),
    ("embed", "--embed", POSITIVE, "embedding width"),
    ("dropout", "--dropout", FRACTION, "dropout between layers (training only)"),
    ("tie_weights", "--tie-weights/--no-tie-weights", None,
     "share the embedding and decoder (needs embed = hidden)"),
    ("eos", "--eos", click.Choice(EOS_MODES), "what ends a sequence: a line, a paragraph, nothing, or guess"),
    ("val_fraction", "--val-fraction", FRACTION, "tail of the corpus held out for validation"),
    ("val_file", "--val-file", click.Path(dir_okay=False), "separate validation text (replaces --val-fraction)"),
    ("max_vocab", "--max-vocab", NON_NEG, "word level: keep the most frequent words (0 = all)"),
    ("min_count", "--min-count", POSITIVE, "word level: rarer words become <unk>"),
    ("seq_len", "--seq-len", POSITIVE, "steps of truncated backpropagation through time"),
    ("batch_size", "--batch-size", POSITIVE, "parallel streams per step"),
    ("optimizer", "--optimizer", click.Choice(OPTIMIZERS), "optimiser"),
    ("lr", "--lr", POSITIVE_F, "peak learning rate"),
    ("weight_decay", "--weight-decay", NON_NEG_F, "weight decay"),
    ("momentum", "--momentum", NON_NEG_F, "SGD momentum"),
    ("schedule", "--schedule", click.Choice(SCHEDULES), "learning-rate schedule"),
    ("warmup_steps", "--warmup-steps", NON_NEG, "cosine schedule: linear warm-up steps"),
    ("min_lr", "--min-lr", NON_NEG_F, "cosine schedule: final learning rate"),
    ("clip_norm", "--clip-norm", NON_NEG_F, "clip the global gradient norm (0 = off)"),
    ("clip_value", "--clip-value", NON_NEG_F, "clip each gradient element (0 = off)"),
    ("steps", "--steps", NON_NEG, "stop after this many steps"),
    ("epochs", "--epochs", NON_NEG_F, "stop after this many passes over the corpus"),
    ("time_budget", "--time", Duration(), "stop after this long, e.g. 90s, 10m, 1h30m"),
    ("eval_every", "--eval-every", POSITIVE, "steps between validation passes and checkpoints"),
    ("sample_every", "--sample-every", NON_NEG, "steps between short samples in the view (0 = off)"),
    ("track_gradients", "--track-gradients/--no-track-gradients", None,
     "log gradient lag curves at each evaluation (charlm inspect gradients, charlm info)"),
    ("seed", "--seed", NON_NEG, "seed of initialisation, dropout and data order"),
    ("threads", "--threads", NON_NEG, "CPU threads (0 = all cores)"),
    ("dtype", "--dtype", click.Choice(("float32", "float64")), "float32 for speed, float64 for checks"),
]
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def _default_text(name) -> str:
    value = _DEFAULTS[name]
    if name in ("time_budget", "val_file"):
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def config_options(func):
    for name, decl, type_, help_ in reversed(OPTIONS):
        kw = {"is_flag": True} if type_ is None else {"type": type_}
        func = click.option(decl, name, default=None, help=f"{help_} [default: {_default_text(name)}]",
                            **kw)(func)
    return func


@click.command("train")
@click.argument("corpus", nargs=-1, type=click.Path(dir_okay=True))
@config_options
@click.option("--run-dir", type=click.Path(file_okay=False), help="where the run goes [default: runs/<corpus>-<time>]")
@click.option("--resume", "resume", metavar="RUN", help="continue a run from its last checkpoint (budgets may grow)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="settings from a TOML file (same names as the options; options override it)")
def train(corpus, run_dir, resume, config_file, **options):
    """Train a language model on CORPUS (text files) and save it under runs/.

    With no CORPUS, trains for 4 minutes on the Python standard library's own
    source (about 1.5 MB of code and docstrings that every Python install has).
    Ctrl-C stops after the current step, saves the run and prints how to resume.

    \b
    Examples:
      charlm train                                   # the default corpus, ~5 minutes
      charlm train shakespeare.txt --hidden 512 --time 10m
      charlm train names.txt --eos line --layers 1 --sample-every 200
      charlm train --resume runs/shakespeare-20250101-120000 --time 20m
    """
    from .. import runs
    from ..config import load_config_file

    values = load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in options.items() if v is not None})
    console = err()
    if resume:
        run = runs.resolve_run(resume, runs_root())
        trainer = runs.resume_training(run, values, corpus)
        console.print(f"resuming [bold]{escape(show_path(trainer.run_dir))}[/] at step {trainer.pos.step:,}",
                      highlight=False)
    else:
        if not corpus:
            console.print("no corpus given: training on the Python standard library's own source "
                          "(built once, then cached)", style="dim", highlight=False, soft_wrap=True)
        trainer = runs.start_training(corpus, values, run_dir=run_dir, root=runs_root())
    return _run(trainer, console)


def _run(trainer, console) -> int:
    from .render import corpus_line, fmt_time, model_line
    from .train_view import TrainView, summary_table

    run = show_path(trainer.run_dir)
    t = trainer.tcfg
    budget = ", ".join(b for b in (t.steps and f"{t.steps:,} steps", t.epochs and f"{t.epochs:g} epochs",
                                   t.time_budget and f"{fmt_time(t.time_budget)} of training") if b) or "one epoch"
    console.print(f"[bold]charlm train[/] → {escape(run)}", highlight=False)
    console.print(f"  model   {model_line(trainer.mcfg, trainer.model.num_parameters)}", markup=False,
                  highlight=False)
    console.print(f"  corpus  {', '.join(show_path(p) for p in trainer.corpus.sources)}: "
                  f"{corpus_line(trainer.corpus.stats())}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"  budget  {budget} · eval every {t.eval_every} steps · batch {t.batch_size}×{t.seq_len}",
                  highlight=False)
    view = TrainView(console, trainer, live=console.is_terminal)
    with view, _stop_on_ctrl_c(trainer, view):
        for event in trainer.events():
            view.update(event)
    console.print(summary_table(view, run, trainer.model.num_parameters))
    done = view.done
    if done.reason == "stopped":
        console.print(f"[yellow]stopped.[/] continue with: [bold]charlm train --resume {escape(run)}[/]",
                      highlight=False)
        return EXIT_INTERRUPTED
    if done.reason == "diverged":
        from ..errors import CharlmError

        raise CharlmError(f"training diverged: {done.message}")
    return 0


@contextmanager
def _stop_on_ctrl_c(trainer, view):
    """First Ctrl-C: finish the step, save, stop. Second: abort at once (the last checkpoint stays)."""
    stopping = []

    def handler(signum, frame):
        if stopping:
            raise KeyboardInterrupt
        stopping.append(True)
        trainer.request_stop()
        view.note("stopping after this step and saving… (Ctrl-C again to abort)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread: leave Ctrl-C alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
