"""Dynamic evaluation (Krause et al. 2018, https://arxiv.org/abs/1709.07432): score a window of
the text, then take a gradient step on that window before scoring the next.

A different protocol from the static score: the model adapts to the text it is reading (a
recurring name, the style of one author), so the loss is lower, and a reader must not compare
it with static figures. Every token is still scored before the model has trained on it.

The update is SGD with a pull back towards the trained weights θ₀ (the paper's "global prior"
variant, without its per-parameter RMS scaling, which needs statistics of the training set):

    θ ← θ − lr · ∇L_window(θ) + decay · (θ₀ − θ)

L_window is the mean NLL of the window's targets. The state is carried across windows as in
the static pass; the text is read as one stream (batch 1), in order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.batches import sequential_windows


@dataclass(frozen=True)
class DynamicOptions:
    window: int = 64       # tokens scored between updates
    lr: float = 0.002      # step size on the window's mean loss
    decay: float = 0.002   # pull towards the trained weights per update

    def validate(self) -> "DynamicOptions":
        from ..errors import ConfigError

        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(f"dynamic window must be an integer >= 1, got {self.window!r}")
        for name in ("lr", "decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ConfigError(f"dynamic {name} must be in [0, 1), got {value!r}")
        return self


class DynamicEvaluator:
    """Reads a text window by window, adapting ``model`` in place (restore ``theta0`` after)."""

    def __init__(self, model, options: DynamicOptions = DynamicOptions()):
        self.model, self.options = model, options.validate()
        self.theta0 = model.flat.copy()
        self.state = model.init_state(1)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Score the window (x, y: (T, 1) ids) with the current weights, then update on it.
        Returns the window's summed NLL in nats."""
        m, o = self.model, self.options
        with np.errstate(all="ignore"):
            loss, self.state = m.loss_and_grad(x, y, self.state)
            flat = m.flat
            flat -= flat.dtype.type(o.lr) * m.grad_flat
            flat += flat.dtype.type(o.decay) * (self.theta0 - flat)
        return float(loss) * y.size

    def restore(self) -> None:
        self.model.flat[...] = self.theta0


def dynamic_score(model, ids: np.ndarray, options: DynamicOptions = DynamicOptions()) -> tuple[float, int]:
    """(summed NLL in nats, targets) of ids[1:] under dynamic evaluation; ``model``'s weights are
    put back as they were when it returns."""
    ev = DynamicEvaluator(model, options)
    total, count = 0.0, 0
    try:
        for x, y in sequential_windows(ids, options.window):
            total += ev.step(x, y)
            count += y.size
    finally:
        ev.restore()
    return total, count
