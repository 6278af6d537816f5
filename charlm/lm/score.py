"""Scoring lines one by one: each line's log-probability under a model, many lines per forward pass.

Each line is one sequence, as a model trained with ``--eos line`` saw it: from the zero state the
model reads <eos>, then predicts each token of the line and the closing <eos> (a model trained
without <eos> is not asked for the closing one). That is exactly what ``charlm eval`` computes on a
text holding that line alone, so the lines' total log-probability is minus the sum of eval's
per-token losses over the lines taken as separate texts.

Lines stream in and scores stream out in input order: up to ``BUFFER`` lines are read, sorted by
length into batches of ``BATCH`` (so that little of a batch is padding), scored side by side by
evaluate.score_spans (the streams of one pass are independent rows), and given back in order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

BATCH = 256     # lines per forward pass
BUFFER = 4096   # lines read ahead (sorted by length into batches)


@dataclass(frozen=True)
class LineScore:
    line: int                   # line number, from 1
    log_prob: float = 0.0       # natural-log probability of the line's tokens (and its closing <eos>)
    tokens: int = 0             # tokens predicted
    oov: int = 0                # out-of-vocabulary tokens of the line (scored as <unk>)
    error: str | None = None    # why the line was not scored (invalid UTF-8)

    @property
    def perplexity(self) -> float | None:
        return math.exp(min(-self.log_prob / self.tokens, 700.0)) if self.tokens else None

    def to_dict(self) -> dict:
        if self.error:
            return {"line": self.line, "error": self.error}
        return {"line": self.line, "log_prob": self.log_prob, "tokens": self.tokens,
                "perplexity": self.perplexity, "oov": self.oov}
class LineScorer:
    """Scores lines with one checkpoint's model (the model is built once). A labelled model's lines
    are ``text<TAB>label``, each scored from its label (lm/labels.py); a line without a tab or with
    a label the model does not know is marked, as an undecodable one is."""

    def __init__(self, checkpoint):
        self.model = checkpoint.build_model()
        self.tokenizer = checkpoint.tokenizer
        self.ends = checkpoint.metadata.get("eos") != "none"
        self.labels = checkpoint.metadata.get("labels", [])
        self._conditioned = {}

    def ids(self, text: str) -> np.ndarray:
        """<eos>, the line's ids, and <eos> again when the model was trained to end sequences."""
        eos = [self.tokenizer.eos_id]
        return np.concatenate([eos, self.tokenizer.encode(text, dtype=np.int64), eos if self.ends else []])

    def score_batch(self, seqs: list[np.ndarray], label: int | None = None) -> np.ndarray:
        """(len(seqs),) total NLL in nats of each sequence's tokens after its first, in one pass
        (from ``label``'s start, for a labelled model)."""
        from .evaluate import score_spans

        model, state = self.model, self.model.init_state(len(seqs))
        if label is not None:
            model, start = self._for_label(label)
            state = np.ascontiguousarray(np.repeat(start[:, :, None, :], len(seqs), axis=2))
        lengths = np.array([len(s) for s in seqs])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        spans = [(int(b), int(b), int(b + n - 1)) for b, n in zip(starts, lengths)]
        nll = score_spans(model, np.concatenate(seqs), spans, state)
        return np.add.reduceat(nll, np.concatenate([[0], np.cumsum(lengths - 1)[:-1]]))

    def _for_label(self, label: int):
        if label not in self._conditioned:
            from .labels import conditioned

            self._conditioned[label] = conditioned(self.model, label)
        return self._conditioned[label]

    def split_label(self, text: str) -> tuple[str, int | None, str | None]:
        """(text, label id or None, problem or None) of one input line."""
        if not self.labels:
            return text, None, None
        if "\t" not in text:
            return text, None, "expected text<TAB>label, found no tab"
        text, label = text.rsplit("\t", 1)
        label = label.strip()
        if label not in self.labels:
            return text, None, f"unknown label {label[:60]!r}"
        return text, self.labels.index(label), None

    def scores(self, lines: Iterable[tuple[int, str | None, str | None]]) -> Iterator[LineScore]:
        """A LineScore per (number, text, problem) of ``lines`` (text_files.iter_lines), in order."""
        from ..runtime import thread_limits

        with thread_limits():
            buffer = []
            for number, text, problem in lines:
                if problem is None:
                    text, label, problem = self.split_label(text)
                else:
                    label = None
                buffer.append((number, text, problem, label))
                if len(buffer) == BUFFER:
                    yield from self._scored(buffer)
                    buffer = []
            yield from self._scored(buffer)

    def _scored(self, items) -> list[LineScore]:
        good = [(k, self.ids(text), label) for k, (_, text, problem, label) in enumerate(items) if problem is None]
        nll = np.zeros(len(items))
        scored = [kv for kv in good if len(kv[1]) > 1]   # <eos> alone predicts nothing: log-probability 0
        for label in sorted({label for _, _, label in scored}, key=lambda v: -1 if v is None else v):
            order = sorted((kv for kv in scored if kv[2] == label), key=lambda kv: len(kv[1]))
            for b in range(0, len(order), BATCH):
                part = order[b:b + BATCH]
                seqs = [s for _, s, _ in part]
                nll[[k for k, _, _ in part]] = self.score_batch(seqs) if label is None else self.score_batch(seqs, label)
        lengths = {k: len(s) for k, s, _ in good}
        return [LineScore(number, error=problem) if problem is not None else
                LineScore(number, 0.0 - float(nll[k]), lengths[k] - 1, self.tokenizer.count_unknown(text))
                for k, (number, text, problem, _) in enumerate(items)]
