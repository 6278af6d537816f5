"""Text generation: condition on a prime, then sample token by token until <eos>.

The per-token loop (GEMV per layer, cell update, softmax with temperature, top-k/top-p,
inverse-CDF draw, stop at <eos>) runs inside one @njit call (kernels/generate.py); Python only
hands it a chunk of pre-drawn uniforms and decodes what comes back, so text streams to the
terminal with no per-character Python overhead. The first ``NUMPY_TOKENS`` tokens of every sample
come from the same loop written in NumPy, with the same sampling rule (kernels/generate_numpy.py
says why: a short sample then never waits for Numba to load). Random numbers come from an
explicit ``np.random.Generator``: the same seed gives the same text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import numpy as np

from ..errors import CheckpointError, ConfigError

STREAM_CHUNK = 64   # tokens per kernel call: large enough to amortise the call, small enough to feel live


@dataclass(frozen=True)
class SampleOptions:
    temperature: float = 1.0    # 0 = greedy (argmax); < 1 sharper, > 1 flatter
    top_k: int = 0              # keep only the k most probable tokens (0 = all)
    top_p: float = 1.0          # nucleus: smallest set with cumulative probability >= top_p (1 = all)
    max_length: int = 2000      # tokens to generate at most (excluding the prime)
    seed: int | None = None     # None = fresh entropy
    stop: tuple = ()            # end before the first of these strings in the generated text (not yielded)
    min_length: int = 0         # no <eos> before this many tokens
    repetition_penalty: float = 1.0   # > 1: a token already generated is less likely (1 = off)
    no_repeat_ngram: int = 0    # N > 0: no N tokens in a row appear twice in a sample (0 = off)

    def validate(self) -> "SampleOptions":
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and 0 <= self.temperature <= 100):
            raise ConfigError(f"temperature must be a number in [0, 100], got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ConfigError(f"max_length must be an integer >= 1, got {self.max_length!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not all(isinstance(t, str) and t for t in self.stop):
            raise ConfigError("each stop string must be non-empty text")
        for name in ("min_length", "no_repeat_ngram"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0 (0 = off), got {value!r}")
        r = self.repetition_penalty
        if not (isinstance(r, (int, float)) and math.isfinite(r) and 0 < r <= 100):
            raise ConfigError(f"repetition_penalty must be a number in (0, 100] (1 = off), got {r!r}")
        return self


class Sampler:
    """Generates text from a trained model and its tokenizer.

    ``ends``: whether the model was trained with <eos> (False for ``--eos none``): a model never
    trained to produce a token must never produce it, so <unk> is always banned from the draw and
    <eos> too when ``ends`` is False (``banned``); such a sample runs to max_length."""

    def __init__(self, model, tokenizer, start_state=None, *, ends: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.banned = np.zeros(model.config.vocab_size, np.bool_)
        if tokenizer is not None:
            self.banned[tokenizer.unk_id] = True
            self.banned[tokenizer.eos_id] = not ends
        c, p = model.config, model.params
        shape = (c.layers, c.states, c.hidden)
        # (L, S, H) state to start from (the checkpoint's "start_state", see lm/train_state.start_state)
        self.start_state = np.zeros(shape, model.dtype)
        if start_state is not None and np.shape(start_state) == shape:
            self.start_state[...] = start_state
        bad = [name for name, a in p.items() if not np.isfinite(a).all()]
        if bad:  # NaN/inf logits would make every distribution invalid: refuse up front
            raise CheckpointError(f"the model's weights contain NaN or infinite values ({bad[0]}); "
                                  "it cannot generate text: use an earlier checkpoint or retrain")
        dt = model.dtype
        row = c.row  # the cell's row of the cell table (kernels/cells.py)
        self.cell_id = row.id
        # Layer 0's input projection folded with the embedding: a (V, GH) row table.
        self.table0 = np.ascontiguousarray(p["encoder.weight"] @ p["rnn.weight_ih_l0"].T + p["rnn.bias_ih_l0"])
        L, GH, H = c.layers, c.gates * c.hidden, c.hidden
        self.W_ih = np.ascontiguousarray(
            np.stack([p[f"rnn.weight_ih_l{k}"] for k in range(1, L)]) if L > 1 else np.zeros((0, GH, H), dt))
        self.b_ih = np.ascontiguousarray(
            np.stack([p[f"rnn.bias_ih_l{k}"] for k in range(1, L)]) if L > 1 else np.zeros((0, GH), dt))
        rec = row.recurrent  # "hh", or Jordan's output-to-hidden "yh" (H, V): see kernels/jordan.py
        self.W_hh = np.ascontiguousarray(np.stack([p[f"rnn.weight_{rec}_l{k}"] for k in range(L)]))
        self.b_hh = np.ascontiguousarray(np.stack([p[f"rnn.bias_{rec}_l{k}"] for k in range(L)]))
        self.W_dec = np.ascontiguousarray(p["decoder.weight"])
        self.b_dec = np.ascontiguousarray(p["decoder.bias"])
        self._compiled = None  # the compiled loop, made on first use (that loads Numba)

    @classmethod
    def from_checkpoint(cls, checkpoint, label: str | None = None) -> "Sampler":
        """The checkpoint's model; a labelled one as given ``label`` (lm/labels.py), which it needs,
        as an unlabelled one refuses any."""
        from .labels import conditioned, label_index

        meta = checkpoint.metadata
        model, start = checkpoint.build_model(), meta.get("start_state")
        index = label_index(meta.get("labels", []), label)
        if index is not None:
            model, start = conditioned(model, index)
        return cls(model, checkpoint.tokenizer, start, ends=meta.get("eos") != "none")

    def banned_ids(self) -> list[int]:
        """The ids never drawn (beam search skips them too)."""
        return np.flatnonzero(self.banned).tolist()

    def _weights(self):
        return (self.cell_id, self.table0, self.W_ih, self.b_ih, self.W_hh, self.b_hh, self.W_dec, self.b_dec)

    def _prime_state(self, prime_ids: np.ndarray):
        """State after reading <eos> + prime[:-1], and the token to feed next."""
        c = self.model.config
        state = self.start_state.copy()
        eos = self.tokenizer.eos_id
        if prime_ids.size == 0:
            return state, eos
        context = np.concatenate([[eos], prime_ids[:-1]]).astype(np.int64)
        logits = np.empty(c.vocab_size, dtype=self.model.dtype)
        _, advance = self._loop(context.size)
        advance(state, context, logits)
        return state, int(prime_ids[-1])

    def compiled_loop(self):
        """The compiled loop bound to this model (kernels.generate.CompiledLoop): made once, it
        keeps whatever per-thread weight copies it needs for as long as this Sampler lives."""
        if self._compiled is None:
            from ..kernels.generate import CompiledLoop

            self._compiled = CompiledLoop(*self._weights())
        return self._compiled

    def _loop(self, tokens_before: int):
        """(generate, advance) bound to this model, for a call that ``tokens_before`` tokens of
        this sample (or prime) come before: the NumPy loop while that is under NUMPY_TOKENS (for
        the cells it runs), else the compiled one. Both take the arguments from ``state`` on."""
        from ..kernels import generate_numpy as numpy_loop

        if tokens_before < numpy_loop.NUMPY_TOKENS and numpy_loop.runs(self.cell_id):
            weights = self._weights()
            return partial(numpy_loop.generate, *weights), partial(numpy_loop.advance, *weights)
        loop = self.compiled_loop()
        return loop.generate, loop.advance

    def stream(self, prime: str = "", options: SampleOptions = SampleOptions()) -> Iterator[str]:
        """Yield the prime, then generated text piece by piece; ends at <eos> or max_length.

        The closing <eos> is not yielded. Unknown characters in the prime raise VocabError
        naming them. Thread limits (charlm.runtime.thread_limits) hold while it runs.
        """
        from ..runtime import thread_limits

        with thread_limits():
            yield from self._stream(prime, options)

    def _stream(self, prime: str, options: SampleOptions) -> Iterator[str]:
        from ..kernels.generate_numpy import NUMPY_TOKENS

        options = options.validate()
        tok = self.tokenizer
        prime_ids = tok.encode(prime, strict=True) if prime else np.zeros(0, dtype=np.int64)
        state, token = self._prime_state(prime_ids.astype(np.int64))
        rng = np.random.default_rng(options.seed)
        if prime:
            yield prime
        controls = (self.banned, options.min_length, float(options.repetition_penalty), options.no_repeat_ngram)
        word_level, at_break = tok.level == "word", not prime or prime.endswith("\n")
        stops = StopStrings(options.stop)
        history = np.empty(options.max_length, dtype=np.int64)  # the sample's ids: the controls read them
        done = 0
        while done < options.max_length:
            n_req = min(STREAM_CHUNK, options.max_length - done)
            if done < NUMPY_TOKENS:  # a chunk never straddles the switch to the compiled loop
                n_req = min(n_req, NUMPY_TOKENS - done)
            uniforms = rng.random(n_req)  # the same stream however it is chunked
            generate, _ = self._loop(done)
            n = generate(state, token, uniforms, float(options.temperature), int(options.top_k),
                         float(options.top_p), tok.eos_id, True, history, done, controls)
            ids = history[done:done + n]
            ended = n > 0 and ids[-1] == tok.eos_id
            body = ids[:-1] if ended else ids
            if body.size:
                text = tok.decode(body)
                if word_level:  # a space between words, none next to a line break
                    text = text if at_break or text.startswith("\n") else " " + text
                at_break = text.endswith("\n")
                text, stopped = stops.feed(text)
                if text:
                    yield text
                if stopped:
                    return
            if ended or n == 0:
                break
            token = int(ids[-1])
            done += n
        rest = stops.flush()
        if rest:
            yield rest


class StopStrings:
    """Cuts generated text before the first stop string, as it streams: text that could be the
    start of a stop string is held back until the next piece shows whether it is."""

    def __init__(self, stops):
        self.stops, self.pending = tuple(stops), ""
        self.hold = max((len(t) for t in self.stops), default=1) - 1

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to show now, whether a stop string was reached)."""
        self.pending += text
        found = [i for i in (self.pending.find(t) for t in self.stops) if i >= 0]
        if found:
            cut, self.pending = self.pending[:min(found)], ""
            return cut, True
        keep = len(self.pending) - self.hold
        shown, self.pending = self.pending[:max(keep, 0)], self.pending[max(keep, 0):]
        return shown, False

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


def generate_text(checkpoint, prime: str = "", label: str | None = None, **options) -> str:
    """One sample as a string (convenience for scripts and tests); ``label`` for a labelled model."""
    return "".join(Sampler.from_checkpoint(checkpoint, label).stream(prime, SampleOptions(**options)))
