"""Hashed n-gram embeddings of the sequence models: the hash against a plain reference, PyTorch on
identical weights (logits and every gradient), padding, bad settings. (Finite differences:
test_bidir.py's gradient check runs with n-grams too.)"""
import dataclasses

import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch as batch
from test_bidir import tiny_model

from charlm.errors import ConfigError
from charlm.seqtask.config import SeqModelConfig
from charlm.seqtask.model import SeqModel
from charlm.seqtask.ngrams import ngram_ids


def reference_bucket(tokens, buckets):
    """Horner's rule on (id + 1), base 1000003, modulo 2^31 - 1, then modulo the buckets."""
    h = 0
    for t in tokens:
        h = (h * 1_000_003 + int(t) + 1) % (2 ** 31 - 1)
    return h % buckets


def test_buckets_match_the_reference_hash():
    rng = np.random.default_rng(0)
    V, N, K = 9, 4, 97
    ids = rng.integers(0, V, (6, 3))
    grams = ngram_ids(ids, V, N, K)
    assert grams.shape == (N - 1, 6, 3)
    for b in range(3):
        marked = [V] + ids[:, b].tolist()               # the marker stands before step 0
        for n in range(2, N + 1):
            for t in range(6):
                start = t - n + 2                       # index into marked
                expected = reference_bucket(marked[start:t + 2], K) if start >= 0 else -1
                assert grams[n - 2, t, b] == expected, (n, t, b)


def test_a_salt_scatters_the_buckets_and_salt_0_is_the_plain_hash():
    rng = np.random.default_rng(1)
    V, N, K = 9, 3, 97
    ids = rng.integers(0, V, (5, 4))
    np.testing.assert_array_equal(ngram_ids(ids, V, N, K, salt=0), ngram_ids(ids, V, N, K))
    salted = ngram_ids(ids, V, N, K, salt=2)
    marked = [V] + ids[:, 0].tolist()
    h = reference_bucket(marked[0:3], 2 ** 31 - 1)      # the 3-gram ending at step 1, before the modulo K
    assert salted[1, 1, 0] == h * 48271 ** 2 % (2 ** 31 - 1) % K
    assert (salted == -1).sum() == (ngram_ids(ids, V, N, K) == -1).sum()
    assert (salted != ngram_ids(ids, V, N, K)).mean() > 0.8


def test_sequences_shorter_than_the_grams():
    grams = ngram_ids(np.array([[3, 4]]), 5, 5, 13)     # T = 1: only "<x" exists
    assert (grams[0] >= 0).all() and (grams[1:] == -1).all()


def torch_reference(model, ids, lengths, labels, token_keep=None, gram_keep=None, wide_bags=None):
    """nn.Embedding (tokens) + nn.Embedding (buckets) summed (times the input-dropout multipliers
    when given), a packed nn.LSTM, both final states, nn.Linear: (logits, gradients by name).
    With a wide path, nn.EmbeddingBag(mode="sum") on ``wide_bags`` (input, offsets, per-sample
    weights or None) adds its output to the logits."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence

    c = model.config
    module = torch.nn.ModuleDict({
        "embedding": torch.nn.Embedding(c.vocab_size, c.embed),
        "ngram_embedding": torch.nn.Embedding(c.buckets, c.embed),
        "rnn": torch.nn.LSTM(c.embed, c.hidden, num_layers=c.layers, bidirectional=True),
        "head": torch.nn.Linear(2 * c.hidden, c.num_labels)})
    if c.wide_ngrams:
        module["wide"] = torch.nn.EmbeddingBag(c.wide_buckets, c.num_labels, mode="sum")
    module = module.double()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=True)
    grams = torch.from_numpy(ngram_ids(ids, c.vocab_size, c.ngrams, c.buckets))
    x = module["embedding"](torch.from_numpy(ids))
    if token_keep is not None:
        x = x * torch.from_numpy(token_keep)[:, :, None]
    for k in range(grams.shape[0]):
        weight = (grams[k] >= 0).double() * (1.0 if gram_keep is None else torch.from_numpy(gram_keep[k]))
        x = x + module["ngram_embedding"](grams[k].clamp(min=0)) * weight[:, :, None]
    _, (h_n, _) = module["rnn"](pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False))
    logits = module["head"](torch.cat([h_n[-2], h_n[-1]], 1))
    if wide_bags is not None:
        grams, offsets, weights = wide_bags
        logits = logits + module["wide"](torch.from_numpy(grams), torch.from_numpy(offsets),
                                         per_sample_weights=None if weights is None else torch.from_numpy(weights))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    return logits.detach().numpy(), {name: p.grad.numpy() for name, p in module.named_parameters()}


def test_matches_pytorch_on_identical_weights():
    model = tiny_model("lstm", "classify", "final", ngrams=3)
    ids, lengths, labels = batch("classify", np.random.default_rng(3), lengths=(4, 6, 1, 3, 6))
    logits_t, grads_t = torch_reference(model, ids, lengths, labels)
    model.loss_and_grad(ids, lengths, labels)
    logits, _ = model.forward(ids, lengths)
    np.testing.assert_allclose(logits, logits_t, rtol=0, atol=1e-12)
    for name, grad in model.grads.items():
        np.testing.assert_allclose(grad, grads_t[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_input_dropout_matches_pytorch_and_finite_differences():
    """Whole token and n-gram vectors dropped: the same multipliers in PyTorch give the same
    gradients, and the gradient is that of the loss with those multipliers held fixed."""
    model = tiny_model("lstm", "classify", "final", ngrams=3)
    model.config = dataclasses.replace(model.config, input_dropout=0.4)
    ids, lengths, labels = batch("classify", np.random.default_rng(3), lengths=(6, 6, 4, 3, 1))  # sorted
    logits, cache = model.forward(ids, lengths, rng=np.random.default_rng(8))
    token_keep, gram_keep = cache[5], cache[6]
    assert (token_keep == 0).any() and (gram_keep == 0).any() and (gram_keep > 1).any()
    logits_t, grads_t = torch_reference(model, ids, lengths, labels, token_keep, gram_keep)
    np.testing.assert_allclose(logits, logits_t, rtol=0, atol=1e-12)
    assert_gradients_with_fixed_draws(model, ids, lengths, labels, 8, grads_t, "input dropout")


def assert_gradients_with_fixed_draws(model, ids, lengths, labels, seed, grads_t, what):
    """The gradients under the dropout draws of ``seed`` are PyTorch's (``grads_t``, computed with
    the same multipliers) and those of the loss with the draws held fixed (finite differences)."""
    loss = model.loss_and_grad(ids, lengths, labels, np.random.default_rng(seed))
    for name, grad in model.grads.items():
        np.testing.assert_allclose(grad, grads_t[name], rtol=1e-10, atol=1e-12, err_msg=name)

    def dropped_loss():
        z, _ = model.forward(ids, lengths, rng=np.random.default_rng(seed))
        return model.loss(z, labels, lengths)[0]

    assert dropped_loss() == loss
    assert_gradient_matches_finite_diff(dropped_loss, model.flat, model.grad_flat.copy(), what, rtol=1e-5, atol=1e-8)


def test_padding_changes_nothing_with_ngrams():
    model = tiny_model("gru", "tag", "mean", ngrams=4)
    rng = np.random.default_rng(4)
    ids, lengths, labels = batch("tag", rng)
    loss = model.loss_and_grad(ids, lengths, labels)
    grad = model.grad_flat.copy()
    ids2 = rng.integers(0, 7, (ids.shape[0] + 2, ids.shape[1]))
    labels2 = rng.integers(0, 3, ids2.shape)
    for b, n in enumerate(lengths):
        ids2[:n, b], labels2[:n, b] = ids[:n, b], labels[:n, b]
    assert model.loss_and_grad(ids2, lengths, labels2) == loss
    np.testing.assert_array_equal(model.grad_flat, grad)


def test_without_ngrams_the_model_is_unchanged():
    """No n-gram table, and the same initial weights as before the option existed."""
    base = SeqModelConfig(vocab_size=7, num_labels=3, embed=3, hidden=4)
    plain = SeqModel(base).init_weights(np.random.default_rng(0))
    assert "ngram_embedding.weight" not in plain.params
    with_ngrams = SeqModel(SeqModelConfig(**{**base.__dict__, "ngrams": 2})).init_weights(np.random.default_rng(0))
    for name, value in plain.params.items():
        np.testing.assert_array_equal(with_ngrams.params[name], value)


@pytest.mark.parametrize("bad", [dict(ngrams=1), dict(ngrams=9), dict(ngrams=-1), dict(ngrams=3, buckets=0),
                                 dict(input_dropout=1.0), dict(input_dropout=-0.1), dict(input_dropout=True)])
def test_bad_input_settings_are_one_clear_error(bad):
    with pytest.raises(ConfigError, match="ngrams|buckets|input_dropout"):
        SeqModelConfig(vocab_size=7, num_labels=3, **bad).validate()
