"""Label smoothing: the loss and its gradient equal torch's cross_entropy(label_smoothing=e), with
ignored (padded) rows too, and the whole model's gradient matches finite differences."""
import dataclasses

import numpy as np
import pytest

from charlm.seqtask.heads import cross_entropy

from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch, tiny_model


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("ignored", [False, True])
def test_matches_torch_label_smoothing(smoothing, ignored):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 5)) * 3
    labels = rng.integers(0, 5, 7)
    valid = np.array([1, 1, 0, 1, 0, 1, 1], bool) if ignored else np.ones(7, bool)
    loss, dlogits = cross_entropy(logits, np.where(valid, labels, 0), valid.astype(np.float64), smoothing)
    z = torch.from_numpy(logits).requires_grad_()
    target = torch.from_numpy(np.where(valid, labels, -100))
    loss_t = torch.nn.functional.cross_entropy(z, target, ignore_index=-100, label_smoothing=smoothing)
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), abs=1e-12)
    np.testing.assert_allclose(dlogits, z.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_model_gradient_with_label_smoothing(task):
    model = tiny_model("gru", task, "final" if task == "classify" else "mean", ngrams=3)
    model.config = dataclasses.replace(model.config, label_smoothing=0.2)
    ids, lengths, labels = tiny_batch(task, np.random.default_rng(1))

    def loss():
        return model.loss(model.forward(ids, lengths)[0], labels, lengths)[0]

    assert model.loss_and_grad(ids, lengths, labels) == loss()
    smoothed = loss()
    model.config = dataclasses.replace(model.config, label_smoothing=0.0)
    assert loss() != smoothed   # the option reaches the loss
    model.config = dataclasses.replace(model.config, label_smoothing=0.2)
    assert_gradient_matches_finite_diff(loss, model.flat, model.grad_flat.copy(), f"smoothing/{task}",
                                        rtol=1e-5, atol=1e-8)
