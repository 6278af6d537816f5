"""``charlm seq2seq train|eval|predict``: transduce a source into a target (spelling into sound,
a string into its reversal), from ``source<TAB>target`` lines.

The commands parse, make one library call (charlm.seq2seq) and render; training runs through
classify's runner (the shared loop's live view, locks and stop signals).
"""
from __future__ import annotations

import json

import click

from ..seq2seq.config import DEFAULTS, LENGTH_PENALTY, LEVELS, Seq2SeqConfig
from ..seqtask.config import SeqTrainConfig
from .common import emit, out, runs_root, show_path
from .options import given, setting_options
from .run_options import json_option
from .seqtask_commands import (
    emit_results,
    name_the_model,
    run_and_texts,
    run_options,
    run_training,
    split_run_and_file,
)

BEAM_HELP = "beam search with K hypotheses instead of greedy decoding"


def beam_options(func):
    """--beam K and --length-penalty ALPHA (which only a beam reads)."""
    func = click.option("--length-penalty", type=click.FloatRange(0), default=None, metavar="ALPHA",
                        help="with --beam: rank finished outputs by log-probability / length**ALPHA (0 = by "
                             f"log-probability alone, which favours short outputs) [default: {LENGTH_PENALTY:g}]")(func)
    return click.option("--beam", "-b", type=click.IntRange(1), default=None, metavar="K", help=BEAM_HELP)(func)


def beam_settings(beam, length_penalty) -> tuple[int, float]:
    """(beam width, 0 for greedy; length penalty): a length penalty without a beam is refused."""
    if length_penalty is not None and beam is None:
        raise click.UsageError("--length-penalty ranks a beam's outputs: give --beam K too")
    return beam or 0, LENGTH_PENALTY if length_penalty is None else length_penalty


class Seq2SeqRuns:
    """How seq2seq runs start, resume and look (seqtask_commands.run_training's ``kind``)."""

    def __init__(self, autoencode: bool = False):
        self.autoencode = autoencode

    def start(self, task, values, describe, run_dir):
        from ..seq2seq import runs
        from ..seq2seq.config import make_configs

        model_config, train_config = make_configs(values, self.autoencode)
        return runs.start(describe(train_config.seed), model_config, train_config, runs_root(), run_dir)

    def resume(self, run, values):
        from ..seq2seq import runs
        from ..seqtask.config import seq_resume_overrides

        return runs.resume(run, seq_resume_overrides(values, Seq2SeqConfig))

    def header_lines(self, trainer):
        from .seq2seq_view import header_lines

        return header_lines(trainer)

    def progress(self, console):
        from .seq2seq_view import Seq2SeqProgress

        return Seq2SeqProgress(console, live=console.is_terminal)


@click.group("seq2seq")
def seq2seq():
    """Sequence to sequence: an encoder-decoder with attention turns each source into a target.

    \b
    Examples:
      charlm seq2seq train g2p.tsv --source-level char --target-level word --time 10m
      charlm seq2seq eval test.tsv --beam 5           # the latest seq2seq run
      charlm seq2seq predict "hello" "world" --json
    """


@seq2seq.command("train")
@click.argument("train_file", required=False, type=click.Path(dir_okay=False))
@click.option("--source-level", type=click.Choice(LEVELS), default="char", show_default=True,
              help="source tokens: characters, or whitespace-separated words")
@click.option("--target-level", type=click.Choice(LEVELS), default="char", show_default=True,
              help="target tokens: characters, or whitespace-separated words (phoneme symbols)")
@click.option("--autoencode", is_flag=True,
              help="train an autoencoder: every line of the files is its own target, and the decoder sees only "
                   "the encoder's final vector (no attention; see `charlm seq2seq encode`)")
@setting_options(Seq2SeqConfig, SeqTrainConfig, defaults=DEFAULTS)
@lambda func: json_option(run_options(func, examples="sources"))
def seq2seq_train(train_file, source_level, target_level, autoencode, dev_file, dev_fraction, run_dir, resume,
                  as_json, **options):
    """Train an encoder-decoder on TRAIN_FILE, source<TAB>target lines (a source on several
    lines has several right answers).

    Evaluates on the dev split (greedy WER and PER) about 8 times (or --eval-every), keeps
    the best model by dev WER (model.safetensors) and the latest state (last.safetensors).
    Ctrl-C stops after the current step, saves, and prints how to resume.

    \b
    Examples:
      charlm seq2seq train g2p.tsv --target-level word --dev dev.tsv --time 10m
      charlm seq2seq train reverse.tsv --steps 2000 --hidden 64
      charlm seq2seq train --resume runs/g2p-20260101-120000 --time 20m
      charlm seq2seq train --autoencode words.txt --hidden 64 --time 5m
    """
    from ..seq2seq.runs import data_spec

    def describe(seed: int) -> dict:
        return data_spec(train_file, dev_file=dev_file, dev_fraction=dev_fraction, source_level=source_level,
                         target_level=target_level, seed=seed, autoencode=autoencode)
    return run_training("seq2seq", train_file, describe, given(options), run_dir, resume, as_json=as_json,
                        kind=Seq2SeqRuns(autoencode))


@seq2seq.command("eval")
@click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE")
@beam_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def seq2seq_eval(args, beam, length_penalty, as_json):
    """Score an encoder-decoder on a source<TAB>target file: WER (share of sources whose output
    matches none of their targets) and PER (edits to the closest target over its length).

    \b
    Examples:
      charlm seq2seq eval test.tsv
      charlm seq2seq eval runs/g2p-20260101-120000 test.tsv --beam 5 --json | jq .wer
    """
    from ..seq2seq.predict import Transducer
    from .seq2seq_view import report_lines

    run, rest = split_run_and_file(args, "seq2seq")
    if not rest:
        raise click.UsageError("give the source<TAB>target file to evaluate")
    settings = beam_settings(beam, length_penalty)
    transducer = Transducer.load(run)
    result = transducer.evaluate(rest[0], *settings) | {"checkpoint": str(transducer.checkpoint.path)}
    if as_json:
        emit(json.dumps(result))
        return
    for line in report_lines(result, show_path(transducer.checkpoint.path)):
        out().print(line, highlight=False, soft_wrap=True)


@seq2seq.command("predict")
@click.argument("args", nargs=-1, metavar="[RUN] [TEXT...]")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
              help="transduce every non-empty line of FILE (a source<TAB>target line: its source; - reads standard input)")
@beam_options
@click.option("--json", "as_json", is_flag=True,
              help="one JSON object per source: source, prediction (and with --beam the K hypotheses)")
def seq2seq_predict(args, file, beam, length_penalty, as_json):
    """Transduce sources given as arguments, or the lines of --file (source, a tab, then the
    output; with --beam, each hypothesis and its log-probability below).

    \b
    Examples:
      charlm seq2seq predict "hello" "world"
      charlm seq2seq predict runs/g2p-20260101-120000 -f words.txt --beam 5 --json
    """
    from .seq2seq_view import prediction_lines

    settings = beam_settings(beam, length_penalty)
    transducer, sources = transducer_and_sources(args, file)
    emit_results(transducer.predict(sources, *settings), as_json, prediction_lines)


def transducer_and_sources(args, file):
    """The model of [RUN] (default: the latest seq2seq run) and the sources to read: the other
    arguments, then the lines of ``file`` (a source<TAB>target line gives its source)."""
    from ..data.text_files import display_name, read_text
    from ..errors import CorpusError
    from ..seq2seq.data import read_sources, tokens
    from ..seq2seq.predict import Transducer

    run, texts = run_and_texts(args, "seq2seq")
    if not texts and not file:
        raise click.UsageError("give sources, or --file FILE")
    transducer = Transducer.load(run)
    name_the_model(transducer.checkpoint.path)
    level = transducer.checkpoint.levels["source"]
    sources = [tokens(t, level) for t in texts] + (read_sources(read_text(file), level) if file else [])
    if not sources or not all(sources):
        raise CorpusError("a source is empty" if sources else f"{display_name(file)}: no sources")
    return transducer, sources


@seq2seq.command("encode")
@click.argument("args", nargs=-1, metavar="[RUN] [TEXT...]")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
              help="encode every non-empty line of FILE (- reads standard input)")
@click.option("--out", "-o", "out_file", type=click.Path(dir_okay=False),
              help="write the vectors as one (lines, width) float array to this .npy file")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line: source and vector (the default)")
def seq2seq_encode(args, file, out_file, as_json):
    """The encoder's vector of each source (the top layer's final states, both directions):
    an autoencoder's code of each line (`charlm seq2seq train --autoencode`).

    \b
    Examples:
      charlm seq2seq encode runs/words-20260101-120000 -f words.txt --out words.npy
      charlm seq2seq encode "hello" "help" --json
    """
    from ..seq2seq.data import join

    if out_file and as_json:
        raise click.UsageError("give --out FILE or --json, not both")
    transducer, sources = transducer_and_sources(args, file)
    vectors = transducer.vectors(sources)
    if out_file:
        import io

        import numpy as np

        from ..fsutil import atomic_write_bytes

        buffer = io.BytesIO()
        np.save(buffer, vectors)
        atomic_write_bytes(out_file, buffer.getvalue())
        emit(f"{len(sources):,} vectors of {vectors.shape[1]} → {show_path(out_file)}")
        return
    level = transducer.checkpoint.levels["source"]
    emit_results([{"source": join(s, level), "vector": v.tolist()} for s, v in zip(sources, vectors)], True, None)
