"""``charlm sample``: stream generated text to stdout, plain."""
from __future__ import annotations

import json
import secrets

import click
from rich.text import Text

from .common import emit, err, run_to_use, show_path
from .safe_text import printable, printable_text


@click.command("sample")
@click.argument("run", required=False, metavar="[RUN_OR_CHECKPOINT]")
@click.option("-t", "--temperature", type=float, default=None,
              help="randomness: 0 = always the likeliest token, <1 safer, >1 wilder [default: 1.0]")
@click.option("--top-k", type=int, default=None, help="draw only from the k likeliest tokens (0 = all)")
@click.option("--top-p", type=float, default=None,
              help="draw only from the likeliest tokens whose probabilities add up to p (1 = all)")
@click.option("-p", "--prime", default="", help="text the sample starts with (the model continues it)")
@click.option("-l", "--label", default=None, metavar="LABEL",
              help="a model trained on labelled lines (train --labelled): generate text of this label")
@click.option("-n", "--max-length", type=int, default=None,
              help="stop after this many tokens if <eos> has not come [default: 2000]")
@click.option("--stop", multiple=True, metavar="STRING",
              help="end the sample before this text (not printed); repeatable")
@click.option("--min-length", type=click.IntRange(0), default=None, metavar="N",
              help="no <eos> before N tokens [default: 0]")
@click.option("--repetition-penalty", type=click.FloatRange(0, 100, min_open=True), default=None, metavar="R",
              help="R > 1 makes a token already in the sample less likely (1 = off) [default: 1]")
@click.option("--no-repeat-ngram", type=click.IntRange(0), default=None, metavar="N",
              help="never repeat N tokens in a row within a sample (0 = off) [default: 0]")
@click.option("--num-samples", type=click.IntRange(1), default=1, show_default=True, help="how many samples")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="same seed, same text (sample i uses seed + i) [default: random, shown on stderr]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of streaming text")
@click.option("--beam", type=click.IntRange(1), default=None, metavar="K",
              help="beam search instead of sampling: the K likeliest continuations, one a line with "
                   "their log-probability (deterministic; no sampling settings)")
@click.option("--length-penalty", type=float, default=None, metavar="ALPHA",
              help="with --beam: rank by log-probability / length**ALPHA, which favours longer "
                   "continuations (0 = by log-probability alone: the K likeliest) [default: 0]")
def sample(run, temperature, top_k, top_p, prime, label, max_length, stop, min_length, repetition_penalty,
           no_repeat_ngram, num_samples, seed, as_json, beam, length_penalty):
    """Generate text from a trained model until it emits <eos>.

    RUN_OR_CHECKPOINT is a run directory, a run name under ./runs, or a
    .safetensors file; without it, the most recent run. Text goes to stdout as
    it is generated; which model and seed were used goes to stderr.

    \b
    Examples:
      charlm sample                                  # latest run, one sample
      charlm sample runs/names-20250101-120000 --num-samples 10 -t 0.8
      charlm sample --prime "ROMEO:" -t 0.5 --seed 7 > romeo.txt
      charlm sample --prime "ROMEO:" --stop "JULIET:" --no-repeat-ngram 4
      charlm sample --prime "ROMEO:" --beam 5 -n 40  # the 5 likeliest continuations
      charlm sample runs/wordlang --label french -n 30 --num-samples 5

    A model trained without <eos> (--eos none) never ends a sample early: it
    writes --max-length tokens. <unk> is never drawn.
    """
    from ..config import replace
    from ..errors import VocabError
    from ..lm.checkpoint import load_checkpoint
    from ..lm.labels import label_index
    from ..lm.sample import SampleOptions, Sampler

    if beam is not None or length_penalty is not None:
        from .sample_beam import refuse_sampling_settings

        refuse_sampling_settings(beam, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                 stop=stop or None, min_length=min_length, repetition_penalty=repetition_penalty,
                                 no_repeat_ngram=no_repeat_ngram)
    path = run_to_use(run, name_latest=False)   # (the line below names it)
    checkpoint = load_checkpoint(path)
    label_index(checkpoint.metadata.get("labels", []), label)  # a missing, needless or unknown label: refused first
    seed = secrets.randbelow(2**31) if seed is None else seed
    base = replace(SampleOptions(), temperature=temperature, top_k=top_k, top_p=top_p, max_length=max_length,
                   stop=tuple(stop), min_length=min_length, repetition_penalty=repetition_penalty,
                   no_repeat_ngram=no_repeat_ngram).validate()
    tokenizer = checkpoint.tokenizer
    unk = tokenizer.tokens[tokenizer.unk_id]
    if tokenizer.level == "word" and unk in prime:  # a known token, but it means "unknown word"
        raise VocabError(f"--prime {prime!r}: {unk} stands for words the model never saw; "
                         "it cannot start a sample")
    try:  # refuse an unknown prime before anything is printed
        tokenizer.encode(prime, strict=True)
    except VocabError as e:
        raise VocabError(f"--prime {prime!r}: {e}") from None
    step = checkpoint.metadata.get("step")
    source = show_path(checkpoint.path) + (f" (step {step:,})" if isinstance(step, int) else "")
    if beam is not None:
        from .sample_beam import beam_sample

        return beam_sample(checkpoint, source, prime, beam, length_penalty, max_length, as_json, label)
    err().print(Text(f"sampling from {source}"
                     + (f" · label {printable(label)}" if label is not None else "")
                     + f" · temperature {base.temperature:g} · seed {seed}", style="dim"), soft_wrap=True)
    sampler = Sampler.from_checkpoint(checkpoint, label)
    line_mode = checkpoint.metadata.get("eos") == "line"
    texts = _emit(sampler, prime, base, seed, num_samples, as_json, line_mode)
    if as_json:
        emit(json.dumps({"checkpoint": str(checkpoint.path), "prime": prime, "label": label, "seed": seed,
                         "temperature": base.temperature, "top_k": base.top_k, "top_p": base.top_p,
                         "max_length": base.max_length, "stop": list(base.stop), "min_length": base.min_length,
                         "repetition_penalty": base.repetition_penalty, "no_repeat_ngram": base.no_repeat_ngram,
                         "samples": texts}, ensure_ascii=False))


def _emit(sampler, prime, base, seed, num_samples, as_json, line_mode) -> list[str]:
    """Stream each sample to stdout as it is generated (or collect them all for --json).

    The text is the product, written as generated, except on a terminal: there a control
    character a model learned from its corpus (an escape sequence) is shown, not obeyed."""
    import sys

    from ..config import replace

    texts = []
    shown = printable_text if sys.stdout is not None and _isatty(sys.stdout) else str
    for i in range(num_samples):
        stream = sampler.stream(prime, replace(base, seed=seed + i))
        if as_json:
            texts.append("".join(stream))
            continue
        if i and not line_mode:
            emit()  # a blank line between multi-line samples
        ends_with_newline = False
        for piece in stream:
            emit(shown(piece), nl=False)
            ends_with_newline = piece.endswith("\n")
        if not ends_with_newline:
            emit()
    return texts


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False
