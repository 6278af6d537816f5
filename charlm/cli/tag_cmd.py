"""``charlm tag train|eval|predict|sweep``: one tag per token, from CoNLL files or the restore-spaces task."""
from __future__ import annotations

import json

import click

from .common import emit
from .options import given
from .seqtask_commands import (emit_results, evaluate_command, predictor_and_texts, run_training, sweep_command,
                               training_options)


@click.group("tag")
def tag():
    """Sequence tagging: one tag per token (parts of speech, named entities, where spaces go).

    \b
    Examples:
      charlm tag train train.conll --dev dev.conll
      charlm tag train book.txt --format spaces --epochs 3   # learn to restore spaces
      charlm tag predict "thequickbrownfox"                  # -> the quick brown fox
    """


FORMAT = click.option("--format", "fmt", type=click.Choice(("conll", "spaces")), default="conll", show_default=True,
                      help="conll: token and tag per line, blank lines between sequences; spaces: any plain text, "
                           "learn to put its spaces back (tag per character: does a space follow?)")


@tag.command("train")
@click.argument("train_file", required=False, type=click.Path(dir_okay=False))
@FORMAT
@training_options("tag")
def tag_train(train_file, fmt, dev_file, dev_fraction, run_dir, resume, ranks, as_json, **options):
    """Train a tagger on TRAIN_FILE.

    A CoNLL file's tokens are read as words (give --level char when every token is one
    character, e.g. to tag a text character by character). With --format spaces, TRAIN_FILE is plain text: each line, its spaces removed, is a
    sequence of characters to tag with whether a space followed. No labels needed.
    With a time budget (--time, or no budget: 5 minutes) the width (unless --hidden) and,
    for characters, hashed n-gram embeddings (unless --ngrams) are chosen for the data and
    the budget (the "chosen" line).

    \b
    Examples:
      charlm tag train train.conll --dev dev.conll --epochs 20
      charlm tag train book.txt --format spaces --time 5m
    """
    from ..seqtask.runs import data_spec, with_natural_level

    values = given(options) if resume else with_natural_level(given(options), fmt)

    def describe(seed: int) -> dict:
        return data_spec("tag", train_file, dev_file=dev_file, dev_fraction=dev_fraction, fmt=fmt, seed=seed)
    return run_training("tag", train_file, describe, values, run_dir, resume, ranks, as_json)


tag.add_command(sweep_command("tag", FORMAT, """Train many taggers on TRAIN_FILE, one run per combination of
    settings, and rank them by dev token accuracy (ties: lower dev loss).

    Settings are charlm tag train's, by field name; --grid and --random as for charlm sweep.
    Each trial is its own run under the sweep's directory, with sweep.jsonl holding one
    result line per trial.

    \b
    Examples:
      charlm tag sweep train.conll --dev dev.conll --grid hidden=64,128 --grid epochs=10
      charlm tag sweep book.txt --format spaces --grid time_budget=2m --random lr=1e-3:1e-2:log --trials 4
    """))


@tag.command("eval")
@click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
def tag_eval(args, as_json):
    """Score a tagger on a file in its training format: token accuracy, sequence accuracy,
    macro-F1 and per-tag precision and recall.

    \b
    Examples:
      charlm tag eval test.conll
      charlm tag eval runs/book-20260101-120000 other_book.txt --json
    """
    evaluate_command("tag", args, "auto", as_json)


@tag.command("predict")
@click.argument("args", nargs=-1, metavar="[RUN] [TEXT...]")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False), help="tag every line of FILE (- reads standard input)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def tag_predict(args, file, as_json):
    """Tag the whitespace-separated tokens of each TEXT (or line of --file): token/TAG pairs.
    A restore-spaces tagger prints each text with its spaces put back instead.

    \b
    Examples:
      charlm tag predict "The cat sat ."
      charlm tag predict "itwasthebestoftimes" -f squashed.txt
    """
    from .safe_text import printable
    from .seqtask_view import tag_lines

    predictor, texts = predictor_and_texts(args, file, "tag")
    if predictor.derived_task == "restore-spaces":
        for text in texts:
            restored = predictor.restore_spaces(text)
            emit(json.dumps({"text": text, "restored": restored}, ensure_ascii=False) if as_json
                 else "\n".join(printable(line) for line in restored.split("\n")))
        return
    emit_results(predictor.tag([t.split() for t in texts]), as_json, tag_lines)
