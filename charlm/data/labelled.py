"""Labelled lines (``text<TAB>label``) as a language model's training text: each line one sequence.

The ids are those ``--eos line`` gives (``<eos> text <eos> text ... <eos>``), so whatever reads a
corpus's id stream reads these too; ``LabelledLines`` adds each line's label, in order, and the
label vocabulary. ``LineBatcher`` draws B whole lines per step in a seeded order per epoch: every
line is its own sequence, started afresh from its own label, so no state (and no label) carries
from one line into the next.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, CorpusError
from .batches import EpochPosition, check_positive


@dataclass
class LabelledLines:
    names: list[str]       # the label vocabulary, sorted: a label's id is its index
    train: np.ndarray      # (training lines,) int64: each line's label id, in order
    val: np.ndarray        # (validation lines,) int64


def read_labelled(path) -> list[tuple[str, str]]:
    """(text, label) of every non-blank line of ``path``, read as ``charlm classify`` reads its
    files (the label after the last tab; a line without a tab or with an empty label is one
    CorpusError naming the file and the line; a header line such as ``text<TAB>label`` skipped)."""
    from .tab_files import read_tsv

    return [(e.tokens, e.label) for e in read_tsv(path)]


def build_labelled_corpus(paths, *, level="char", split="whitespace", val_fraction=0.1, val_file=None,
                          tokenizer=None, names=None, max_vocab=0, min_count=1):
    """A ``Corpus`` of labelled lines whose ``labels`` is a LabelledLines.

    Without ``val_file``, every k-th line is held out (k = 1 / val_fraction, rounded): files of
    labelled lines are often grouped by label, and a contiguous tail would hold out one label only.
    The vocabulary is fitted on the training lines (unless ``tokenizer`` is given), and so are the
    label names (unless ``names`` is given); a held-out line with an unknown label is refused."""
    from .corpus import Corpus
    from .text_files import check_path
    from .tokenizer import Tokenizer, check_fit_args, count_tokens

    paths = [check_path(p, stdin=False) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise CorpusError("no training files given")
    rows = [row for p in paths for row in read_labelled(p)]
    train, val = rows, []
    if val_file:
        val = read_labelled(check_path(val_file, stdin=False))
    elif val_fraction > 0:
        every = max(2, round(1 / val_fraction))
        train, val = [r for i, r in enumerate(rows) if i % every != every - 1], rows[every - 1::every]
        if not val:
            raise CorpusError(f"{paths[0]}: only {len(rows)} lines, too few to hold out {val_fraction:g} "
                              "for validation; add lines, give --val-file or set --val-fraction 0")
    if tokenizer is None:
        check_fit_args(level, split, max_vocab, min_count)
        tokenizer = Tokenizer.from_counts(count_tokens((t for t, _ in train), level, split), level,
                                          split=split, max_vocab=max_vocab, min_count=min_count)
    names = list(names) if names is not None else sorted({label for _, label in train})
    labels = LabelledLines(names, _label_ids(train, names, "training"), _label_ids(val, names, "validation"))
    return Corpus(tokenizer, _line_ids(tokenizer, train), _line_ids(tokenizer, val), "line", paths,
                  val_file or None, labels)


def _label_ids(rows, names, part: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    unknown = next((label for _, label in rows if label not in index), None)
    if unknown is not None:
        raise CorpusError(f"a {part} line's label {unknown[:60]!r} is not one of the {len(names)} "
                          "labels of the training lines")
    return np.array([index[label] for _, label in rows], np.int64)


def _line_ids(tok, rows) -> np.ndarray:
    """<eos> text <eos> text ... <eos> (an empty array for no lines)."""
    from .sequences import encode_segment

    if not rows:
        return np.zeros(0, tok.id_dtype)
    ids = np.concatenate([[tok.eos_id], encode_segment(tok, [t for t, _ in rows], True)]).astype(tok.id_dtype)
    if np.count_nonzero(ids == tok.eos_id) != len(rows) + 1:  # a word-level text spelling "<eos>"
        raise CorpusError("a labelled text holds the token <eos>, which would split its line in two")
    return ids


def line_bounds(ids) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends): line k reads ids[starts[k]:ends[k]] (its opening <eos> and its text) and
    predicts ids[starts[k] + 1:ends[k] + 1] (its text and its closing <eos>)."""
    bounds = np.flatnonzero(np.asarray(ids) == 0)  # <eos> is id 0 (tokenizer.py)
    return bounds[:-1], bounds[1:]


def line_batch(ids, starts, ends, labels):
    """x (T, B) int64 with each line from step 0 (0 past its end), y (T, B) the next ids (-1 past
    the end: no loss there), labels (B,) int64; T the longest line's length. Padding only ever
    follows a line, so in a causal model it changes nothing of the line."""
    T, B = int((ends - starts).max()), len(starts)
    x, y = np.zeros((T, B), np.int64), np.full((T, B), -1, np.int64)
    for b, (s, e) in enumerate(zip(starts, ends)):
        line = np.asarray(ids[s:e + 1], np.int64)
        x[:e - s, b], y[:e - s, b] = line[:-1], line[1:]
    return x, y, np.asarray(labels, np.int64)


class LineBatcher(EpochPosition):
    """B whole lines per step (``line_batch``), in a new order each epoch drawn from (seed,
    epoch), so a resumed run draws the same lines; an epoch's last partial batch is dropped."""

    def __init__(self, ids, labels, batch_size: int, seed: int):
        check_positive(batch_size=batch_size)
        self.ids, self.labels, self.seed = ids, labels, seed
        self.starts, self.ends = line_bounds(ids)
        if len(self.starts) < batch_size:
            raise ConfigError(f"the training text has {len(self.starts)} labelled lines, fewer than "
                              f"batch_size {batch_size}; lower --batch-size")
        self.batch_size = batch_size
        self.windows_per_epoch = len(self.starts) // batch_size
        self._order = (-1, None)

    def next_batch(self):
        if self._order[0] != self._epoch:
            self._order = (self._epoch, np.random.default_rng([self.seed, self._epoch]).permutation(len(self.starts)))
        pick = self._order[1][self._position * self.batch_size:(self._position + 1) * self.batch_size]
        self.advance()
        return line_batch(self.ids, self.starts[pick], self.ends[pick], self.labels[pick])
