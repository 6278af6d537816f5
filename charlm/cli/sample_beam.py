"""``charlm sample --beam K``: the K likeliest continuations, one a line with their scores, or as JSON."""
from __future__ import annotations

import json

import click
from rich.text import Text

from .common import emit, err
from .safe_text import printable


def refuse_sampling_settings(beam, **given) -> None:
    """A usage error when beam-search options meet sampling settings (or --length-penalty comes
    without --beam): a beam search is deterministic, nothing in it is drawn."""
    if beam is None:
        raise click.UsageError("--length-penalty is a beam-search setting: add --beam K")
    ctx = click.get_current_context()
    named = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
    if ctx.get_parameter_source("num_samples") is not click.core.ParameterSource.DEFAULT:
        named.append("--num-samples")
    if named:
        raise click.UsageError(f"--beam cannot be combined with {', '.join(named)}: "
                               "they are sampling settings, and a beam search draws nothing")


def beam_sample(checkpoint, source: str, prime: str, beam: int, length_penalty, max_length, as_json,
                label=None) -> None:
    """Run the search once and render it. One line a hypothesis, best first: its log-probability,
    its normalised score when a length penalty is on, then its text escaped onto that one line
    (``--json`` keeps the text exact). ``label``: a labelled model's label (lm/labels.py)."""
    from ..config import replace
    from ..decoding.beam import BeamOptions
    from ..lm.beam_adapter import beam_continuations
    from ..lm.sample import Sampler

    options = replace(BeamOptions(beam=beam), length_penalty=length_penalty, max_length=max_length).validate()
    err().print(Text(f"beam search from {source} · beam {options.beam}"
                     f" · length penalty {options.length_penalty:g}", style="dim"), soft_wrap=True)
    found = beam_continuations(Sampler.from_checkpoint(checkpoint, label), prime, options)
    if as_json:
        emit(json.dumps({"checkpoint": str(checkpoint.path), "prime": prime, "label": label, "beam": options.beam,
                         "length_penalty": options.length_penalty, "max_length": options.max_length,
                         "hypotheses": [c.to_dict() for c in found]}, ensure_ascii=False))
        return
    for c in found:
        score = f"\t{c.score:.4f}" if options.length_penalty else ""
        emit(f"{c.log_prob:.4f}{score}\t{printable(c.text)}")
