"""``charlm train``: options mirror ModelConfig/TrainConfig field names; the loop is the Trainer's."""
from __future__ import annotations

from dataclasses import fields

import click
from rich.text import Text

from ..config import CELLS, EOS_MODES, LEVELS, OPTIMIZERS, SCHEDULES, ModelConfig, TrainConfig
from ..distributed.launch import launch_ranks
from .common import Duration, err, runs_root, show_path
from .stop_signals import StopSignals

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
    ("dropout", "--dropout", FRACTION, "dropout between layers and before the decoder, one mask per window"),
    ("weight_dropout", "--weight-dropout", FRACTION, "DropConnect on the recurrent weights W_hh"),
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
    ("warmup_steps", "--warmup-steps", NON_NEG, "linear warm-up steps (any schedule)"),
    ("min_lr", "--min-lr", NON_NEG_F, "cosine and linear schedules: final learning rate"),
    ("clip_norm", "--clip-norm", NON_NEG_F, "clip the global gradient norm (0 = off)"),
    ("clip_value", "--clip-value", NON_NEG_F, "clip each gradient element (0 = off)"),
    ("steps", "--steps", NON_NEG, "stop after this many steps"),
    ("epochs", "--epochs", NON_NEG_F, "stop after this many passes over the corpus"),
    ("time_budget", "--time", Duration(), "stop after this long, e.g. 90s, 10m, 1h30m"),
    ("eval_every", "--eval-every", str, "validate and checkpoint: auto, every N steps (500) or every duration (30s)"),
    ("sample_every", "--sample-every", NON_NEG, "steps between short samples in the view (0 = off)"),
    ("track_gradients", "--track-gradients/--no-track-gradients", None,
     "log gradient lag curves at each evaluation (charlm inspect gradients, charlm info)"),
    ("seed", "--seed", NON_NEG, "seed of initialisation, dropout and data order"),
    ("threads", "--threads", NON_NEG, "CPU threads (0 = all cores)"),
    ("dtype", "--dtype", click.Choice(("float32", "float64")), "float32 for speed, float64 for checks"),
]
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
OPTION_NAMES = {name: decl.split("/")[0] for name, decl, _, _ in OPTIONS}   # field -> --option


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
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="where the run goes: a new or empty directory [default: runs/<corpus>-<time>]")
@click.option("--overwrite", is_flag=True,
              help="let --run-dir replace an earlier run there (its checkpoints and metrics; other files stay)")
@click.option("--resume", "resume", metavar="RUN", help="continue a run from its last checkpoint (budgets may grow)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="settings from a TOML file (same names as the options; options override it)")
@click.option("--ranks", type=click.IntRange(1), help="train one model on N processes (runs this command under mpiexec; needs charlm[mpi])")
def train(corpus, run_dir, overwrite, resume, config_file, **options):
    """Train a language model on CORPUS (text files) and save it under runs/.

    With no CORPUS, trains for 5 minutes on the Python standard library's own
    source (about 1.5 MB of code and docstrings that every Python install has).
    Ctrl-C, SIGTERM or SIGHUP stops after the current step, saves the run and
    prints how to resume (exit status 130, 143, 129). CORPUS and --val-file must
    be regular files (not pipes such as /dev/stdin: the text is read twice).

    \b
    Examples:
      charlm train                                   # the default corpus, ~5 minutes
      charlm train shakespeare.txt --hidden 512 --time 10m
      charlm train names.txt --eos line --layers 1 --sample-every 200
      charlm train --resume runs/shakespeare-20250101-120000 --time 20m
    """
    from ..lm import start as lm_start
    from ..runs import find as run_find
    from .config_keys import read_config_file

    launch_ranks(options.pop("ranks"))  # --ranks N: this process becomes mpiexec -n N charlm train ...

    if resume and run_dir:
        raise click.UsageError("--resume RUN continues RUN in its own directory; --run-dir cannot move it "
                               "(copy the run directory first, then resume the copy)")
    if resume and overwrite:
        raise click.UsageError("--overwrite is for a new run in --run-dir; --resume continues a run")
    values = read_config_file(config_file, OPTION_NAMES) if config_file else {}
    values.update({k: v for k, v in options.items() if v is not None})
    console = err()
    with StopSignals() as signals:
        if resume:
            run = run_find.resolve_run(resume, runs_root())
            trainer = lm_start.resume_training(run, values, corpus)
            console.print(Text(f"resuming {show_path(trainer.run_dir)} at step {trainer.pos.step:,}"),
                          soft_wrap=True)
        else:
            if not corpus:
                console.print("no corpus given: training on the Python standard library's own source "
                              "(built once, then cached)", style="dim", highlight=False, soft_wrap=True)
            trainer = lm_start.start_training(corpus, values, run_dir=run_dir, root=runs_root(),
                                          overwrite=overwrite)
        return _run(trainer, console, signals)


def _run(trainer, console, signals) -> int:
    from ..training.budget import EvalCadence
    from .render import budget_text, corpus_line, fmt_time, model_line
    from .train_view import TrainView, summary_table

    run = show_path(trainer.run_dir)
    t = trainer.tcfg
    budget = budget_text(t, fmt_time)
    console.print(Text.assemble(("charlm train", "bold"), f" → {run}"), soft_wrap=True)
    console.print(f"  model   {model_line(trainer.mcfg, trainer.model.num_parameters)}", markup=False,
                  highlight=False)
    if trainer.auto_choice:  # the width (and regularisation) the budget buys: any flag given would have won
        flags = "--hidden/--dropout" + ("/--weight-decay" if "weight_decay" in trainer.auto_choice["values"] else "")
        console.print(f"  chosen  {trainer.auto_choice['reason']} (probe {trainer.auto_choice['probe_seconds']:.1f}s; "
                      f"{flags} override)", markup=False, highlight=False, soft_wrap=True)
    console.print(Text(f"  corpus  {', '.join(show_path(p) for p in trainer.corpus.sources)}: "
                       f"{corpus_line(trainer.corpus.stats())}"), soft_wrap=True)
    console.print(f"  budget  {budget} · evaluate {EvalCadence(t.eval_every).describe()} · "
                  f"batch {t.batch_size}×{t.seq_len}", highlight=False)
    view = TrainView(console, trainer, live=console.is_terminal)
    signals.training(trainer, view)
    with view:
        for event in trainer.events():
            view.update(event)
    console.print(summary_table(view, run, trainer.model.num_parameters), soft_wrap=True)
    done = view.done
    if done.reason == "stopped":
        console.print(Text.assemble(("stopped.", "yellow"), " continue with: ",
                                    (f"charlm train --resume {run}", "bold")), soft_wrap=True)
        return signals.exit_code
    if done.reason == "diverged":
        from ..errors import CharlmError

        raise CharlmError(f"training diverged: {done.message}")
    return 0
