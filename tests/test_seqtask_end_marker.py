"""The end marker of classifiers: where it goes, PyTorch on identical weights (logits and every
gradient), finite differences through each pooling, padding, older checkpoints without the
setting, bad settings, and a run trained and used through the CLI."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.config import from_dict
from charlm.errors import ConfigError
from charlm.seqtask import store
from charlm.seqtask.config import SeqModelConfig
from charlm.seqtask.model import SeqModel
from charlm.seqtask.ngrams import append_end

from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch as batch
from test_classify import toy_examples, train_toy, write_tsv
from test_seqtask_ngrams import torch_reference

V = 7


def marked_model(pooling="final", ngrams=3, seed=0):
    config = SeqModelConfig(vocab_size=V, num_labels=3, embed=3, hidden=4, layers=2, dropout=0.0,
                            pooling=pooling, ngrams=ngrams, buckets=11, end_marker=True)
    model = SeqModel(config, np.float64).init_weights(np.random.default_rng(seed))
    model.flat[...] = np.random.default_rng(seed + 1).uniform(-0.6, 0.6, model.size)
    return model


def test_the_marker_follows_each_sequence():
    ids = np.array([[1, 2, 3], [4, 5, 6], [0, 2, 0]])  # lengths 1, 3, 2 (padding: anything)
    marked, lengths = append_end(ids, np.array([1, 3, 2]), V)
    assert lengths.tolist() == [2, 4, 3]
    assert marked[:, 0].tolist()[:2] == [1, V] and marked[:, 1].tolist() == [2, 5, 2, V]
    assert marked[:, 2].tolist()[:3] == [3, 6, V]


def test_matches_pytorch_with_the_marker_as_one_more_token():
    """PyTorch reads each word with id V appended (an nn.Embedding of V + 1 rows, loaded strictly)."""
    model = marked_model()
    ids, lengths, labels = batch("classify", np.random.default_rng(3), lengths=(4, 6, 1, 3, 6))
    longer = np.zeros((ids.shape[0] + 1, ids.shape[1]), np.int64)
    for b, n in enumerate(lengths):
        longer[:n + 1, b] = list(ids[:n, b]) + [V]
    logits_t, grads_t = torch_reference(model, longer, lengths + 1, labels)
    model.loss_and_grad(ids, lengths, labels)
    logits, _ = model.forward(ids, lengths)
    np.testing.assert_allclose(logits, logits_t, rtol=0, atol=1e-12)
    assert model.params["embedding.weight"].shape == (V + 1, 3) and np.abs(model.grads["embedding.weight"][V]).sum() > 0
    for name, grad in model.grads.items():
        np.testing.assert_allclose(grad, grads_t[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("pooling, ngrams", [("final", 3), ("mean", 4), ("max", 2), ("final", 0)])
def test_gradients_match_finite_differences(pooling, ngrams):
    model = marked_model(pooling, ngrams)
    ids, lengths, labels = batch("classify", np.random.default_rng(2))
    model.loss_and_grad(ids, lengths, labels)

    def loss():
        logits, _ = model.forward(ids, lengths)
        return model.loss(logits, labels, lengths)[0]

    assert_gradient_matches_finite_diff(loss, model.flat, model.grad_flat.copy(), f"end marker {pooling}",
                                        rtol=1e-5, atol=1e-8)


def test_padding_changes_nothing():
    model = marked_model("mean", 4)
    rng = np.random.default_rng(4)
    ids, lengths, labels = batch("classify", rng)
    loss = model.loss_and_grad(ids, lengths, labels)
    grad = model.grad_flat.copy()
    ids2 = rng.integers(0, V, (ids.shape[0] + 2, ids.shape[1]))
    for b, n in enumerate(lengths):
        ids2[:n, b] = ids[:n, b]
    assert model.loss_and_grad(ids2, lengths, labels) == loss
    np.testing.assert_array_equal(model.grad_flat, grad)


def test_a_checkpoint_stored_before_the_setting_loads_as_it_was(tmp_path):
    """A stored configuration without ``end_marker`` is a model without one (V embedding rows)."""
    from safetensors.numpy import load_file, save_file

    trainer, _ = train_toy(tmp_path, epochs=1, ngrams=3)
    path = tmp_path / "run" / store.MODEL_FILE
    before = store.load(path)
    header_meta = _metadata(path)
    config = json.loads(header_meta["charlm.seq_config"])
    del config["end_marker"]
    save_file(load_file(str(path)), str(path), metadata=header_meta | {"charlm.seq_config": json.dumps(config)})
    after = store.load(path)
    assert after.config.end_marker is False and after.config == before.config
    assert after.tensors["embedding.weight"].shape[0] == after.config.vocab_size
    assert from_dict(SeqModelConfig, config).end_marker is False


def _metadata(path):
    from charlm import checkpoint as ckpt

    header, _ = ckpt.read_header(path)
    return header["__metadata__"]


@pytest.mark.parametrize("bad, message", [(dict(task="tag"), "end_marker is for classifiers only"),
                                          (dict(end_marker="yes"), "end_marker must be true or false")])
def test_bad_settings_are_one_clear_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        SeqModelConfig(vocab_size=V, num_labels=3, **({"end_marker": True} | bad)).validate()


def test_cli_trains_and_predicts_with_the_marker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    write_tsv(tmp_path / "train.tsv", toy_examples(200))
    write_tsv(tmp_path / "dev.tsv", toy_examples(60, 1))
    r = CliRunner().invoke(main, ["classify", "train", "train.tsv", "--dev", "dev.tsv", "--epochs", "6",
                                  "--hidden", "12", "--embed", "6", "--lr", "0.02", "--warmup-steps", "0", "--batch-size", "16",
                                  "--dropout", "0", "--ngrams", "3", "--end-marker", "--run-dir", "run"])
    assert r.exit_code == 0, r.output
    assert "end marker" in r.stderr and store.load(tmp_path / "run").config.end_marker is True
    r = CliRunner().invoke(main, ["classify", "predict", "run", "aei", "bcdf", "--json", "-k", "1"])
    assert [json.loads(line)["labels"][0]["label"] for line in r.stdout.splitlines()] == ["vowel", "cons"]
    r = CliRunner().invoke(main, ["tag", "train", "train.tsv", "--end-marker"])
    assert r.exit_code != 0 and "No such option '--end-marker'" in r.stderr
