"""Training data a classifier or tagger can learn from, and the automatic dev split that keeps it so.

A training set whose labels are all one (one class; a restore-spaces task on text without
spaces), or whose texts are all empty, would train, score accuracy 1.0 and mean nothing: it is
refused in one line. The dev examples held out automatically never take a label's last training
example (a label the model never saw could only be refused at evaluation); where nothing can be
held out on those terms the message says what to give instead.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..data.text_files import display_name
from ..errors import ConfigError, CorpusError
from .data import NO_SPACE


def check_learnable(examples, path, fmt: str) -> None:
    """Refuse training examples with nothing to learn (one label throughout, or no text at all)."""
    where = display_name(path)
    if not any(len(e.tokens) for e in examples):
        raise CorpusError(f"{where}: every text is empty: there is nothing to learn from")
    labels = Counter(_labels(examples))
    if len(labels) > 1:
        return
    only = next(iter(labels))
    if fmt == "spaces" and only == NO_SPACE:
        raise CorpusError(f"{where}: the text has no spaces, so the restore-spaces task has nothing to learn "
                          "(give text whose words are separated by spaces)")
    what = "example has the label" if fmt == "tsv" else "token has the tag"
    raise CorpusError(f"{where}: every {what} {only!r}: nothing to learn (training needs two labels or more)")


def check_single_characters(examples, path) -> None:
    """A character-level tagger reads one character per token: a CoNLL token longer than that
    belongs to a word-level one (refused here rather than mis-encoded)."""
    for e in examples:
        long = next((t for t in e.tokens if len(t) != 1), None)
        if long is not None:
            raise CorpusError(f"{display_name(path)}: the token {long!r} is longer than one character: "
                              "a character-level tagger reads one character per token (give --level word)")


def hold_out(examples, fraction: float, seed: int, path) -> tuple[list, list]:
    """(training, dev): about ``fraction`` of ``examples`` in a seeded random order, skipping any
    whose label (classify) would then be missing from training. Without such skips this is the
    plain seeded split, so runs made before it resume on the same examples."""
    order = np.random.default_rng([seed, 7]).permutation(len(examples)).tolist()
    n_dev = int(round(len(examples) * fraction))
    if n_dev < 1 or n_dev >= len(examples):
        raise ConfigError(f"{display_name(path)}: {len(examples)} examples are too few to hold out "
                          f"{fraction:g} of them as dev (give a dev file, or a dev fraction of 0)")
    left = Counter(e.label for e in examples if isinstance(e.label, str))
    dev = set()
    for i in order:
        if len(dev) == n_dev:
            break
        label = examples[i].label
        if isinstance(label, str):
            if left[label] < 2:
                continue  # its last training example: keep it there
            left[label] -= 1
        dev.add(i)
    if not dev:
        raise ConfigError(f"{display_name(path)}: every label occurs once, so none can be held out as dev and "
                          "still be learned: give a dev file (--dev FILE), or --dev-fraction 0")
    return [e for i, e in enumerate(examples) if i not in dev], [examples[i] for i in sorted(dev)]


def _labels(examples):
    for e in examples:
        if isinstance(e.label, str):
            yield e.label
        else:
            yield from e.label
