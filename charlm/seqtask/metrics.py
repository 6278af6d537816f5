"""Scoring a model on a labelled split: loss, accuracy, macro-F1, per-class precision and recall,
the confusion matrix, and for taggers the share of whole sequences tagged right."""
from __future__ import annotations

import numpy as np

from .batching import Encoded, pad_inputs, sorted_batches
from .heads import log_softmax

EVAL_BATCH = 256


def predict_logits(model, encoded: Encoded, batch_size: int = EVAL_BATCH, comm=None) -> list:
    """Logits of every example in its original order: (C,) each (classify) or (n_i, C) (tag).
    ``comm`` of several ranks (distributed/ranks.py): each rank runs every size-th batch and every
    rank gets all the logits (a batch's logits do not depend on the rank that runs it)."""
    task = model.config.task
    result = [None] * len(encoded)
    batches = sorted_batches(encoded.lengths, batch_size)
    size, rank = (1, 0) if comm is None else (comm.size, comm.rank)
    mine = {}
    for k in range(rank, len(batches), size):
        ids, lengths = pad_inputs(encoded, batches[k])
        logits, _ = model.forward(ids, lengths)
        mine[k] = [logits[b] if task == "classify" else logits[:lengths[b], b] for b in range(len(lengths))]
    for part in (comm.allgather(mine) if size > 1 else [mine]):
        for k, rows in part.items():
            for i, row in zip(batches[k], rows):
                result[i] = row
    return result


def log_probs(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities in float64, whatever the logits' precision."""
    return log_softmax(logits.astype(np.float64))


def score(model, encoded: Encoded, labels: list[str], comm=None) -> dict:
    """Every metric of ``model`` on ``encoded`` (targets known), its batches shared out among
    ``comm``'s ranks if it has several. JSON-ready."""
    return score_logits(predict_logits(model, encoded, comm=comm), encoded, labels, model.config.task)


def score_logits(logits: list, encoded: Encoded, labels: list[str], task: str) -> dict:
    """Every metric of the ``logits`` (predict_logits') of ``encoded``'s examples."""
    if task == "classify":
        logp = log_probs(np.stack(logits))
        gold = np.asarray(encoded.targets, np.int64)
        pred = logp.argmax(axis=1)
        nll = -logp[np.arange(len(gold)), gold]
        seq_ok = None
    else:
        logp = [log_probs(z) for z in logits]
        gold = np.concatenate(encoded.targets)
        pred = np.concatenate([z.argmax(axis=1) for z in logp])
        nll = -np.concatenate([z[np.arange(len(t)), t] for z, t in zip(logp, encoded.targets)])
        seq_ok = np.mean([np.array_equal(z.argmax(axis=1), t) for z, t in zip(logp, encoded.targets)])
    result = {"task": task, "examples": len(encoded), "loss": float(nll.mean())}
    result |= classification_report(gold, pred, labels)
    if seq_ok is not None:
        result["tokens"] = int(gold.size)
        result["sequence_accuracy"] = float(seq_ok)
    return result


def classification_report(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 (unweighted mean over the labels present in gold or pred), per-label
    precision / recall / F1 / support, and the confusion matrix (rows gold, columns predicted)."""
    C = len(labels)
    confusion = np.bincount(gold * C + pred, minlength=C * C).reshape(C, C)
    tp = np.diag(confusion).astype(np.float64)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(C), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(C), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(C), where=precision + recall > 0)
    present = (support + predicted) > 0
    per_class = [{"label": labels[c], "precision": float(precision[c]), "recall": float(recall[c]),
                  "f1": float(f1[c]), "support": int(support[c])} for c in range(C)]
    return {"accuracy": float(tp.sum() / max(len(gold), 1)),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "per_class": per_class, "labels": list(labels), "confusion": confusion.tolist()}
