"""The auxiliary language-model loss (--lm-weight): PyTorch on identical weights (loss and every
gradient), float64 finite differences, padding, bad values, and configurations stored before the
option load and initialise as they did."""
import dataclasses

import numpy as np
import pytest

from charlm.config import from_dict
from charlm.errors import ConfigError
from charlm.seqtask.config import SeqModelConfig
from charlm.seqtask.lm_loss import lm_targets
from charlm.seqtask.model import SeqModel
from charlm.seqtask.ngrams import ngram_ids

from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch
from test_seqtask_ngrams import assert_padding_changes_nothing


def lm_model(task="classify", cell="lstm", ngrams=0, lm_weight=0.7, layers=1, seed=0):
    config = SeqModelConfig(task=task, cell=cell, vocab_size=7, num_labels=3, embed=3, hidden=4, layers=layers,
                            dropout=0.0, pooling="final" if task == "classify" else "mean", ngrams=ngrams,
                            buckets=11, lm_weight=lm_weight)
    model = SeqModel(config, np.float64).init_weights(np.random.default_rng(seed))
    model.flat[...] = np.random.default_rng(seed + 1).uniform(-0.6, 0.6, model.size)
    return model


def test_targets_are_the_neighbours_and_the_boundary_past_either_edge():
    ids = np.array([[1, 4], [2, 5], [3, 0]])             # columns "123" and "45" (one pad)
    lengths = np.array([3, 2])
    np.testing.assert_array_equal(lm_targets(ids, lengths, 9, 0), [[2, 5], [3, 9], [9, 9]])
    np.testing.assert_array_equal(lm_targets(ids, lengths, 9, 1), [[9, 9], [1, 4], [2, 9]])


def torch_reference(model, ids, lengths, labels):
    """nn.Embedding (+ hashed n-grams), packed bidirectional nn.LSTM, nn.Linear on both final
    states, and nn.Linear language-model heads on the padded outputs, the next (previous) token
    read off the ids: (loss, gradients by name)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    c = model.config
    V1, H = c.vocab_size + 1, c.hidden
    parts = {"embedding": torch.nn.Embedding(c.vocab_size, c.embed),
             "rnn": torch.nn.LSTM(c.embed, H, num_layers=c.layers, bidirectional=True),
             "head": torch.nn.Linear(2 * H, c.num_labels), "lm_head": torch.nn.Linear(H, V1)}
    if c.ngrams:
        parts["ngram_embedding"] = torch.nn.Embedding(c.buckets, c.embed)
    else:
        parts["lm_head_reverse"] = torch.nn.Linear(H, V1)
    module = torch.nn.ModuleDict(parts).double()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=True)
    x = module["embedding"](torch.from_numpy(ids))
    if c.ngrams:
        grams = torch.from_numpy(ngram_ids(ids, c.vocab_size, c.ngrams, c.buckets))
        for k in range(grams.shape[0]):
            x = x + module["ngram_embedding"](grams[k].clamp(min=0)) * (grams[k] >= 0).double()[:, :, None]
    packed, (h_n, _) = module["rnn"](pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False))
    out, _ = pad_packed_sequence(packed)                  # (T, B, 2H), the caller's order
    loss = torch.nn.functional.cross_entropy(module["head"](torch.cat([h_n[-2], h_n[-1]], 1)),
                                             torch.from_numpy(labels))
    T, B = ids.shape
    lm = 0.0
    for d, name in enumerate(("lm_head", "lm_head_reverse")[:1 if c.ngrams else 2]):
        nll, count = 0.0, 0
        for b in range(B):
            n = int(lengths[b])
            seq = ids[:n, b].tolist()
            targets = seq[1:] + [c.vocab_size] if d == 0 else [c.vocab_size] + seq[:-1]
            logits = module[name](out[:n, b, d * H:(d + 1) * H])
            nll = nll + torch.nn.functional.cross_entropy(logits, torch.tensor(targets), reduction="sum")
            count += n
        lm = lm + nll / count
    total = loss + c.lm_weight * lm
    total.backward()
    return float(total.detach()), {name: p.grad.numpy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("ngrams", [0, 3])
def test_matches_pytorch_on_identical_weights(ngrams):
    """Without n-grams both directions carry a head; with them the forward one only."""
    model = lm_model(ngrams=ngrams)
    assert ("lm_head_reverse.weight" in model.params) == (not ngrams)
    ids, lengths, labels = tiny_batch("classify", np.random.default_rng(3), lengths=(4, 6, 1, 3, 6))
    loss_t, grads_t = torch_reference(model, ids, lengths, labels)
    loss = model.loss_and_grad(ids, lengths, labels)
    assert loss == pytest.approx(loss_t, rel=1e-12)
    assert set(model.grads) == set(grads_t)
    for name, grad in model.grads.items():
        np.testing.assert_allclose(grad, grads_t[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("task, cell, ngrams, layers", [
    ("classify", "lstm", 0, 2), ("classify", "gru", 4, 1), ("tag", "lstm", 3, 1), ("tag", "rnn", 0, 2)])
def test_gradcheck_with_the_language_model_loss(task, cell, ngrams, layers):
    model = lm_model(task, cell, ngrams=ngrams, layers=layers)
    ids, lengths, labels = tiny_batch(task, np.random.default_rng(2))

    def loss():
        return model.loss_and_grad(ids, lengths, labels)

    task_only = model.loss(model.forward(ids, lengths)[0], labels, lengths)[0]
    value = loss()
    assert value > task_only                              # the language-model term is in
    assert_gradient_matches_finite_diff(loss, model.flat, model.grad_flat.copy(), "lm loss",
                                        rtol=1e-5, atol=1e-8)


def test_padding_changes_nothing():
    assert_padding_changes_nothing(lm_model("tag", "gru", ngrams=3), np.random.default_rng(4))


def test_off_by_default_and_stored_configurations_load_as_before():
    """A configuration saved before the option (no lm_weight, no member_salts) loads with the
    loss off; off, there are no heads and the initial weights are the ones drawn before."""
    stored = dataclasses.asdict(SeqModelConfig(vocab_size=7, num_labels=3, embed=3, hidden=4))
    del stored["lm_weight"], stored["member_salts"]
    config = from_dict(SeqModelConfig, stored).validate()
    assert config.lm_weight == 0.0 and config.member_salts is False
    plain = SeqModel(config).init_weights(np.random.default_rng(0))
    assert not any(name.startswith("lm_head") for name in plain.params)
    with_lm = SeqModel(dataclasses.replace(config, lm_weight=0.5)).init_weights(np.random.default_rng(0))
    assert with_lm.params["lm_head.weight"].shape == (8, 4)
    for name, value in plain.params.items():
        np.testing.assert_array_equal(with_lm.params[name], value)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1"])
def test_bad_weights_are_one_clear_error(bad):
    with pytest.raises(ConfigError, match="lm_weight must be a finite number >= 0"):
        SeqModelConfig(vocab_size=7, num_labels=3, lm_weight=bad).validate()
