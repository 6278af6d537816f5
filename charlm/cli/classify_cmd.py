"""``charlm classify train|eval|predict|sweep``: one label per text, from a TSV of text<TAB>label.

The commands parse, make one library call (charlm.seqtask) and render; what they share with
``tag`` and ``seq2seq`` (options, the training runner, evaluation) is in seqtask_commands.py.
"""
from __future__ import annotations

import click

from .options import given
from .seqtask_commands import (emit_results, evaluate_command, predictor_and_texts, run_training, sweep_command,
                               training_options)


@click.group("classify")
def classify():
    """Sequence classification: one label per text (language of a word, sentiment of a review).

    \b
    Examples:
      charlm classify train words.tsv --dev dev.tsv --epochs 10
      charlm classify eval dev.tsv                     # the latest classifier
      charlm classify predict "bonjour" "hallo" --top-k 3
      charlm classify sweep words.tsv --dev dev.tsv --grid hidden=64,128 --grid epochs=3
    """


HEADER = click.option("--header", type=click.Choice(("auto", "yes", "no")), default="auto", show_default=True,
                      help="whether the first line is a header (auto: it is when its label is a column name such as 'label')")


@classify.command("train")
@click.argument("train_file", required=False, type=click.Path(dir_okay=False))
@HEADER
@training_options("classify")
def classify_train(train_file, header, dev_file, dev_fraction, run_dir, resume, ranks, as_json, **options):
    """Train a classifier on TRAIN_FILE, a TSV of text<TAB>label lines.

    With a time budget (--time, or no budget: 5 minutes) the recipe is chosen for the
    data and the budget: n-gram embeddings, the wide path, dropout and as many ensemble
    members as still train their epochs in time (the "chosen" line; any flag given wins).
    Evaluates on the dev split about 8 times (or --eval-every), keeps the best model
    by dev accuracy (model.safetensors) and the latest state (last.safetensors). Ctrl-C
    stops after the current step, saves, and prints how to resume.

    \b
    Examples:
      charlm classify train words.tsv --dev dev.tsv --time 5m   # the recipe chosen for 5 minutes
      charlm classify train words.tsv --dev dev.tsv --hidden 256 --epochs 12
      charlm classify train reviews.tsv --level word --time 5m
      charlm classify train --resume runs/words-20260101-120000 --epochs 20
    """
    from ..seqtask.runs import data_spec

    def describe(seed: int) -> dict:
        return data_spec("classify", train_file, dev_file=dev_file, dev_fraction=dev_fraction,
                         header=header, seed=seed)
    return run_training("classify", train_file, describe, given(options), run_dir, resume, ranks, as_json)

classify.add_command(sweep_command("classify", HEADER, """Train many classifiers on TRAIN_FILE, one run per
    combination of settings, and rank them by dev accuracy (ties: lower dev loss).

    Settings are charlm classify train's, by field name (hidden, ngrams, lr, dropout,
    epochs, time_budget ...); --grid and --random as for charlm sweep. Each trial is its own
    run under the sweep's directory (charlm classify predict RUN ... uses it), with
    sweep.jsonl holding one result line per trial.

    \b
    Examples:
      charlm classify sweep words.tsv --dev dev.tsv --grid hidden=64,128 --grid lr=1e-3,3e-3 --grid epochs=3
      charlm classify sweep words.tsv --grid epochs=5 --random dropout=0:0.5 --random ngrams=2:5 --trials 6
    """))


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
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
              help="classify every non-empty line of FILE (- reads standard input)")
@click.option("--top-k", "-k", type=click.IntRange(1), default=3, show_default=True, help="labels shown per text")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per text")
def classify_predict(args, file, top_k, as_json):
    """Label texts given as arguments, or the lines of --file, with the top-k labels and their
    probabilities (text, a tab, then the labels).

    \b
    Examples:
      charlm classify predict "bonjour" "hallo" "ciao"
      charlm classify predict runs/words-20260101-120000 -f words.txt --json
    """
    from .seqtask_view import prediction_lines

    predictor, texts = predictor_and_texts(args, file, "classify")
    emit_results(predictor.classify(texts, top_k), as_json, prediction_lines)
