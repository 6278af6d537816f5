"""Optimisers, gradient clipping and learning-rate schedules over one flat parameter buffer.

The model keeps every parameter as a view into one contiguous array (and every gradient in a
second one), so an optimiser step or a global norm is a handful of vectorised passes over a
single buffer instead of a Python loop over tensors. Update rules follow PyTorch's
``torch.optim`` definitions so that results are comparable.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

# Buffers at least this long go through the fused Numba passes (kernels/update.py); below it
# NumPy's few microseconds per pass cost less than loading a compiled kernel.
_FUSED_MIN = 32768

# ---------------------------------------------------------------------------------------------
# clipping: two different operations, two unmistakable names


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Rescale ``grad`` in place so its global L2 norm is at most ``max_norm``.

    Returns the norm BEFORE clipping (what the training view reports). ``max_norm <= 0`` only
    measures. A non-finite norm is returned unchanged so the caller can skip the step.
    """
    norm = math.sqrt(_sum_squares(grad))
    factor = clip_factor(norm, max_norm)
    if factor is not None:
        grad *= grad.dtype.type(factor)
    return norm


def clip_factor(norm: float, max_norm: float) -> float | None:
    """What a gradient of L2 norm ``norm`` is multiplied by to bring it to ``max_norm``; None when
    it stays as it is (within the bound, clipping off, or a non-finite norm the caller skips)."""
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        return max_norm / (norm + 1e-6)
    return None


def adam_scales(lr: float, beta1: float, beta2: float, t: int) -> tuple[float, float]:
    """Adam's bias corrections at step ``t``: (step size lr / (1 - b1^t), 1 / sqrt(1 - b2^t), the
    scale of sqrt(v) before eps is added)."""
    return lr / (1 - beta1 ** t), 1.0 / math.sqrt(1 - beta2 ** t)


def _sum_squares(grad: np.ndarray) -> float:
    """sum(grad**2) in float64: a fused Numba pass for large float buffers, NumPy for small ones."""
    if grad.size >= _FUSED_MIN and grad.dtype in (np.float32, np.float64) and grad.flags.c_contiguous:
        from .kernels.update import sum_squares_pass

        return sum_squares_pass(grad.reshape(-1))
    g = grad.astype(np.float64)
    return float(np.dot(g.ravel(), g.ravel()))


def grad_norm(grad: np.ndarray) -> float:
    """The global L2 norm of ``grad``."""
    return math.sqrt(_sum_squares(grad))


def clip_grad_value(grad: np.ndarray, clip: float) -> None:
    """Clamp every gradient element to [-clip, clip] in place (char-rnn's ``grad_clip``)."""
    if clip > 0:
        np.clip(grad, -clip, clip, out=grad)


# ---------------------------------------------------------------------------------------------
# optimisers: ``step(param, grad, lr)`` updates the flat ``param`` in place


class Optimizer:
    """Base: holds named state arrays (same shape as the flat parameters) and a step count."""

    name = ""
    buffers: tuple[str, ...] = ()

    def __init__(self, size: int, dtype, weight_decay: float = 0.0):
        self.weight_decay = weight_decay
        self.t = 0
        self.state = {name: np.zeros(size, dtype=dtype) for name in self.buffers}

    def step(self, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        self.t += 1
        if self.weight_decay and self.name != "adamw":  # coupled L2, as torch.optim does
            grad += self.weight_decay * param
        self._update(param, grad, lr)

    def _update(self, param, grad, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars): arrays go to optimizer.safetensors, scalars to state.json."""
        return dict(self.state), {"name": self.name, "t": self.t}

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        if scalars.get("name") != self.name:
            raise ConfigError(f"optimizer state is for {scalars.get('name')!r}, not {self.name!r}")
        for key, buf in self.state.items():
            if key not in arrays or arrays[key].shape != buf.shape:
                raise ConfigError(f"optimizer state {key!r} is missing or has the wrong shape")
            buf[...] = arrays[key]
        self.t = int(scalars["t"])


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum: v = mu*v + g; p -= lr*v."""

    name = "sgd"
    buffers = ("velocity",)

    def __init__(self, size, dtype, momentum=0.9, weight_decay=0.0):
        super().__init__(size, dtype, weight_decay)
        self.momentum = momentum

    def _update(self, param, grad, lr):
        v = self.state["velocity"]
        if self.momentum:
            v *= self.momentum
            v += grad
            param -= lr * v
        else:
            param -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, eps outside the square root as in PyTorch."""

    name = "adam"
    buffers = ("m", "v")

    def __init__(self, size, dtype, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(size, dtype, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._tmp = np.empty(size, dtype=dtype) if size < _FUSED_MIN else None

    def _update(self, param, grad, lr):
        m, v = self.state["m"], self.state["v"]
        b1, b2 = self.beta1, self.beta2
        step, denom_scale = adam_scales(lr, b1, b2, self.t)
        if param.size >= _FUSED_MIN and param.dtype in (np.float32, np.float64) and all(
                a.flags.c_contiguous and a.dtype == param.dtype for a in (param, grad, m, v)):
            from .kernels.update import adam_pass

            adam_pass(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), step, b1, b2,
                        denom_scale, self.eps)
            return
        self._update_numpy(param, grad, lr)

    def _update_numpy(self, param, grad, lr):
        """The same update in NumPy passes (small buffers, and the fused kernel's test twin)."""
        m, v = self.state["m"], self.state["v"]
        tmp = self._tmp if self._tmp is not None else np.empty_like(param)
        b1, b2 = self.beta1, self.beta2
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1 - b2
        v += tmp
        step, denom_scale = adam_scales(lr, b1, b2, self.t)
        np.sqrt(v, out=tmp)
        tmp *= denom_scale
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
        param -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p *= 1 - lr*wd first."""

    name = "adamw"

    def _update(self, param, grad, lr):
        if self.weight_decay:
            param *= 1 - lr * self.weight_decay
        super()._update(param, grad, lr)


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (alpha=0.99, eps added after the square root)."""

    name = "rmsprop"
    buffers = ("square_avg",)

    def __init__(self, size, dtype, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(size, dtype, weight_decay)
        self.alpha, self.eps = alpha, eps

    def _update(self, param, grad, lr):
        sq = self.state["square_avg"]
        sq *= self.alpha
        sq += (1 - self.alpha) * grad * grad
        param -= lr * grad / (np.sqrt(sq) + self.eps)


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad (eps=1e-10)."""

    name = "adagrad"
    buffers = ("sum",)

    def __init__(self, size, dtype, eps=1e-10, weight_decay=0.0):
        super().__init__(size, dtype, weight_decay)
        self.eps = eps

    def _update(self, param, grad, lr):
        acc = self.state["sum"]
        acc += grad * grad
        param -= lr * grad / (np.sqrt(acc) + self.eps)


def make_optimizer(name: str, size: int, dtype, *, weight_decay=0.0, momentum=0.9) -> Optimizer:
    if name == "adam":
        return Adam(size, dtype, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(size, dtype, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(size, dtype, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return RMSprop(size, dtype, weight_decay=weight_decay)
    if name == "adagrad":
        return Adagrad(size, dtype, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}")


# ---------------------------------------------------------------------------------------------
# learning-rate schedules


class Schedule:
    """Learning rate as a function of the budget spent, plus reduce-on-plateau fed by validation loss.

    ``progress`` is the fraction of the training budget done (steps, epochs or wall-clock time,
    whichever ends the run first: ``charlm.training.budget.Budget.progress``), so a cosine schedule
    reaches ``min_lr`` exactly when the run ends, however the budget was given.

    constant: lr.  cosine: decays from lr to ``min_lr`` as progress goes 0 -> 1.  linear: the
    same decay in a straight line (it spends less of the budget near the peak and more near
    the end than cosine does).  plateau: lr
    times ``factor`` each time the validation loss has not improved for ``patience``
    evaluations.  Every schedule starts with a linear warm-up over ``warmup`` steps (a ramp
    multiplied in, so the cosine curve itself is unchanged).  ``scale`` is an extra factor that
    divergence handling lowers (a NaN step halves it), kept in the resumable state.
    """

    def __init__(self, kind, lr, *, warmup=0, min_lr=0.0, factor=0.5, patience=2):
        if min_lr > lr:
            raise ConfigError(f"min_lr ({min_lr:g}) must not be above lr ({lr:g})")
        self.kind, self.base_lr, self.warmup = kind, lr, warmup
        self.min_lr, self.factor, self.patience = min_lr, factor, patience
        self.scale = 1.0
        self.best = math.inf
        self.bad_evals = 0

    def lr(self, step: int, progress: float) -> float:
        """Learning rate for optimiser step ``step`` (0-based) taken at ``progress`` in [0, 1]."""
        lr = self.base_lr
        if self.kind == "cosine":
            p = min(1.0, max(0.0, progress))
            lr = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * p))
        elif self.kind == "linear":
            p = min(1.0, max(0.0, progress))
            lr = self.base_lr + (self.min_lr - self.base_lr) * p
        if self.warmup and step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr * self.scale

    def observe(self, val_loss: float) -> None:
        """Feed a validation loss; only the plateau schedule reacts."""
        if self.kind != "plateau" or not math.isfinite(val_loss):
            return
        if val_loss < self.best - 1e-4:
            self.best, self.bad_evals = val_loss, 0
        else:
            self.bad_evals += 1
            if self.bad_evals > self.patience:
                self.scale *= self.factor
                self.bad_evals = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best if math.isfinite(self.best) else None,
                "bad_evals": self.bad_evals}

    def load_state_dict(self, d: dict) -> None:
        self.scale = float(d["scale"])
        if not (math.isfinite(self.scale) and self.scale > 0):  # a corrupted file, not a real run
            raise ValueError(f"learning-rate scale {self.scale!r} is not a positive number")
        self.best = math.inf if d.get("best") is None else float(d["best"])
        self.bad_evals = int(d["bad_evals"])
