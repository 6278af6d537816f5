"""Adam that updates only the table rows a batch touched ("lazy" Adam, torch.optim.SparseAdam's
semantics), and every element of the dense spans as ordinary Adam does.

A hashed table's row absent from a batch has a zero gradient. Dense Adam still decays its
moments and moves it by its old momentum; lazy Adam leaves the row and its moments as they are
until a batch uses it again, so a step costs the rows the batch touched, not the table's size.
Bias correction uses the global step count, as SparseAdam's does. The arithmetic per element is
charlm.optim.Adam's (eps added after scaling the square root by 1/sqrt(1 - b2^t)); SparseAdam
adds eps before that scaling, which differs only within a few eps of the update: a row touched at
every step follows dense Adam bit for bit.

By epochs it is as accurate as dense Adam within the spread of seeds (it starts slower and catches
up within a few epochs), and its pass over a step costs a fraction of dense Adam's on hashed
tables of millions of rows (docs/results.md, "Hashed n-grams, the wide path and ensembles").

Weight decay is Adam's coupled L2 (SeqTrainConfig.weight_decay), added to the gradient of every
dense element and of the touched rows only: decaying the untouched rows would be a pass over the
whole tables each step, the very work this optimiser avoids. A row therefore decays on the steps
it is used, as if its L2 term belonged to the examples that use it.

The state (m, v as full buffers, the step count) has the layout of charlm.optim.Adam's, so a run
saved while its tables were trained by dense Adam resumes here (and goes on lazily).
"""
from __future__ import annotations

import numpy as np

from ..optim import Optimizer, adam_scales
from .sparse_grad import GradLayout


class LazyAdam(Optimizer):
    """``step(param, grad, lr, rows)`` over a flat buffer laid out as ``layout`` says; ``rows`` are
    the distinct touched rows of each table (the model's ``touched``)."""

    name = "lazy_adam"
    buffers = ("m", "v")

    def __init__(self, layout: GradLayout, size: int, dtype, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(size, dtype, weight_decay)
        self.layout, self.beta1, self.beta2, self.eps = layout, beta1, beta2, eps

    def step(self, param: np.ndarray, grad: np.ndarray, lr: float, rows) -> None:
        from .row_kernels import lazy_adam

        self.t += 1
        m, v, b1, b2, wd = self.state["m"], self.state["v"], self.beta1, self.beta2, self.weight_decay
        step, denom_scale = adam_scales(lr, b1, b2, self.t)
        if wd:  # coupled L2 written into the dense gradient, as charlm.optim.Optimizer.step does
            for a, b in self.layout.dense:
                grad[a:b] += wd * param[a:b]
        lazy_adam(param, grad, m, v, *self.layout.entries(rows), step, b1, b2, denom_scale, self.eps, wd)

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        """Also a dense Adam's state: its moments mean the same, the tables' rows go on lazily."""
        if scalars.get("name") == "adam":
            scalars = scalars | {"name": self.name}
        super().load_state_dict(arrays, scalars)
