"""Perplexity, bits per character and per-token surprisal of a trained model on new text.

The text is tokenized with the model's own vocabulary and the sequence boundaries the model
was trained with, then every token but the first is scored exactly once, each predicted from
the text before it.

Scoring is one batched pass: the targets are cut into S contiguous streams run side by side
(S up to ``MAX_STREAMS``, each at least ``MIN_STREAM`` tokens long). A stream that does not
start the text starts from the state reached by reading the ``context`` tokens before it from
the zero state (those warm-up predictions are not counted), which stands in for the state a
single sequential pass would carry there: the difference is far below the noise of any
comparison (tests/test_evaluate.py bounds it on a trained model; docs/results.md gives the
figure on a real text), and the pass runs B = S wide instead of batch 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LN2 = math.log(2.0)


@dataclass
class EvalResult:
    loss_nats: float              # mean negative log-likelihood per token
    perplexity: float             # exp(loss_nats), per token
    bits_per_char: float          # total bits over the characters of the text (every level)
    tokens: int                   # tokens scored
    characters: int               # characters the scored tokens stand for (a line break counts one)
    oov: int                      # out-of-vocabulary tokens in the text (scored as <unk>)
    level: str
    surprisal: np.ndarray | None = field(default=None, repr=False)  # (tokens,) bits, if asked
    target_ids: np.ndarray | None = field(default=None, repr=False)
    dynamic_loss_nats: float | None = None  # dynamic evaluation (dynamic_eval.py), if asked

    def to_dict(self) -> dict:
        d = {"loss_nats": self.loss_nats, "bits_per_char": self.bits_per_char,
             "perplexity": self.perplexity, "tokens": self.tokens, "characters": self.characters,
             "oov": self.oov, "level": self.level}
        if self.dynamic_loss_nats is not None:
            d["dynamic_loss_nats"] = self.dynamic_loss_nats
            d["dynamic_bits_per_char"] = self.dynamic_loss_nats * self.tokens / self.characters / LN2
        return d


MAX_STREAMS = 64    # streams scored side by side
MIN_STREAM = 1024   # targets per stream at least (so the warm-up context costs <= 1/8 more work)
CONTEXT = 128       # tokens read before a stream's first target to build its starting state


def score_ids(model, ids: np.ndarray, *, window: int = 256, context: int = CONTEXT,
              streams: int | None = None) -> np.ndarray:
    """Per-token NLL in nats (len(ids) - 1,) float64 for ids[1:], in order, from one batched
    pass (see the module docstring). ``streams`` forces S (1 = the sequential pass)."""
    n = len(ids) - 1
    if n < 1:
        return np.zeros(0)
    spans = stream_spans(n, context=context, streams=streams)
    return score_spans(model, ids, spans, model.init_state(len(spans)), window=window)


def mean_nll(model, ids, world) -> float:
    """Mean per-token NLL of ``ids`` as one process computes it. In a world of several ranks
    (distributed/), each scores a block of the evaluation's streams and every rank gathers all
    the NLLs in order."""
    if world.size == 1:
        return float(score_ids(model, ids).mean())
    from ..distributed.streams import block

    spans = stream_spans(len(ids) - 1)
    blocks = [block(len(spans), r, world.size) for r in range(world.size)]
    counts = [sum(end - first for _, first, end in spans[a:b]) for a, b in blocks]
    a, b = blocks[world.rank]
    mine = spans[a:b]
    local = score_spans(model, ids, mine, model.init_state(len(mine))) if mine else np.zeros(0)
    return float(world.gather_floats(local, counts).mean())


def stream_spans(n: int, *, context: int = CONTEXT, streams: int | None = None) -> list[tuple[int, int, int]]:
    """The (begin, first, end) spans ``score_ids`` scores n >= 1 targets with (see score_spans)."""
    S = min(streams or max(1, min(MAX_STREAMS, n // MIN_STREAM)), n)
    cuts = [s * n // S for s in range(S + 1)]
    return [(max(0, cuts[s] - context), cuts[s], cuts[s + 1]) for s in range(S)]


def score_spans(model, ids, spans, state, *, window: int = 256) -> np.ndarray:
    """Score streams side by side: stream s = spans[s] = (begin, first, end) reads ids[begin:end]
    from state[:, :, s] and predicts ids[begin + 1:end + 1]; the NLLs of the targets
    ids[first + 1:end + 1] are returned, streams concatenated in order (float64, nats).
    state (L, S, len(spans), H) is not modified."""
    S = len(spans)
    lengths = [end - begin for begin, _, end in spans]
    T = max(lengths)
    x = np.zeros((T, S), np.int64)    # streams shorter than T are padded at the end: the padding
    y = np.zeros((T, S), np.int64)    # comes after every counted target, so it changes nothing
    for s, (begin, _, end) in enumerate(spans):
        chunk = np.asarray(ids[begin:end + 1], np.int64)
        x[:end - begin, s] = chunk[:-1]
        y[:end - begin, s] = chunk[1:]
    nll = np.empty((T, S), np.float64)
    for t0 in range(0, T, window):
        part, state = model.token_nll(x[t0:t0 + window], y[t0:t0 + window], state)
        nll[t0:t0 + window] = part.reshape(-1, S)
    return np.concatenate([nll[first - begin:end - begin, s] for s, (begin, first, end) in enumerate(spans)])


def state_after(model, ids: np.ndarray, seq_len: int = 256) -> np.ndarray:
    """(L, S, 1, H) state after reading ids[:-1] from the zero state, in windows as score_ids does."""
    from ..data.batches import sequential_windows

    state = model.init_state(1)
    for x, y in sequential_windows(ids, seq_len):
        _, state = model.token_nll(x, y, state)
    return state


def evaluate(checkpoint, paths, *, surprisal: bool = False, errors: str = "strict",
             dynamic=None) -> EvalResult:
    """Score the files ``paths`` with ``checkpoint`` (a loaded ``Checkpoint``); with ``dynamic``
    (a ``DynamicOptions``) also under dynamic evaluation, reported separately."""
    from ..data.corpus import build_corpus
    from ..errors import CorpusError
    from ..runtime import thread_limits

    train_cfg = checkpoint.metadata.get("train_config") or {}
    eos = checkpoint.metadata.get("eos") or train_cfg.get("eos", "auto")
    labelled = checkpoint.config.labels > 0
    if labelled:  # text<TAB>label lines, each scored from its own label (lm/labels.py)
        from ..data.labelled import build_labelled_corpus
        from ..errors import ConfigError

        if dynamic is not None:
            raise ConfigError("dynamic evaluation does not take labelled lines")
        corpus = build_labelled_corpus(list(paths), val_fraction=0.0, tokenizer=checkpoint.tokenizer,
                                       names=checkpoint.metadata["labels"])
    else:
        corpus = build_corpus(list(paths), level=checkpoint.tokenizer.level, eos=eos, val_fraction=0.0,
                              tokenizer=checkpoint.tokenizer, errors=errors)
    ids = corpus.train
    if ids.size < 2:
        raise CorpusError("nothing to evaluate: the text has no tokens after tokenization")
    model = checkpoint.build_model()
    with thread_limits():  # all cores for the kernels, one per BLAS call; undone on return
        nll = line_nll(model, np.asarray(ids), corpus.labels.train) if labelled else score_ids(model, np.asarray(ids))
        dynamic_loss = None
        if dynamic is not None:
            from .dynamic_eval import dynamic_score

            total, count = dynamic_score(_without_dropout(checkpoint), np.asarray(ids), dynamic)
            dynamic_loss = total / count
    loss = float(nll.mean())
    level = checkpoint.tokenizer.level
    characters = (int(nll.size) if level == "char" and not labelled   # one token per character: no second read
                  else count_characters(paths, corpus.eos, level, errors, labelled=labelled))
    return EvalResult(
        loss_nats=loss, perplexity=math.exp(min(loss, 700.0)),
        bits_per_char=float(nll.sum()) / characters / LN2,
        tokens=int(nll.size), characters=characters, oov=int(corpus.stats().get("unknown", 0)), level=level,
        surprisal=nll / LN2 if surprisal else None,
        target_ids=np.asarray(ids[1:]) if surprisal else None, dynamic_loss_nats=dynamic_loss)


def count_characters(paths, eos_mode: str, level: str, errors: str = "strict", labelled: bool = False) -> int:
    """The characters of the text the tokens stand for: every sequence's characters and one for
    the boundary after it (a character model scores exactly this many tokens). Dividing a word
    model's total bits by it gives the bits per character that compares levels honestly. Of
    labelled lines only the texts count (their labels are given, not predicted)."""
    from ..data.sequences import file_segments

    if labelled:
        from ..data.labelled import read_labelled

        return max(1, sum(len(text) + 1 for path in paths for text, _ in read_labelled(path)))
    return max(1, sum(sum(map(len, seqs)) + len(seqs) - (not closed)   # an unclosed last sequence
                      for path in paths                                   # continues in the next segment
                      for seqs, closed in file_segments(path, eos_mode, errors, level)))


def _without_dropout(checkpoint):
    """The checkpoint's model with dropout off: dynamic evaluation takes gradients of the
    deterministic network it scores with."""
    from ..config import replace
    from .model import Model

    model = Model(replace(checkpoint.config, dropout=0.0, weight_dropout=0.0), dtype=checkpoint.dtype)
    model.load_state_dict(checkpoint.tensors)
    return model


def line_nll(model, ids, labels) -> np.ndarray:
    """Per-token NLL in nats of labelled lines (ids as data/labelled.py lays them out, ``labels``
    each line's label id), line after line, each line read from its own label's start: the lines
    of one label side by side through that label's plain model (``conditioned``)."""
    from ..data.labelled import line_bounds
    from .labels import BATCH, conditioned

    starts, ends = line_bounds(ids)
    labels = np.asarray(labels, np.int64)
    out = [np.zeros(0)] * len(starts)
    for label in np.unique(labels):
        plain, start = conditioned(model, int(label))
        mine = np.flatnonzero(labels == label)
        for b in range(0, len(mine), BATCH):
            part = mine[b:b + BATCH]
            spans = [(int(starts[k]), int(starts[k]), int(ends[k])) for k in part]
            state = np.ascontiguousarray(np.repeat(start[:, :, None, :], len(part), axis=2))
            nll = score_spans(plain, ids, spans, state)
            for k, piece in zip(part, np.split(nll, np.cumsum(ends[part] - starts[part])[:-1])):
                out[k] = piece
    return np.concatenate(out) if out else np.zeros(0)
