"""Class language models: one n-gram language model of each label's training texts, interpolated
Kneser-Ney (Chen & Goodman 1998, "An empirical study of smoothing techniques for language
modeling"), whose likelihoods p(text | label) make a generative classifier beside the recurrent
one (fusion.py pools the two).

Why a second classifier: the recurrent ensemble and its wide path are both discriminative, and
on word language identification every setting of them tried landed near the same accuracy; a
model of how each label's texts are *written* reads a word differently (every letter given its
history, under that label) and corrects part of their mistakes (docs/classification.md, "Class
language models").

Keys. An n-gram of token ids under a label is one unsigned 64-bit number: Horner's rule on
(id + 1) with an odd multiplier, wrapping modulo 2^64, plus (label + 1) times the multiplier to
the n-th power, so one table holds every label's n-grams. A text is framed by N - 1 start
markers (id V) and closed by an end marker (id V + 1), which is predicted too: a word's ending
is evidence. Two different n-grams share a key with probability about G^2 / 2^65 (G the n-grams
stored): about 3e-8 for a million.

Counts. The highest order counts its n-grams; every lower order counts, for each n-gram, the
distinct labelled (n+1)-grams it ends (Kneser-Ney's continuation counts), so a lower order says
how many contexts a letter group follows, not how often. One discount, ``DISCOUNT``, at every
order, 0.9: the best on a selection split carved from the training words, not the dev split
(Ney's estimate, about 0.7, suits perplexity better than telling labels apart: it scored lower).

Tables, per order n (1..N): ``grams`` (sorted keys) with their ``counts``; ``contexts`` (sorted
keys of the (n-1)-gram contexts) with their ``totals`` (the counts that follow them) and ``types``
(how many distinct n-grams follow them); and the labels' training ``label_counts`` (the prior).
Dimensions: P predicted positions, C labels, N the order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runs.header import COUNT_PREFIX as PREFIX

MULTIPLIER = 0x9E3779B97F4A7C15   # odd: Horner's rule modulo 2^64 keeps distinct short sequences apart
DISCOUNT = 0.9
TABLES = ("grams", "counts", "contexts", "totals", "types")
CHUNK = 1 << 20                   # label-positions scored at once


def _power(n: int) -> np.uint64:
    return np.uint64(pow(MULTIPLIER, n, 1 << 64))


def _framed(inputs: list, order: int, vocab_size: int):
    """(tokens of every text framed and joined, the flat indices of its predicted positions, the
    text each predicted position belongs to)."""
    lengths = np.array([len(ids) for ids in inputs], np.int64)
    framed = lengths + order           # N - 1 start markers, the text, the end marker
    starts = np.concatenate([[0], np.cumsum(framed)[:-1]])
    tokens = np.full(int(framed.sum()), vocab_size, np.int64)
    text = np.repeat(np.arange(len(inputs)), lengths + 1)
    offsets = np.arange(len(text)) - np.repeat(np.cumsum(lengths + 1) - (lengths + 1), lengths + 1)
    predicted = np.repeat(starts + order - 1, lengths + 1) + offsets
    ends = starts + framed - 1
    tokens[ends] = vocab_size + 1
    if len(inputs):
        body = predicted[offsets < np.repeat(lengths, lengths + 1)]
        tokens[body] = np.concatenate(inputs)
    return tokens, predicted, text


def _chains(tokens: np.ndarray, order: int) -> list:
    """chains[n][j]: the key of the n tokens ending at flat position j, without a label (n = 0..N)."""
    chains = [np.zeros(len(tokens), np.uint64)]
    ids = tokens.astype(np.uint64) + np.uint64(1)
    for _ in range(order):
        previous = np.zeros(len(tokens), np.uint64)
        previous[1:] = chains[-1][:-1]
        chains.append(previous * np.uint64(MULTIPLIER) + ids)
    return chains


def _labelled(chain: np.ndarray, n: int, labels) -> np.ndarray:
    return chain + (np.asarray(labels, np.uint64) + np.uint64(1)) * _power(n)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[k] where keys[k] == query, else 0 (keys sorted)."""
    if len(keys) == 0:
        return np.zeros(query.shape, values.dtype)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, values[at], 0)


@dataclass
class ClassLM:
    order: int
    vocab_size: int
    label_counts: np.ndarray     # (C,) training texts per label
    tables: list                 # tables[n - 1]: {name: array} for order n (module docstring)

    @classmethod
    def fit(cls, inputs: list, targets, order: int, vocab_size: int, num_labels: int) -> "ClassLM":
        """The models of the labelled training texts ``inputs`` (id arrays) and ``targets`` (ints)."""
        tokens, predicted, text = _framed(inputs, order, vocab_size)
        chains = _chains(tokens, order)
        label = np.asarray(targets, np.int64)[text]
        tables = [None] * order
        # the highest order counts occurrences; each lower one, the distinct grams one longer it ends
        where = predicted
        for n in range(order, 0, -1):
            keys, first, counts = np.unique(_labelled(chains[n][where], n, label), return_index=True,
                                            return_counts=True)
            where, label = where[first], label[first]   # one position of each distinct n-gram
            contexts = _labelled(chains[n - 1][where - 1], n - 1, label)
            context_keys, inverse = np.unique(contexts, return_inverse=True)
            tables[n - 1] = {"grams": keys, "counts": counts.astype(np.int64), "contexts": context_keys,
                             "totals": np.bincount(inverse, counts, len(context_keys)).astype(np.int64),
                             "types": np.bincount(inverse, minlength=len(context_keys)).astype(np.int64)}
        label_counts = np.bincount(np.asarray(targets, np.int64), minlength=num_labels).astype(np.int64)
        return cls(order, vocab_size, label_counts, tables)

    def log_likelihoods(self, inputs: list) -> np.ndarray:
        """(texts, C): log p(text | label) of every text (id arrays) under every label's model, in nats."""
        C = len(self.label_counts)
        out = np.zeros((len(inputs), C))
        # texts in chunks of about CHUNK label-positions (at least one text each): bounded memory
        ends = np.cumsum([(len(ids) + 1) * C for ids in inputs])
        start = 0
        while start < len(inputs):
            done = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, done + CHUNK, side="right")))
            out[start:stop] = self._chunk(inputs[start:stop])
            start = stop
        return out

    def _chunk(self, inputs: list) -> np.ndarray:
        C = len(self.label_counts)
        tokens, predicted, text = _framed(inputs, self.order, self.vocab_size)
        chains = _chains(tokens, self.order)
        labels = np.arange(C)[:, None]
        p = np.full((C, len(predicted)), 1.0 / (self.vocab_size + 1))   # every token and the end marker
        for n in range(1, self.order + 1):
            t = self.tables[n - 1]
            context = _labelled(chains[n - 1][predicted - 1][None, :], n - 1, labels)
            total = _lookup(t["contexts"], t["totals"], context).astype(np.float64)
            types = _lookup(t["contexts"], t["types"], context)
            count = _lookup(t["grams"], t["counts"], _labelled(chains[n][predicted][None, :], n, labels))
            seen = total > 0
            p = np.where(seen, (np.maximum(count - DISCOUNT, 0.0) + DISCOUNT * types * p) / np.where(seen, total, 1.0), p)
        out = np.zeros((len(inputs), C))
        for c in range(C):
            out[:, c] = np.bincount(text, np.log(p[c]), len(inputs))
        return out

    def log_posteriors(self, inputs: list) -> np.ndarray:
        """(texts, C): log p(label | text) by Bayes' rule, the labels' training shares as the prior."""
        from .heads import log_softmax

        prior = np.log(np.maximum(self.label_counts, 1) / max(self.label_counts.sum(), 1))
        return log_softmax(self.log_likelihoods(inputs) + prior)

    # -- storage -------------------------------------------------------------------------------

    def arrays(self) -> dict:
        """The tables as a checkpoint stores them, named ``class_lm.<n>.<table>``."""
        out = {f"{PREFIX}label_counts": self.label_counts}
        for n, t in enumerate(self.tables, start=1):
            out |= {f"{PREFIX}{n}.{name}": t[name] for name in TABLES}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, order: int, vocab_size: int, num_labels: int) -> "ClassLM":
        """The models stored by ``arrays``; ValueError names what is missing or inconsistent."""
        expected = {f"{PREFIX}label_counts"} | {f"{PREFIX}{n}.{name}" for n in range(1, order + 1) for name in TABLES}
        found = {k for k in arrays if k.startswith(PREFIX)}
        if found != expected:
            raise ValueError(f"class language model tables do not match order {order}")
        label_counts = arrays[f"{PREFIX}label_counts"]
        if label_counts.shape != (num_labels,) or label_counts.dtype != np.int64 or np.any(label_counts < 0):
            raise ValueError("class language model label counts do not match the labels")
        tables = []
        for n in range(1, order + 1):
            t = {name: np.asarray(arrays[f"{PREFIX}{n}.{name}"]) for name in TABLES}
            if not (t["grams"].dtype == t["contexts"].dtype == np.uint64
                    and t["counts"].dtype == t["totals"].dtype == t["types"].dtype == np.int64
                    and t["grams"].ndim == t["counts"].ndim == t["contexts"].ndim == 1
                    and t["grams"].shape == t["counts"].shape
                    and t["contexts"].shape == t["totals"].shape == t["types"].shape
                    and all(np.all(t[name] >= 1) for name in ("counts", "totals", "types"))
                    and np.all(t["grams"][1:] > t["grams"][:-1]) and np.all(t["contexts"][1:] > t["contexts"][:-1])):
                raise ValueError(f"class language model tables of order {n} are malformed")
            tables.append(t)
        return cls(order, vocab_size, label_counts, tables)
