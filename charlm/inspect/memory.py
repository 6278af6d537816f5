"""Long-range memory: an experiment that trains several cells under one budget on text whose next
character depends on one seen exactly d characters earlier, and scores that character against d.

The text (a bracket, d − 2 filler letters, a cue, the matching closer) is the built-in ``memory``
corpus, made in charlm.data.builtin_corpora.memory_task; its names are re-exported here for the
experiment's readers.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import COMPARED_CELLS
from ..data.builtin_corpora.memory_task import (
    CLOSERS,
    CUE,
    DISTANCES,
    FILLER,
    OPENERS,
    memory_lines,
    memory_text,
)

__all__ = ["CLOSERS", "CUE", "DISTANCES", "FILLER", "OPENERS", "memory_lines", "memory_text",
           "dependency_positions", "dependent_accuracy", "MemoryResult", "run_memory_experiment"]


def dependency_positions(ids: np.ndarray, tokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the dependent characters are in an id stream: (positions, distances, expected ids).
    ids[positions[i]] must be predicted from ids[:positions[i]]; its opener is distances[i] back."""
    ids = np.asarray(ids)
    cue = tokenizer.encode(CUE)[0]
    opener_ids = tokenizer.encode(OPENERS)
    closer_ids = tokenizer.encode(CLOSERS)
    is_opener = np.isin(ids, opener_ids)
    positions, distances, expected = [], [], []
    last_open = -1
    for i in range(ids.size):
        if is_opener[i]:
            last_open = i
        elif ids[i] == cue and i + 1 < ids.size and last_open >= 0:
            k = int(np.flatnonzero(opener_ids == ids[last_open])[0])
            positions.append(i + 1)
            distances.append(i + 1 - last_open)
            expected.append(closer_ids[k])
    return np.array(positions, np.int64), np.array(distances, np.int64), np.array(expected, np.int64)


def dependent_accuracy(model, ids, positions, expected, seq_len: int = 256):
    """(correct (P,) bool: argmax at each position is the expected id, prob (P,) of the expected id),
    reading ``ids`` once in order with the state carried, as in generation."""
    from ..data.batches import sequential_windows

    state = model.init_state(1)
    rows = []
    for x, _ in sequential_windows(ids, seq_len):
        logits, state, _ = model.forward(x, state)
        rows.append(logits)
    z = np.concatenate(rows).astype(np.float64)[np.asarray(positions) - 1]   # row r predicts ids[r + 1]
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    expected = np.asarray(expected)
    return z.argmax(axis=1) == expected, p[np.arange(len(expected)), expected]


@dataclass
class MemoryResult:
    cells: list                  # cell names, one row each
    distances: np.ndarray        # (D,)
    accuracy: np.ndarray         # (C, D) fraction of dependent characters predicted (argmax) right
    prob: np.ndarray             # (C, D) mean probability given to the right closer
    loss: np.ndarray             # (C, D) mean training loss of the model that scored column d, nats
    parameters: list             # (C,) parameter counts
    seconds: np.ndarray          # (C, D) training time (a mixed run's time is spread over its columns)
    chance: float = 1.0 / len(OPENERS)
    settings: dict = field(default_factory=dict)

    def table(self) -> list[list]:
        """Rows [cell, params, acc@d1, acc@d2, ...] for rendering."""
        return [[cell, self.parameters[i], *self.accuracy[i].tolist()] for i, cell in enumerate(self.cells)]


def run_memory_experiment(cells=COMPARED_CELLS, distances=DISTANCES, *, hidden: int = 64,
                          embed: int = 16, steps: int = 800, seq_len: int = 96, batch_size: int = 32,
                          lr: float = 3e-3, train_lines: int = 20_000, eval_lines: int = 100,
                          per_distance: bool = False, seed: int = 0, threads: int = 0, run_root=None,
                          progress=None) -> MemoryResult:
    """Train a fresh one-layer model of every cell under the same budget (steps, batch, window,
    hidden size, learning rate, seed) on memory text, then score the dependent characters of
    ``eval_lines`` held-out lines per distance.

    By default one model per cell learns lines of all ``distances`` mixed: the accuracy against d
    then measures how far the memory it learned reaches (the short lines teach the trick; the
    long ones test whether the state holds the opener through d − 2 characters of input).
    ``per_distance`` trains a separate model for every d instead (C × D runs): that measures whether
    a dependency whose only gradient signal crosses d steps can be learned at all in the budget.
    run_root: directory for the runs (<root>/<cell> or <root>/d<d>/<cell>); temporary when None.
    progress: optional callable(cell, d or None, event) receiving each training event.
    """
    from ..config import ModelConfig, TrainConfig
    from ..data.corpus import build_corpus
    from ..fsutil import write_new_text
    from ..lm.train import EvalEvent, Trainer
    from ..runs.directory import claim_new_run
    from ..runtime import thread_limits

    distances = np.array(sorted(set(int(d) for d in distances)))
    tmp = tempfile.TemporaryDirectory(prefix="charlm-memory-") if run_root is None else None
    root = Path(tmp.name if tmp else run_root)
    C, D = len(cells), len(distances)
    acc, prob = np.zeros((C, D)), np.zeros((C, D))
    loss, seconds, params = np.zeros((C, D)), np.zeros((C, D)), [0] * C
    tcfg = TrainConfig(eos="line", val_fraction=0.0, steps=steps, seq_len=seq_len, batch_size=batch_size,
                       lr=lr, eval_every=steps, seed=seed, threads=threads)
    groups = [(f"d{d}", [j]) for j, d in enumerate(distances)] if per_distance else [("all", list(range(D)))]
    try:
        for name, cols in groups:
            run_dir = root / name if per_distance else root
            run_dir.mkdir(parents=True, exist_ok=True)
            train_path, eval_path = run_dir / "train.txt", run_dir / "eval.txt"
            # created, never overwritten: run_root may be a directory of the user's
            write_new_text(train_path, memory_text(train_lines, tuple(distances[cols]), seed))
            write_new_text(eval_path, "".join(line + "\n" for line in
                                              memory_lines(np.repeat(distances[cols], eval_lines), seed + 10_000)))
            corpus = build_corpus([train_path], eos="line", val_fraction=0.0)
            ids = build_corpus([eval_path], eos="line", val_fraction=0.0, tokenizer=corpus.tokenizer).train
            positions, dists, expected = dependency_positions(ids, corpus.tokenizer)
            for i, cell in enumerate(cells):
                lock = claim_new_run(run_dir / cell)  # noqa: F841 (held while this model trains)
                trainer = Trainer(corpus, ModelConfig(cell=cell, embed=embed, hidden=hidden, layers=1), tcfg,
                                  run_dir / cell)
                t0 = time.perf_counter()
                for event in trainer.events():
                    if isinstance(event, EvalEvent):
                        loss[i, cols] = event.train_loss
                    if progress is not None:
                        progress(cell, int(distances[cols[0]]) if per_distance else None, event)
                seconds[i, cols] = (time.perf_counter() - t0) / len(cols)
                params[i] = trainer.model.num_parameters
                with thread_limits(threads):  # as the training had them, undone after scoring
                    correct, p = dependent_accuracy(trainer.model, ids, positions, expected)
                for j in cols:
                    sel = dists == distances[j]
                    acc[i, j], prob[i, j] = correct[sel].mean(), p[sel].mean()
        settings = dict(hidden=hidden, embed=embed, steps=steps, seq_len=seq_len, batch_size=batch_size,
                        lr=lr, train_lines=train_lines, eval_lines=eval_lines, per_distance=per_distance,
                        seed=seed)
        return MemoryResult(list(cells), distances, acc, prob, loss, params, seconds, settings=settings)
    finally:
        if tmp is not None:
            tmp.cleanup()
