"""The wide path of a classifier (--wide-ngrams): the bag of framed n-grams against a plain
reference, PyTorch (nn.EmbeddingBag(mode="sum") beside the recurrent model) on identical weights,
finite differences, salts, padding, checkpoints and bad settings."""
import dataclasses
from collections import Counter

import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch as batch
from test_bidir import tiny_model
from test_classify import FAST_TRAIN, toy_examples
from test_seqtask_ngrams import assert_gradients_with_fixed_draws, reference_bucket, torch_reference

from charlm.errors import ConfigError
from charlm.seqtask import store
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.ensemble import build_model
from charlm.seqtask.model import SeqModel
from charlm.seqtask.train import SeqTrainer
from charlm.seqtask.wide import bag

V = 7


def reference_bag(ids, length, max_n, buckets, salt=0, vocab_size=V):
    """Every n-gram (n = 1..N) of [start] + ids[:length] + [end] as a bucket, by Horner's rule
    (the markers are the ids after the vocabulary's)."""
    framed = [vocab_size] + [int(t) for t in ids[:length]] + [vocab_size + 1]
    out = Counter()
    for n in range(1, max_n + 1):
        for p in range(len(framed) - n + 1):
            h = reference_bucket(framed[p:p + n], 2 ** 31 - 1)
            out[h * pow(48271, salt, 2 ** 31 - 1) % (2 ** 31 - 1) % buckets] += 1
    return out


@pytest.mark.parametrize("salt", [0, 3])
def test_bag_matches_the_reference(salt):
    rng = np.random.default_rng(0)
    lengths = np.array([4, 1, 6, 2])
    ids = rng.integers(0, V, (6, 4))
    buckets, rows = bag(ids, lengths, V, 4, 97, salt)
    for b, n in enumerate(lengths):
        assert Counter(buckets[rows == b].tolist()) == reference_bag(ids[:, b], n, 4, 97, salt)
    # a 1-letter word framed: 3 unigrams, 2 bigrams, 1 trigram, no 4-gram
    assert (rows == 1).sum() == 6


def wide_model(dtype=np.float64, **changes):
    model = tiny_model("lstm", "classify", "final", ngrams=3)
    config = dataclasses.replace(model.config, wide_ngrams=3, wide_buckets=13, **changes)
    wide = SeqModel(config, dtype).init_weights(np.random.default_rng(0))
    wide.flat[...] = np.random.default_rng(1).uniform(-0.6, 0.6, wide.size)
    return wide


def reference_bags(model, ids, lengths):
    """(input, offsets) of nn.EmbeddingBag: each example's reference bag, in the caller's order."""
    c = model.config
    grams = [sorted(reference_bag(ids[:, b], n, c.wide_ngrams, c.wide_buckets, vocab_size=c.vocab_size).elements())
             for b, n in enumerate(lengths)]
    return np.array(sum(grams, []), np.int64), np.cumsum([0] + [len(g) for g in grams[:-1]]).astype(np.int64)


def test_matches_pytorch_on_identical_weights():
    model = wide_model()
    ids, lengths, labels = batch("classify", np.random.default_rng(3), lengths=(4, 6, 1, 3, 6))
    logits_t, grads_t = torch_reference(model, ids, lengths, labels, wide_bags=(*reference_bags(model, ids, lengths),
                                                                                None))
    model.loss_and_grad(ids, lengths, labels)
    logits, _ = model.forward(ids, lengths)
    np.testing.assert_allclose(logits, logits_t, rtol=0, atol=1e-12)
    assert set(model.grads) == set(grads_t)
    assert np.abs(model.grads["wide.weight"]).max() > 1e-3
    for name, grad in model.grads.items():
        np.testing.assert_allclose(grad, grads_t[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_wide_dropout_matches_pytorch_and_finite_differences():
    """Whole n-grams dropped from the bag: the same multipliers as PyTorch's per-sample weights
    give the same gradients, and the gradient is that of the loss with them held fixed."""
    model = wide_model(wide_dropout=0.4)
    ids, lengths, labels = batch("classify", np.random.default_rng(3), lengths=(6, 6, 4, 3, 1))  # sorted
    logits, cache = model.forward(ids, lengths, rng=np.random.default_rng(8))
    buckets, rows, keep = cache[-1]
    assert (keep == 0).any() and (keep > 1).any()
    by_example = np.argsort(rows, kind="stable")          # the lengths are sorted: rows are the caller's
    offsets = np.searchsorted(rows[by_example], np.arange(len(lengths)))
    logits_t, grads_t = torch_reference(model, ids, lengths, labels,
                                        wide_bags=(buckets[by_example], offsets, keep[by_example]))
    np.testing.assert_allclose(logits, logits_t, rtol=0, atol=1e-12)
    assert_gradients_with_fixed_draws(model, ids, lengths, labels, 8, grads_t, "wide dropout")


def test_gradcheck_through_both_paths():
    model = wide_model()
    ids, lengths, labels = batch("classify", np.random.default_rng(2))

    def loss():
        logits, _ = model.forward(ids, lengths)
        return model.loss(logits, labels, lengths)[0]

    model.loss_and_grad(ids, lengths, labels)
    analytic = model.grad_flat.copy()
    assert np.abs(model.grads["wide.weight"]).max() > 1e-3
    assert_gradient_matches_finite_diff(loss, model.flat, analytic, "wide", rtol=1e-5, atol=1e-8)


def test_padding_and_batch_order_change_nothing():
    model = wide_model()
    rng = np.random.default_rng(4)
    ids, lengths, labels = batch("classify", rng)
    loss = model.loss_and_grad(ids, lengths, labels)
    grad = model.grad_flat.copy()
    ids2 = rng.integers(0, V, (ids.shape[0] + 2, ids.shape[1]))
    for b, n in enumerate(lengths):
        ids2[:n, b] = ids[:n, b]
    assert model.loss_and_grad(ids2, lengths, labels) == loss
    np.testing.assert_array_equal(model.grad_flat, grad)
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(model.forward(ids[:, perm], lengths[perm])[0], model.forward(ids, lengths)[0][perm],
                               rtol=0, atol=1e-14)


def test_the_table_starts_at_zero_and_the_rest_as_without_it():
    base = SeqModelConfig(vocab_size=V, num_labels=3, embed=3, hidden=4, ngrams=2)
    plain = SeqModel(base).init_weights(np.random.default_rng(0))
    wide = SeqModel(dataclasses.replace(base, wide_ngrams=4)).init_weights(np.random.default_rng(0))
    assert "wide.weight" not in plain.params and not wide.params["wide.weight"].any()
    for name, value in plain.params.items():
        np.testing.assert_array_equal(wide.params[name], value)


def test_salted_members_hash_their_bags_apart():
    config = dataclasses.replace(wide_model().config, members=2, member_salts=True)
    model = build_model(config, np.float64)
    ids, lengths, _ = batch("classify", np.random.default_rng(1))
    bags = [m.forward(ids, lengths)[1][-1][0] for m in model.members]
    np.testing.assert_array_equal(bags[0], bag(ids[:, np.argsort(-lengths, kind="stable")],
                                               np.sort(lengths)[::-1], V, 3, 13)[0])
    assert (bags[0] != bags[1]).any()


def test_checkpoint_loads_into_pytorch_with_strict_names(tmp_path):
    torch = pytest.importorskip("torch")
    config = SeqModelConfig(hidden=8, embed=4, dropout=0.0, ngrams=3, buckets=31, wide_ngrams=3, wide_buckets=53)
    trainer = SeqTrainer(toy_examples(100), toy_examples(30, 1), config, SeqTrainConfig(epochs=1, **FAST_TRAIN),
                         tmp_path / "run")
    list(trainer.events())
    ck = store.load(tmp_path / "run")
    c = ck.config
    assert ck.tensors["wide.weight"].shape == (53, c.num_labels) and ck.tensors["wide.weight"].any()
    module = torch.nn.ModuleDict({
        "embedding": torch.nn.Embedding(c.vocab_size, c.embed),
        "ngram_embedding": torch.nn.Embedding(c.buckets, c.embed),
        "rnn": torch.nn.LSTM(c.embed, c.hidden, bidirectional=True),
        "head": torch.nn.Linear(2 * c.hidden, c.num_labels),
        "wide": torch.nn.EmbeddingBag(c.wide_buckets, c.num_labels, mode="sum")})
    module.load_state_dict({k: torch.from_numpy(v) for k, v in ck.tensors.items()}, strict=True)
    model = ck.build_model(np.float64)
    ids, lengths, labels = batch("classify", np.random.default_rng(0))
    ids, labels = ids % c.vocab_size, labels % c.num_labels
    logits_t, _ = torch_reference(model, ids, lengths, labels, wide_bags=(*reference_bags(model, ids, lengths), None))
    np.testing.assert_allclose(model.forward(ids, lengths)[0], logits_t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bad, message", [
    (dict(wide_ngrams=9), "wide_ngrams must be from 0"), (dict(wide_ngrams=-1), "wide_ngrams"),
    (dict(wide_ngrams=3, task="tag"), "classifiers only"), (dict(wide_buckets=0), "wide_buckets"),
    (dict(wide_dropout=1.0), "wide_dropout"), (dict(wide_dropout=True), "wide_dropout")])
def test_bad_settings_are_one_clear_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        SeqModelConfig(vocab_size=V, num_labels=3, **bad).validate()
