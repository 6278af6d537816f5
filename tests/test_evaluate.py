"""The batched evaluation pass against a naive per-token loop."""
import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.evaluate import score_ids, score_spans, state_after
from charlm.model import Model


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
