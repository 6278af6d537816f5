"""``charlm classify train|eval|predict``: one label per text, from a TSV of text<TAB>label.

The commands parse, make one library call (charlm.seqtask) and render; ``tag_cmd`` reuses the
training options and the training runner below.
"""
from __future__ import annotations

import json
from dataclasses import fields

import click
from rich.markup import escape

from ..seqtask.config import POOLINGS, per_layer_cells
from .common import Duration, emit, err, out, runs_root, show_path

POSITIVE, NON_NEG = click.IntRange(1), click.IntRange(0)
POSITIVE_F, NON_NEG_F, FRACTION = click.FloatRange(0, min_open=True), click.FloatRange(0), click.FloatRange(0, 1, max_open=True)

# (field, option, click type, help): the defaults live in charlm.seqtask.config only
MODEL_OPTIONS = [
    ("cell", "--cell", click.Choice(per_layer_cells()), "recurrent cell"),
    ("level", "--level", click.Choice(("char", "word")), "tokens are characters or words"),
    ("embed", "--embed", POSITIVE, "embedding width"),
    ("hidden", "--hidden", POSITIVE, "hidden width per direction"),
    ("layers", "--layers", POSITIVE, "stacked layers"),
    ("bidirectional", "--bidirectional/--unidirectional", None, "read each sequence both ways, or forward only"),
    ("dropout", "--dropout", FRACTION, "dropout between layers and before the head (training only)"),
    ("input_dropout", "--input-dropout", FRACTION, "drop whole token (and n-gram) embeddings at the input (training only)"),
    ("ngrams", "--ngrams", NON_NEG, "add hashed embeddings of the 2..N-grams ending at each token (0 = none)"),
    ("buckets", "--buckets", POSITIVE, "hash buckets of those n-gram embeddings"),
    ("members", "--members", POSITIVE, "models trained side by side, their probabilities averaged (an ensemble)"),
    ("member_salts", "--member-salts/--shared-hashes", None, "each member hashes its n-grams with its own salt"),
]
WIDE_OPTIONS = [
    ("wide_ngrams", "--wide-ngrams", NON_NEG,
     "add a linear classifier over the hashed 1..N-grams of the whole text, its logits summed with the head's (0 = none)"),
    ("wide_buckets", "--wide-buckets", POSITIVE, "hash buckets of that linear classifier"),
    ("wide_dropout", "--wide-dropout", FRACTION, "drop whole n-grams from its bag (training only)"),
]
POOLING_OPTION = ("pooling", "--pooling", click.Choice(POOLINGS),
                  "how a sequence becomes one vector: the final states, or the mean or max over its steps")
TRAIN_OPTIONS = [
    ("batch_size", "--batch-size", POSITIVE, "sequences per step"),
    ("lr", "--lr", POSITIVE_F, "peak learning rate (Adam)"),
    ("min_lr", "--min-lr", NON_NEG_F, "learning rate at the end of the budget"),
    ("schedule", "--schedule", click.Choice(("cosine", "constant")), "learning-rate schedule over the budget"),
    ("warmup_steps", "--warmup-steps", NON_NEG, "linear warm-up steps"),
    ("weight_decay", "--weight-decay", NON_NEG_F, "L2 weight decay"),
    ("clip_norm", "--clip-norm", NON_NEG_F, "clip the global gradient norm (0 = off)"),
    ("epochs", "--epochs", NON_NEG_F, "stop after this many passes over the training data"),
    ("steps", "--steps", NON_NEG, "stop after this many steps"),
    ("time_budget", "--time", Duration(), "stop after this long, e.g. 90s, 5m"),
    ("eval_every", "--eval-every", str, "dev evaluation and checkpoint: auto, every N steps (500) or every duration (30s)"),
    ("max_length", "--max-length", NON_NEG, "tokens kept per training sequence (0 = all)"),
    ("seed", "--seed", NON_NEG, "seed of initialisation, dropout, data order and the dev hold-out"),
    ("dtype", "--dtype", click.Choice(("float32", "float64")), "float32 for speed, float64 for checks"),
    ("threads", "--threads", NON_NEG, "cores to use (0 = all; a bidirectional layer runs its two directions at once)"),
]


def _defaults():
    from ..seqtask.config import SeqModelConfig, SeqTrainConfig

    return {f.name: f.default for cls in (SeqModelConfig, SeqTrainConfig) for f in fields(cls)}


def training_options(with_pooling: bool):
    options = MODEL_OPTIONS + ([POOLING_OPTION] + WIDE_OPTIONS if with_pooling else []) + TRAIN_OPTIONS

    def decorate(func):
        defaults = _defaults()
        for name, decl, type_, help_ in reversed(options):
            default = "none (5 minutes)" if name in ("epochs", "steps", "time_budget") else str(defaults[name]).lower()
            kw = {"is_flag": True} if type_ is None else {"type": type_}
            func = click.option(decl, name, default=None, help=f"{help_} [default: {default}]", **kw)(func)
        func = click.option("--dev", "dev_file", type=click.Path(dir_okay=False),
                            help="labelled dev file (else --dev-fraction of the training data is held out)")(func)
        func = click.option("--dev-fraction", type=FRACTION, default=0.1, show_default=True,
                            help="share of the training examples held out for dev when there is no --dev")(func)
        func = click.option("--run-dir", type=click.Path(file_okay=False), help="where the run goes [default: runs/<file>-<time>]")(func)
        return click.option("--resume", metavar="RUN", help="continue a stopped run (the budget may grow)")(func)
    return decorate


@click.group("classify")
def classify():
    """Sequence classification: one label per text (language of a word, sentiment of a review).

    \b
    Examples:
      charlm classify train words.tsv --dev dev.tsv --epochs 10
      charlm classify eval dev.tsv                     # the latest classifier
      charlm classify predict "bonjour" "hallo" --top-k 3
    """


@classify.command("train")
@click.argument("train_file", required=False, type=click.Path(dir_okay=False))
@click.option("--header", type=click.Choice(("auto", "yes", "no")), default="auto", show_default=True,
              help="whether the first line is a header (auto: it is when its label is a column name such as 'label')")
@training_options(with_pooling=True)
def classify_train(train_file, header, dev_file, dev_fraction, run_dir, resume, **options):
    """Train a classifier on TRAIN_FILE, a TSV of text<TAB>label lines.

    Evaluates on the dev split about 8 times (or --eval-every), keeps the best model
    by dev accuracy (model.safetensors) and the latest state (last.safetensors). Ctrl-C
    stops after the current step, saves, and prints how to resume.

    \b
    Examples:
      charlm classify train words.tsv --dev dev.tsv --hidden 256 --epochs 12
      charlm classify train words.tsv --dev dev.tsv --ngrams 4 --input-dropout 0.5 --wide-ngrams 5 --wide-dropout 0.3 --members 4 --member-salts --time 5m
      charlm classify train reviews.tsv --level word --time 5m
      charlm classify train --resume runs/words-20260101-120000 --epochs 20
    """
    from ..seqtask.runs import data_spec

    spec = None if resume else data_spec("classify", _need_file(train_file), dev_file=dev_file,
                                         dev_fraction=dev_fraction, header=header, seed=options.get("seed") or 1234)
    return run_training("classify", spec, options, run_dir, resume)


def _need_file(path):
    if path is None:
        raise click.UsageError("give the training file (or --resume RUN)")
    return path


def run_training(task: str, spec, options: dict, run_dir, resume) -> int:
    """Start or resume a run, show its progress, summarise it; shared by classify and tag.
    A stop signal while training finishes the step and saves (see stop_signals.py)."""
    from ..seqtask import runs
    from .seqtask_view import TrainProgress, header_lines, summary_lines
    from .stop_signals import StopSignals

    console = err()
    with StopSignals() as signals:
        if resume:
            trainer = runs.resume(runs.find_run(resume, runs_root(), task), options)
            console.print(f"resuming [bold]{escape(show_path(trainer.run_dir))}[/] at step {trainer.pos.step:,}",
                          highlight=False)
        else:
            trainer = runs.start(spec, options, runs_root(), run_dir)
        run = show_path(trainer.run_dir)
        console.print(f"[bold]charlm {task} train[/] → {escape(run)}", highlight=False)
        for line in header_lines(trainer):
            console.print(line, highlight=False, soft_wrap=True)
        view = TrainProgress(console, live=console.is_terminal)
        with view:
            signals.training(trainer, view)
            for event in trainer.events():
                view.update(event)
    for line in summary_lines(view, run, task):
        console.print(line, highlight=False)
    if view.done.reason == "stopped":
        console.print(f"[yellow]stopped.[/] continue with: [bold]charlm {task} train --resume {escape(run)}[/]",
                      highlight=False)
        return signals.exit_code
    if view.done.reason == "diverged":
        from ..errors import CharlmError

        raise CharlmError(f"training diverged: {view.done.message}")
    return 0


def split_run_and_file(args, task: str):
    """[RUN] FILE: a first argument that names a run (or no file) is the run."""
    import os

    from ..seqtask.runs import find_run, is_run_like

    root = runs_root()
    if len(args) > 2:
        raise click.UsageError("give at most a RUN and one FILE")
    first_is_run = len(args) == 2 or (len(args) == 1 and is_run_like(args[0], root) and not os.path.isfile(args[0]))
    run, rest = (args[0], args[1:]) if first_is_run else (None, args)
    return find_run(run, root, task), rest


def evaluate_command(task: str, args, header: str, as_json: bool) -> None:
    from ..seqtask.predict import Predictor
    from .seqtask_view import report_heading, report_tables

    run, rest = split_run_and_file(args, task)
    if not rest:
        raise click.UsageError("give the labelled file to evaluate")
    predictor = Predictor.load(run)
    result = predictor.evaluate(rest[0], header=header) | {"checkpoint": str(predictor.checkpoint.path)}
    if as_json:
        emit(json.dumps(result))
        return
    console = out()
    console.print(report_heading(result, show_path(predictor.checkpoint.path)), highlight=False, soft_wrap=True)
    for table in report_tables(result):
        console.print(table)


@classify.command("eval")
@click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE")
@click.option("--header", type=click.Choice(("auto", "yes", "no")), default="auto", show_default=True,
              help="whether the first line is a header")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
def classify_eval(args, header, as_json):
    """Score a classifier on a labelled TSV: accuracy, macro-F1, per-label precision and
    recall, and the confusion matrix.

    \b
    Examples:
      charlm classify eval dev.tsv
      charlm classify eval runs/words-20260101-120000 test.tsv --json | jq .accuracy
    """
    evaluate_command("classify", args, header, as_json)


@classify.command("predict")
@click.argument("args", nargs=-1, metavar="[RUN] [TEXT...]")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False), help="classify every non-empty line of FILE")
@click.option("--top-k", "-k", type=POSITIVE, default=3, show_default=True, help="labels shown per text")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per text")
def classify_predict(args, file, top_k, as_json):
    """Label texts given as arguments, or the lines of --file, with the top-k labels and their
    probabilities (text, a tab, then the labels).

    \b
    Examples:
      charlm classify predict "bonjour" "hallo" "ciao"
      charlm classify predict runs/words-20260101-120000 -f words.txt --json
    """
    from ..seqtask.predict import Predictor, read_lines
    from ..seqtask.runs import find_run, is_run_like
    from .seqtask_view import prediction_lines

    run = args[0] if args and is_run_like(args[0], runs_root()) else None
    texts = list(args[1:] if run else args) + (read_lines(file) if file else [])
    if not texts:
        raise click.UsageError("give texts to classify, or --file FILE")
    predictions = Predictor.load(find_run(run, runs_root(), "classify")).classify(texts, top_k)
    if as_json:
        for p in predictions:
            emit(json.dumps(p, ensure_ascii=False))
        return
    for line in prediction_lines(predictions):
        emit(line)
