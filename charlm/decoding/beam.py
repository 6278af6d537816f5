"""Beam search, written once for every model that scores its next token from a state.

The search reaches the model only through ``BeamModel``: ``step`` turns the last token and state
of K hypotheses into their next-token log-probabilities and new states, ``select`` picks states by
hypothesis. What a state holds (a recurrent state; for an encoder-decoder, the encoder outputs as
well) is the model's business: the search only passes states back to it.

Semantics. The beam starts as one empty hypothesis. At each step every live hypothesis is extended
by every allowed token, and the best candidates by total log-probability fill the slots left: a
candidate ending in ``eos_id`` is finished and set aside (it keeps its slot), the others go on. The
search stops when K hypotheses have finished or after ``max_length`` tokens; hypotheses still open
then are returned too, marked unfinished. A hypothesis's ``log_prob`` is the sum of the natural-log
probabilities of its tokens, ``eos_id`` included when it ends with it; its ``score`` is
``log_prob / len(tokens) ** length_penalty`` (``len`` counts ``eos_id``). Banned ids (tokens the
model was never trained to produce, such as ``<unk>``) are never expanded. No randomness: ties go
to the lower hypothesis index, then the lower token id.

The length penalty only ranks finished hypotheses of different lengths against each other: the
candidates competing for slots at one step all have the same length, so dividing their log-
probabilities by the same ``length ** alpha`` cannot change which win. The default is none (0): rank
by probability alone, which is what a language model continuing a prime is asked for. There
the penalty does harm: a hypothesis caught in a repeating loop costs little per token, so ranking
per token (alpha near 1) prefers loops that run to ``max_length`` over continuations that end, and
without it the lengths found stay close to the training text's. Translation is different: a short
output leaves part of the source untranslated, and translation systems commonly rank with alpha
near 0.6 against that; an encoder-decoder passes its own value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError

DEFAULT_LENGTH_PENALTY = 0.0


class BeamModel(Protocol):
    """What beam search needs from a model."""

    def step(self, tokens: np.ndarray, states: Any) -> tuple[np.ndarray, Any]:
        """Feed ``tokens`` (K,) int64, one to each of K hypotheses whose states are ``states``;
        return (log_probs (K, V) float64 natural-log next-token distributions, the K new states).
        ``states`` itself must be left as it was."""

    def select(self, states: Any, rows: np.ndarray) -> Any:
        """The states of hypotheses ``rows`` (indices into ``states``, repeats allowed), in order."""


@dataclass(frozen=True)
class BeamOptions:
    beam: int = 5                                    # hypotheses kept (and returned)
    max_length: int = 2000                           # tokens per hypothesis at most, eos included
    length_penalty: float = DEFAULT_LENGTH_PENALTY   # score = log_prob / length ** this (0 = none)

    def validate(self) -> "BeamOptions":
        for name in ("beam", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        a = self.length_penalty
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not (math.isfinite(a) and a >= 0):
            raise ConfigError(f"length_penalty must be a number >= 0 (0 = none), got {a!r}")
        return self


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]   # generated ids, ending with eos_id when finished
    log_prob: float           # sum of the natural-log probabilities of ``tokens``
    score: float              # log_prob / len(tokens) ** length_penalty: what hypotheses are ranked by
    finished: bool            # ended with eos_id (else stopped at max_length)


def normalised(log_prob: float, length: int, length_penalty: float) -> float:
    """The score a hypothesis of ``length`` tokens (eos included) and ``log_prob`` is ranked by."""
    return log_prob / length ** length_penalty if length_penalty else log_prob


def beam_search(model: BeamModel, state, start_token: int, eos_id: int, options: BeamOptions = BeamOptions(),
                banned=()) -> list[Hypothesis]:
    """Up to ``options.beam`` hypotheses continuing ``state`` (the model's state for one hypothesis,
    which then reads ``start_token``), best score first (see the module docstring)."""
    options = options.validate()
    alpha = options.length_penalty
    banned = np.asarray(sorted(set(int(b) for b in banned)), np.int64)
    prefixes: list[tuple[int, ...]] = [()]
    totals = np.zeros(1)
    feed = np.array([start_token], np.int64)
    states = state
    finished: list[Hypothesis] = []
    for _ in range(options.max_length):
        log_probs, states = model.step(feed, states)
        scores = totals[:, None] + np.asarray(log_probs, np.float64)   # a fresh array: banning is local
        scores[:, banned] = -np.inf
        scores[np.isnan(scores)] = -np.inf   # no distribution there: nothing to expand
        rows, ids = _best(scores, options.beam - len(finished))
        keep = []
        for r, t in zip(rows.tolist(), ids.tolist()):
            tokens, total = prefixes[r] + (t,), float(scores[r, t])
            if t == eos_id:
                finished.append(Hypothesis(tokens, total, normalised(total, len(tokens), alpha), True))
            else:
                keep.append((r, tokens, total))
        if not keep:
            prefixes = []
            break
        rows = np.array([r for r, _, _ in keep], np.int64)
        states = model.select(states, rows)
        prefixes = [tokens for _, tokens, _ in keep]
        totals = np.array([total for _, _, total in keep])
        feed = np.array([tokens[-1] for tokens in prefixes], np.int64)
    unfinished = [Hypothesis(p, float(s), normalised(float(s), len(p), alpha), False)
                  for p, s in zip(prefixes, totals) if p]
    ranked = sorted(finished + unfinished, key=lambda h: -h.score)   # stable: ties keep their order
    return ranked[:options.beam]


def _best(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, ids) of the ``n`` highest finite entries of ``scores`` (K, V), best first, ties by
    position (row, then id). A -inf entry (banned, or probability 0) is never chosen."""
    flat = scores.ravel()
    if n < flat.size:  # only the entries that can make the cut are sorted (V may be large)
        cut = np.partition(flat, flat.size - n)[flat.size - n]
        candidates = np.flatnonzero(flat >= cut)
    else:
        candidates = np.arange(flat.size)
    order = candidates[np.argsort(-flat[candidates], kind="stable")][:n]
    order = order[np.isfinite(flat[order])]
    return np.divmod(order, scores.shape[1])
