"""From examples to padded batches: vocabularies, label lists, encoding, length bucketing.

Training batches are bucketed: each epoch shuffles the examples, sorts pools of 50 batches' worth
by length and cuts them into batches, then shuffles the batches. A batch then holds sequences of
nearly one length, so the encoder (which never computes padding anyway) makes few kernel calls.
The order of an epoch depends only on (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.tokenizer import Tokenizer
from ..errors import CorpusError

POOL_BATCHES = 50


def fit_vocabulary(examples, level: str, task: str) -> Tokenizer:
    """Vocabulary of the training examples: classify texts at ``level``; tag tokens (characters
    of restore-spaces, words of CoNLL) as they are."""
    if task == "classify":
        return Tokenizer.fit((e.tokens for e in examples), level)
    if level == "char":
        return Tokenizer.fit(("".join(e.tokens) for e in examples), "char")
    return Tokenizer.from_counts(_count(t for e in examples for t in e.tokens), "word", split="whitespace")


def _count(items) -> dict:
    counts = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def fit_labels(examples, task: str) -> list[str]:
    """Sorted label (or tag) names seen in training."""
    if task == "classify":
        return sorted({e.label for e in examples})
    return sorted({tag for e in examples for tag in e.label})


def encode_tokens(tokenizer: Tokenizer, tokens, task: str) -> np.ndarray:
    """Ids of one example's input; an empty input becomes one <eos> (every sequence has length >= 1)."""
    if task == "classify":
        ids = tokenizer.encode(tokens, dtype=np.int64)
    elif tokenizer.level == "char":
        ids = tokenizer.encode("".join(tokens), dtype=np.int64)
    else:
        index = {t: i for i, t in enumerate(tokenizer.tokens)}
        ids = np.fromiter((index.get(t, tokenizer.unk_id) for t in tokens), np.int64, len(tokens))
    return ids if ids.size else np.zeros(1, np.int64)


@dataclass
class Encoded:
    """A whole data split as ids: inputs[i] (n_i,), targets[i] an int (classify) or (n_i,) ints (tag)."""

    inputs: list
    targets: list
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    def digest(self) -> str:
        """A content fingerprint: the ids, lengths and targets of every example, in order (a resume
        refuses data whose digest differs: a changed letter or label, not only a changed count)."""
        from ..runs.fingerprint import ids_digest

        parts = [self.lengths, np.concatenate(self.inputs) if self.inputs else np.zeros(0, np.int64),
                 np.concatenate([np.atleast_1d(t) for t in self.targets]) if self.targets else np.zeros(0, np.int64)]
        return "-".join(ids_digest(p) for p in parts)


def encode_examples(examples, tokenizer: Tokenizer, labels: list[str], task: str, *,
                    max_length: int = 0, where: str = "") -> Encoded:
    """Encode a split; a label the model does not know is an error naming it."""
    index = {label: i for i, label in enumerate(labels)}
    inputs, targets = [], []
    for e in examples:
        ids = encode_tokens(tokenizer, e.tokens, task)
        try:
            target = index[e.label] if task == "classify" else np.array([index[t] for t in e.label], np.int64)
        except KeyError as err:
            raise CorpusError(f"{where}label {err.args[0]!r} was not in the training data "
                              f"(known: {', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''})") from None
        if task == "tag" and target.size == 0:
            target = np.zeros(1, np.int64)
        if max_length:
            ids = ids[:max_length]
            target = target if task == "classify" else target[:max_length]
        inputs.append(ids)
        targets.append(target)
    return Encoded(inputs, targets, np.array([len(i) for i in inputs], np.int64))


def pad_inputs(encoded: Encoded, index):
    """(ids (T, B) right-padded with 0, lengths (B,)) of the examples at ``index``."""
    lengths = encoded.lengths[index]
    ids = np.zeros((int(lengths.max()), len(index)), np.int64)
    for b, i in enumerate(index):
        ids[:lengths[b], b] = encoded.inputs[i]
    return ids, lengths


def pad(encoded: Encoded, index, task: str):
    """(ids (T, B), lengths (B,), targets (B,) or (T, B)) of the examples at ``index``."""
    ids, lengths = pad_inputs(encoded, index)
    T = ids.shape[0]
    if task == "classify":
        return ids, lengths, np.array([encoded.targets[i] for i in index], np.int64)
    tags = np.zeros((T, len(index)), np.int64)
    for b, i in enumerate(index):
        tags[:lengths[b], b] = encoded.targets[i]
    return ids, lengths, tags


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The bucketed batches (arrays of example indices) of one training epoch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches = []
    for p0 in range(0, len(order), pool):
        part = order[p0:p0 + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[b0:b0 + batch_size] for b0 in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """All examples once, sorted by length into batches (evaluation and prediction)."""
    order = np.argsort(lengths, kind="stable")
    return [order[b0:b0 + batch_size] for b0 in range(0, len(order), batch_size)]
