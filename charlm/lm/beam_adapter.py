"""The language model as a beam-search model (decoding/beam.py): its K most likely continuations of a prime."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoding.beam import BeamOptions, beam_search


class LanguageModelBeam:
    """``BeamModel`` for a language model: a hypothesis's state is its (L, S, H) recurrent state, K
    of them stacked as (K, L, S, H).

    Each row runs through the sampler's own one-token step (``advance`` of the generation loop), so
    the log-probabilities are exactly those the sampler draws from; those loops are batch-1, hence
    one call per hypothesis. Like the sampler, the first NUMPY_TOKENS positions use the NumPy loop
    and the rest the compiled one (``Sampler._loop``), which keeps a beam of 1 the greedy sample
    token for token: the two loops' logits differ in the last bits, enough to flip a near-tie."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.position = 0   # tokens generated before the next step: which loop serves it

    def step(self, tokens: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, advance = self.sampler._loop(self.position)
        self.position += 1
        new = np.array(states, order="C")   # a copy: the caller's states stay as they were
        logits = np.empty((len(tokens), self.sampler.model.config.vocab_size), new.dtype)
        for k, token in enumerate(np.asarray(tokens, np.int64)):
            advance(new[k], np.array([token]), logits[k])
        return log_softmax(logits), new

    def select(self, states: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(states[rows])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Natural-log softmax over the last axis, in float64 whatever the model's dtype."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Continuation:
    text: str               # the prime and the continuation, as ``charlm sample`` writes them
    tokens: list[str]       # the generated tokens, "<eos>" last when the hypothesis ended
    ids: list[int]          # their ids
    log_prob: float         # sum of the natural-log probabilities of ``ids``
    score: float            # log_prob / len(ids) ** length_penalty: the rank

    def to_dict(self) -> dict:
        return {"text": self.text, "log_prob": self.log_prob, "score": self.score, "tokens": self.tokens}


def beam_continuations(sampler, prime: str = "", options: BeamOptions = BeamOptions()) -> list[Continuation]:
    """The ``options.beam`` best continuations of ``prime`` by beam search, best first. Unknown
    characters or words in the prime raise VocabError; what the sampler bans (``<unk>``, and
    ``<eos>`` for a model trained without it) is never generated."""
    from ..runtime import thread_limits

    options = options.validate()
    tok = sampler.tokenizer
    prime_ids = tok.encode(prime, strict=True).astype(np.int64) if prime else np.zeros(0, np.int64)
    with thread_limits():
        state, token = sampler._prime_state(prime_ids)
        found = beam_search(LanguageModelBeam(sampler), state[None], token, tok.eos_id, options,
                            banned=sampler.banned_ids())
    return [Continuation(_text(tok, prime, h.tokens), [tok.tokens[i] for i in h.tokens], list(h.tokens),
                         h.log_prob, h.score) for h in found]


def _text(tok, prime: str, ids) -> str:
    """What ``Sampler.stream`` yields for a sample of ``ids``: the prime, then the text before <eos>."""
    body = ids[:-1] if ids and ids[-1] == tok.eos_id else ids
    if not body:
        return prime
    text = tok.decode(np.asarray(body, np.int64))
    glued = tok.level != "word" or not prime or prime.endswith("\n") or text.startswith("\n")
    return prime + (text if glued else " " + text)
