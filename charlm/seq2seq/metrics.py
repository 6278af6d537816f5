"""Scoring transductions: the dev loss, and the word and token error rates of decoded outputs
against every reference of their source.

WER is the share of sources whose output equals none of their references. The token error rate
(PER when the tokens are phonemes) is the sum, over sources, of the edit distance to the closest
reference (the first of them on a tie) over the sum of those references' lengths.
"""
from __future__ import annotations

import numpy as np

EVAL_BATCH = 256   # sources per decoding batch: fewer, fuller calls (greedy dev scoring a fifth faster than 64)


def edit_distance(a, b) -> int:
    """Levenshtein distance between two token sequences (unit insertions, deletions, substitutions)."""
    a, b = list(a), list(b)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def error_rates(predictions: list, references: list[list]) -> dict:
    """{"wer", "per", "sources", "errors", "edits", "reference_tokens"} of ``predictions`` (one token
    sequence per source) against ``references`` (each source's list of token sequences)."""
    errors = edits = length = 0
    for pred, refs in zip(predictions, references):
        pred = tuple(pred)
        errors += all(pred != tuple(r) for r in refs)
        distances = [edit_distance(pred, r) for r in refs]
        best = int(np.argmin(distances))
        edits += distances[best]
        length += len(refs[best])
    n = len(predictions)
    return {"wer": errors / n if n else 0.0, "per": edits / length if length else 0.0, "sources": n,
            "errors": errors, "edits": edits, "reference_tokens": length}


def dev_loss(model, encoded, bos: int, eos: int) -> float:
    """Mean cross-entropy per target token (<eos> included), teacher-forced, no dropout."""
    from ..seqtask.heads import log_softmax
    from .data import batch

    total, count = 0.0, 0
    order = np.argsort(encoded.lengths, kind="stable")
    for b0 in range(0, len(order), EVAL_BATCH):
        src, sl, tgt_in, tgt_out, tl = batch(encoded, order[b0:b0 + EVAL_BATCH], bos, eos)
        logits, _, _ = model.forward(src, sl, tgt_in, tl)
        valid = np.arange(tgt_in.shape[0])[:, None] < tl[None, :]
        lp = log_softmax(logits[valid].astype(np.float64))
        total -= float(lp[np.arange(len(lp)), tgt_out[valid]].sum())
        count += int(valid.sum())
    return total / max(count, 1)


def greedy_outputs(model, sources: list, bos: int, eos: int, max_length: int, banned=()) -> list[list[int]]:
    """Each source's greedy output ids (never a ``banned`` id), decoded in batches of similar length."""
    from .data import pad_sources

    outputs: list = [None] * len(sources)
    order = np.argsort([len(s) for s in sources], kind="stable")
    for b0 in range(0, len(order), EVAL_BATCH):
        rows = order[b0:b0 + EVAL_BATCH]
        ids, lengths = pad_sources([sources[i] for i in rows])
        for i, out in zip(rows.tolist(), model.greedy(ids, lengths, bos, eos, max_length, banned)):
            outputs[i] = out
    return outputs
