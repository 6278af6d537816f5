"""Label smoothing of the classifier's and tagger's training loss: PyTorch's definition on
identical logits, finite differences in float64, through the whole model too."""
from dataclasses import replace

import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch, tiny_model

from charlm.errors import ConfigError
from charlm.seqtask.config import make_seq_configs
from charlm.seqtask.heads import cross_entropy


def logits_and_labels(n=9, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, (n, c)), rng.integers(0, c, n)


@pytest.mark.parametrize("e", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_torch_cross_entropy_with_label_smoothing(e, padded):
    """Padded rows (weight 0, as a tagger's padding) are torch's ignored targets."""
    torch = pytest.importorskip("torch")
    logits, labels = logits_and_labels()
    weights = (np.arange(len(labels)) % 3 != 1).astype(np.float64) if padded else None
    loss, grad = cross_entropy(logits, labels, weights, smoothing=e)
    x = torch.from_numpy(logits.copy()).requires_grad_()
    target = torch.from_numpy(np.where(weights == 0, -100, labels) if padded else labels)
    expected = torch.nn.functional.cross_entropy(x, target, ignore_index=-100, label_smoothing=e)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_gradient_matches_finite_differences():
    logits, labels = logits_and_labels(seed=3)
    weights = np.linspace(0.0, 2.0, len(labels))
    _, analytic = cross_entropy(logits, labels, weights, smoothing=0.2)
    assert_gradient_matches_finite_diff(lambda: cross_entropy(logits, labels, weights, smoothing=0.2)[0],
                                        logits, analytic, "logits")


def test_no_smoothing_is_the_plain_negative_log_likelihood():
    logits, labels = logits_and_labels(seed=5)
    loss, _ = cross_entropy(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    nll = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]
    assert loss == pytest.approx(nll.mean(), rel=1e-12)


@pytest.mark.parametrize("task, pooling", [("classify", "final"), ("tag", "mean")])
def test_gradcheck_through_the_model_with_smoothing(task, pooling):
    model = tiny_model("lstm", task, pooling, layers=1)
    model.config = replace(model.config, label_smoothing=0.1)
    ids, lengths, labels = tiny_batch(task, np.random.default_rng(4))

    def loss():
        logits, _ = model.forward(ids, lengths)
        return model.loss(logits, labels, lengths)[0]

    smoothed = model.loss_and_grad(ids, lengths, labels)
    analytic = model.grad_flat.copy()
    assert_gradient_matches_finite_diff(loss, model.flat, analytic, f"{task} smoothed", rtol=1e-5, atol=1e-8)
    model.config = replace(model.config, label_smoothing=0.0)
    assert model.loss_and_grad(ids, lengths, labels) != pytest.approx(smoothed)


def test_the_setting_is_checked_before_any_work():
    model, _ = make_seq_configs("classify", {"label_smoothing": 0.1})
    assert model.label_smoothing == 0.1
    with pytest.raises(ConfigError):
        make_seq_configs("classify", {"label_smoothing": 1.0})
