"""Gradient flow through time, compared across cells and read back from training runs.

The measurement itself (lag curves ||∂L_t/∂h_{t−k}||, spectra of the recurrent matrices) lives in
charlm.lm.gradflow, which training also uses; this module adds fresh models of other cells to compare
with, the history a run recorded, and what ``charlm inspect gradients`` shows.
"""
from __future__ import annotations

import numpy as np

from ..config import PER_LAYER_CELLS
from ..lm.gradflow import (GradientReport, LagCurves, Spectrum, hidden_state_grads, lag_curves,  # noqa: F401
                           measure, recurrent_spectra, tracking_record)  # (the measurement, read here too)


def comparison_models(config, cells=PER_LAYER_CELLS, seed: int = 0, dtype=np.float32) -> dict:
    """Freshly initialised models of every cell in ``cells`` with the size of ``config``
    (vocabulary, embedding, hidden, layers), for ``--compare``."""
    from ..config import replace
    from ..lm.model import Model

    return {cell: Model(replace(config, cell=cell, dropout=0.0), dtype).init_weights(np.random.default_rng(seed))
            for cell in cells}


def compare(config, ids, cells=PER_LAYER_CELLS, *, seed: int = 0, **options) -> list[GradientReport]:
    """``measure`` on fresh models of each cell, all on the same windows of ``ids``."""
    return [measure(m, ids, label=f"{cell} (fresh)", rng=np.random.default_rng(seed), **options)
            for cell, m in comparison_models(config, cells, seed).items()]


def gradient_history(records: list[dict]) -> list[tuple[int, LagCurves]]:
    """(step, LagCurves) for every "gradients" record of a run's metrics (``read_metrics``)."""
    return [(int(r["step"]), LagCurves.from_dict(r)) for r in records if r.get("kind") == "gradients"]


def inspect_gradients(checkpoints, paths, *, compare_cells=(), model_config=None, max_lag: int = 50,
                      samples: int = 64, warmup: int = 32, seed: int = 0, max_tokens: int = 1_000_000,
                      top: int = 5) -> list[GradientReport]:
    """What ``charlm inspect gradients`` shows: a report for each checkpoint's model on ``paths``
    (default: the first one's training files), then for fresh models of each of ``compare_cells``
    with the first one's size (or ``model_config``'s, with a character vocabulary fitted on
    ``paths``, when there is no checkpoint). Every model is measured on the same windows."""
    from ..config import replace
    from ..data.corpus import build_corpus
    from ..errors import ConfigError
    from .text import encode_for, training_sources

    options = dict(max_lag=max_lag, samples=samples, warmup=warmup, top=top)
    reports = []
    checkpoints = list(checkpoints)
    if checkpoints:
        paths = list(paths) or training_sources(checkpoints[0])
        if not paths:
            raise ConfigError("the run's training files are gone: give a text file to measure on")
        for checkpoint in checkpoints:
            ids, _ = encode_for(checkpoint, paths, max_tokens=max_tokens)
            run = checkpoint.path.parent.name or "trained"
            reports.append(measure(checkpoint.build_model(), ids, label=f"{checkpoint.config.cell} ({run})",
                                   rng=np.random.default_rng(seed), **options))
        config = checkpoints[0].config
    else:
        if not paths:
            raise ConfigError("give a text file to measure on")
        corpus = build_corpus(list(paths), val_fraction=0.0)
        ids = np.asarray(corpus.train[:max_tokens])
        config = replace(model_config, vocab_size=len(corpus.tokenizer)).validate()
    if compare_cells:
        reports += compare(config, ids, tuple(compare_cells), seed=seed, **options)
    return reports
