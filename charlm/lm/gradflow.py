"""Gradient flow through time: lag curves ||∂L_t/∂h_{t−k}|| and the spectra of the recurrent matrices.

Back-propagating the loss at step t to the hidden state k steps earlier multiplies k Jacobians
∂h_s/∂h_{s−1} = diag(f'(·)) W_hh. In a vanilla (Elman) RNN their product shrinks or grows
geometrically with k, depending on whether the largest singular value of W_hh times the largest
tanh' is below or above 1 (Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013,
https://arxiv.org/abs/1211.5063). The gated cells add paths (the LSTM cell state, the GRU's
z ⊙ h_{t−1}) along which the product stays near 1 when the gates say so.

How it is measured (``lag_curves``): B windows at random places of a text, each warmed up for
``warmup`` tokens from a zero state, then run for K+1 = max_lag+1 tokens. The loss is the NLL of
the last token of each window only. One backward pass through the model gives, for every layer l
and step s of the window, the total gradient ∂L_t/∂h^l_s (the path up through the layers above at
step s included); lag k = t − s. The curve is the mean over windows of its Euclidean norm.

Per cell, the total gradient wrt h_s is the part from above at s plus what step s+1 sends back;
``Model.state_grads`` has each cell rebuild it from its own backward (``<cell>_state_grads`` in
its kernel file). tests/test_inspect.py checks these against a brute-force reference built only
from the kernels' ds0, so a change of cache layout in a kernel cannot silently break them.

Training records these measurements (``tracking_record``) when asked to, so this module sits below
train.py; charlm.inspect.gradients builds the comparisons and reports on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LagCurves:
    """Mean ||∂L_t/∂h^l_{t−k}|| against the lag k, per layer."""

    label: str                 # what was measured, e.g. "lstm (runs/shakespeare)" or "rnn (fresh)"
    cell: str
    lags: np.ndarray           # (K+1,) 0, 1, ..., max_lag
    norms: np.ndarray          # (L, K+1) mean over windows of the gradient norm
    samples: int               # windows averaged

    def ratio(self, lag: int) -> np.ndarray:
        """(L,) norms at ``lag`` relative to lag 0: < 1 vanishing, > 1 growing."""
        return self.norms[:, lag] / np.maximum(self.norms[:, 0], 1e-300)

    def rate(self) -> np.ndarray:
        """(L,) geometric factor per step from a least-squares line through log norms (lags >= 1)."""
        k = self.lags[1:].astype(np.float64)
        if k.size < 2:
            return np.full(self.norms.shape[0], np.nan)
        logs = np.log(np.maximum(self.norms[:, 1:], 1e-300))
        slope = np.polyfit(k, logs.T, 1)[0]
        return np.exp(np.atleast_1d(slope))

    def to_dict(self) -> dict:
        return {"label": self.label, "cell": self.cell, "lags": self.lags.tolist(),
                "norms": self.norms.tolist(), "samples": self.samples}

    @classmethod
    def from_dict(cls, d: dict) -> "LagCurves":
        return cls(d.get("label", ""), d["cell"], np.asarray(d["lags"]), np.asarray(d["norms"], np.float64),
                   int(d.get("samples", 0)))


@dataclass
class Spectrum:
    """Largest singular values of one recurrent matrix (or gate block of it)."""

    layer: int
    block: str                 # gate name (i, f, g, o / r, z, n), "all", or "yh·dec" for Jordan
    shape: tuple
    values: np.ndarray         # descending


@dataclass
class GradientReport:
    curves: LagCurves
    spectra: list = field(default_factory=list)   # [Spectrum]

    def to_record(self, step: int) -> dict:
        """A metrics.jsonl record (kind "gradients"), as ``Trainer`` writes with track_gradients."""
        return {"kind": "gradients", "step": step, **self.curves.to_dict(),
                "spectra": [{"layer": s.layer, "block": s.block, "values": s.values.tolist()}
                            for s in self.spectra]}


# ---------------------------------------------------------------------------------------------
# gradients wrt every hidden state of a window


def hidden_state_grads(model, x, y_last, state) -> np.ndarray:
    """∂L/∂h^l_s for L = sum over streams of the NLL of the last step only.

    x (T, B) ids, y_last (B,) targets of the last step, state (L, S, B, H) at the window start.
    Returns (L, T, B, H) float64: [l, s] is the gradient wrt layer l's state after step s.
    """
    from ..kernels.loss import cross_entropy_grad

    T, B = x.shape
    logits, _, cache = model.forward(x, state)
    dlog = np.zeros_like(logits)
    last = np.ascontiguousarray(logits[(T - 1) * B:])
    cross_entropy_grad(last, np.ascontiguousarray(y_last, dtype=np.int64), 1.0)  # p - onehot
    dlog[(T - 1) * B:] = last
    return model.state_grads(dlog, cache)


# ---------------------------------------------------------------------------------------------
# lag curves and spectra


def lag_curves(model, ids, *, max_lag: int = 50, samples: int = 64, warmup: int = 32, batch: int = 32,
               rng: np.random.Generator | None = None, label: str = "") -> LagCurves:
    """Mean ||∂L_t/∂h^l_{t−k}|| for k = 0..max_lag over ``samples`` random windows of ``ids``.

    ``warmup`` tokens before each window set a typical state (0 = start from zeros)."""
    from ..errors import ConfigError

    ids = np.asarray(ids)
    T = max_lag + 1
    span = warmup + T + 1
    if max_lag < 1 or samples < 1 or warmup < 0:
        raise ConfigError("max_lag and samples must be >= 1 and warmup >= 0")
    if ids.size < span:
        raise ConfigError(f"the text has {ids.size} tokens; lag curves up to {max_lag} with warm-up "
                          f"{warmup} need at least {span}")
    rng = rng if rng is not None else np.random.default_rng(0)
    c = model.config
    total = np.zeros((c.layers, T))
    done = 0
    while done < samples:
        B = min(batch, samples - done)
        starts = rng.integers(0, ids.size - span + 1, B)
        seqs = np.stack([ids[s:s + span] for s in starts], axis=1).astype(np.int64)  # (span, B)
        state = model.init_state(B)
        if warmup:
            _, state, _ = model.forward(seqs[:warmup], state)
        g = hidden_state_grads(model, seqs[warmup:warmup + T], seqs[warmup + T], state)
        total += np.linalg.norm(g, axis=3).sum(axis=2)            # (L, T)
        done += B
    norms = (total / done)[:, ::-1].copy()                          # step s = T-1-k  ->  lag k
    return LagCurves(label or c.cell, c.cell, np.arange(T), norms, done)


def recurrent_spectra(model, top: int = 5) -> list[Spectrum]:
    """Largest singular values of every matrix that carries a layer's past into its next step
    (``Model.recurrent_matrices``): each W_hh whole and per gate block (the H×H matrix a gate
    applies to h_{t−1}); for a Jordan network W_yh·W_dec (H×H): h_{t−1} → output → h_t."""
    return [Spectrum(layer, block, W.shape, _svals(np.asarray(W, np.float64), top))
            for layer, block, W in model.recurrent_matrices()]


def _svals(W, top):
    return np.linalg.svd(W, compute_uv=False)[:top]


def measure(model, ids, *, label: str = "", top: int = 5, **options) -> GradientReport:
    """Lag curves and spectra of one model (options as for ``lag_curves``)."""
    return GradientReport(lag_curves(model, ids, label=label, **options), recurrent_spectra(model, top))


def tracking_record(model, ids, step: int, seed: int, *, max_lag: int = 32, samples: int = 32) -> dict | None:
    """The metrics record ``Trainer`` appends at each evaluation when ``track_gradients`` is on.
    Uses its own generator (seeded by seed and step) so that training's random stream, and with
    it exact resume, is untouched. None when the text is too short to measure."""
    ids = np.asarray(ids)
    max_lag = min(max_lag, ids.size - 3)
    if max_lag < 1:
        return None
    rng = np.random.default_rng([seed, step])
    warmup = min(16, ids.size - max_lag - 2)
    report = measure(model, ids, label=model.config.cell, rng=rng, max_lag=max_lag,
                     samples=samples, warmup=warmup)
    return report.to_record(step)
