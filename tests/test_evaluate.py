"""The batched evaluation pass against a naive per-token loop."""
import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.lm.evaluate import score_ids, score_spans, state_after
from charlm.lm.model import Model


def small_model(cell="lstm", V=11, seed=0):
    return Model(ModelConfig(cell=cell, vocab_size=V, embed=5, hidden=7, layers=2), dtype=np.float64) \
        .init_weights(np.random.default_rng(seed))


def naive_nll(model, ids):
    """One token at a time from the zero state, log-softmax in NumPy."""
    state, out = model.init_state(1), []
    for t in range(len(ids) - 1):
        logits, state, _ = model.forward(np.array([[ids[t]]]), state)
        z = logits[0] - logits[0].max()
        out.append(np.log(np.exp(z).sum()) - z[ids[t + 1]])
    return np.array(out)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "jordan"])
def test_streams_started_from_the_carried_state_equal_the_naive_loop(cell):
    model = small_model(cell)
    ids = np.random.default_rng(1).integers(0, 11, 301)
    cuts = [0, 37, 120, 121, 300]  # uneven streams, one of a single target
    spans = [(cuts[s], cuts[s], cuts[s + 1]) for s in range(4)]
    state = np.concatenate([state_after(model, ids[:c + 1]) for c in cuts[:4]], axis=2)  # (L, S, 4, H)
    got = score_spans(model, ids, spans, state, window=16)
    np.testing.assert_allclose(got, naive_nll(model, ids), rtol=1e-10, atol=1e-12)


def test_one_stream_is_the_sequential_pass_and_every_target_counts_once():
    model = small_model()
    ids = np.random.default_rng(2).integers(0, 11, 500)
    np.testing.assert_allclose(score_ids(model, ids, streams=1, window=64), naive_nll(model, ids), rtol=1e-10)
    many = score_ids(model, ids, streams=7, context=16, window=32)
    assert many.shape == (499,)


def test_warm_up_context_stands_in_for_the_carried_state():
    """A model that has learned a repeating text forgets where it started within a few tokens:
    streams warmed up on the text before them score it like the single sequential pass."""
    from charlm.optim import make_optimizer

    rng = np.random.default_rng(3)
    period = rng.integers(0, 11, 13)
    ids = np.tile(period, 60)
    model = small_model(seed=4)
    opt = make_optimizer("adam", model.size, model.dtype)
    x = np.stack([ids[i:i + 40] for i in range(0, 520, 65)], axis=1)
    y = np.stack([ids[i + 1:i + 41] for i in range(0, 520, 65)], axis=1)
    for _ in range(150):
        model.loss_and_grad(x, y, model.init_state(x.shape[1]))
        opt.step(model.flat, model.grad_flat, 3e-2)
    exact = score_ids(model, ids, streams=1)
    batched = score_ids(model, ids, streams=12, context=32, window=64)
    cold = score_ids(model, ids, streams=12, context=0, window=64)
    assert abs(batched.mean() - exact.mean()) < 1e-3
    assert abs(cold.mean() - exact.mean()) > abs(batched.mean() - exact.mean())  # the warm-up matters


def test_dynamic_evaluation_scores_each_window_before_a_finite_difference_checked_step():
    from charlm.lm.dynamic_eval import DynamicEvaluator, DynamicOptions

    model = small_model("gru", seed=6)
    ids = np.random.default_rng(7).integers(0, 11, 25)
    x, y = ids[:12, None], ids[1:13, None]
    theta0 = model.flat.copy()

    def window_loss(theta):
        model.flat[...] = theta
        return float(score_ids(model, ids[:13], streams=1).mean())

    static = window_loss(theta0)
    rng = np.random.default_rng(8)
    coords = rng.choice(model.size, 12, replace=False)
    fd = []
    for i in coords:
        e = np.zeros(model.size)
        e[i] = 1e-6
        fd.append((window_loss(theta0 + e) - window_loss(theta0 - e)) / 2e-6)
    model.flat[...] = theta0
    ev = DynamicEvaluator(model, DynamicOptions(window=12, lr=0.1, decay=0.25))
    assert ev.step(x, y) == pytest.approx(static * 12, rel=1e-10)   # scored before the update
    step = theta0 - model.flat  # θ' = θ0 - lr g, then pulled back: θ1 = θ' + decay (θ0 - θ') = θ0 - 0.75 lr g
    np.testing.assert_allclose(step[coords] / (0.1 * 0.75), fd, rtol=1e-5, atol=1e-8)
    theta1 = model.flat.copy()
    ev.step(ids[12:24, None], ids[13:25, None])
    np.testing.assert_allclose(model.flat, theta1 - 0.1 * model.grad_flat + 0.25 * (theta0 - (theta1 - 0.1 * model.grad_flat)),
                               rtol=1e-12)
    ev.restore()
    np.testing.assert_array_equal(model.flat, theta0)


def test_dynamic_evaluation_adapts_to_a_repeated_text_and_restores_the_weights():
    from charlm.lm.dynamic_eval import DynamicOptions, dynamic_score

    model = small_model("lstm", seed=9)
    ids = np.tile(np.random.default_rng(10).integers(0, 11, 9), 40)
    before = model.flat.copy()
    total, count = dynamic_score(model, ids, DynamicOptions(window=9, lr=0.5, decay=0.0))
    assert count == len(ids) - 1
    assert total / count < score_ids(model, ids, streams=1).mean() - 0.3
    np.testing.assert_array_equal(model.flat, before)
