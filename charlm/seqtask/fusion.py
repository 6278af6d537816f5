"""The recurrent classifier and the class language models (class_lm.py) pooled into one prediction:
log p(label | text) = a log p_classifier + b log p_lms, renormalised (log-linear pooling, a
product of experts with a weight each).

The two weights are fitted on the dev split by its log-loss, at every evaluation, so the kept
model is chosen by the pooled accuracy. The negative log-likelihood of log-linear pooling is
convex in (a, b) (a log-sum-exp of functions linear in them), so L-BFGS-B from (1, 0), the
classifier alone, finds the one optimum; a = 1, b = 0 is the classifier unchanged, and the fit
can only lower the dev loss it was fitted on. Two numbers fitted on thousands of texts: not
enough freedom to follow the dev split's noise, which the docs check on words held out of both
(docs/classification.md, "Class language models").

On word language identification the fit lands near a = 0.66, b = 0.20 at every seed: the
ensemble is overconfident (a < 1 softens it) and the language models far more so (their
likelihoods multiply a probability per letter as if the letters were independent evidence).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .heads import log_softmax

BOUNDS = ((0.0, 20.0), (0.0, 20.0))   # wide: the optimum is interior on every split measured


@dataclass(frozen=True)
class Weights:
    classifier: float = 1.0
    lms: float = 0.0

    def as_dict(self) -> dict:
        return {"classifier": self.classifier, "lms": self.lms}

    @classmethod
    def from_dict(cls, value) -> "Weights":
        """Weights as stored; ValueError when not two finite non-negative numbers."""
        if not isinstance(value, dict):
            raise ValueError("fusion weights are not a mapping")
        a, b = value.get("classifier"), value.get("lms")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) and w >= 0
                   for w in (a, b)):
            raise ValueError("fusion weights are not two non-negative numbers")
        return cls(float(a), float(b))


def pool(classifier_logp: np.ndarray, lm_logp: np.ndarray, weights: Weights) -> np.ndarray:
    """(texts, C) pooled log-probabilities from the classifier's and the language models' (texts, C)."""
    return log_softmax(weights.classifier * np.asarray(classifier_logp, np.float64)
                       + weights.lms * np.asarray(lm_logp, np.float64))


def fit(classifier_logp: np.ndarray, lm_logp: np.ndarray, gold: np.ndarray) -> Weights:
    """The weights that minimise the mean negative log-likelihood of ``gold`` (texts,) labels."""
    from scipy.optimize import minimize

    u, v = np.asarray(classifier_logp, np.float64), np.asarray(lm_logp, np.float64)
    rows = np.arange(len(gold))
    if len(gold) == 0:
        return Weights()
    u_gold, v_gold = u[rows, gold], v[rows, gold]

    def loss_and_grad(w):
        logp = log_softmax(w[0] * u + w[1] * v)
        p = np.exp(logp)
        loss = -logp[rows, gold].mean()
        grad = np.array([((p * u).sum(axis=1) - u_gold).mean(), ((p * v).sum(axis=1) - v_gold).mean()])
        return loss, grad

    result = minimize(loss_and_grad, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=BOUNDS)
    a, b = (float(x) for x in result.x)
    start, _ = loss_and_grad(np.array([1.0, 0.0]))
    return Weights(a, b) if result.fun <= start else Weights()


class Pooled:
    """A classifier and its class language models read as one model: ``forward`` returns the
    pooled log-probabilities in place of logits (a softmax leaves them as they are), so whatever
    scores or ranks a classifier's logits reads the pooled prediction."""

    def __init__(self, model, class_lms, weights: Weights):
        self.model, self.class_lms, self.weights = model, class_lms, weights

    @property
    def config(self):
        return self.model.config

    def forward(self, ids, lengths):
        """(B, C) pooled log-probabilities of the batch ids (T, B) valid up to lengths (B,), and None."""
        logits, _ = self.model.forward(ids, lengths)
        texts = [ids[:n, b] for b, n in enumerate(np.asarray(lengths))]
        return pool(log_softmax(logits.astype(np.float64)), self.class_lms.log_posteriors(texts), self.weights), None
