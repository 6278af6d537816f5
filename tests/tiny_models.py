"""Tiny models and batches shared by the whole-model tests (test_model, test_jordan)."""
import numpy as np

from charlm.config import ModelConfig
from charlm.lm.model import Model


def make_model(cell, layers=2, V=5, E=3, H=3, dropout=0.0, tie=False, dtype=np.float64, seed=0,
               weight_dropout=0.0):
    cfg = ModelConfig(cell=cell, vocab_size=V, embed=E, hidden=H, layers=layers, dropout=dropout,
                      tie_weights=tie, weight_dropout=weight_dropout)
    model = Model(cfg, dtype=dtype).init_weights(np.random.default_rng(seed))
    # make biases non-trivial so their gradients are exercised
    model.flat += 0.1 * np.random.default_rng(seed + 1).standard_normal(model.size)
    return model


def batch(V, T=4, B=2, seed=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
