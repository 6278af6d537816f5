"""The encoder-decoder's training step around the model: the split products agree with NumPy's, a batch's
loss and gradient do not depend on its row order or on how many blocks the work is split into, label
smoothing is torch's and its gradient its finite differences, and `charlm seq2seq train`'s own defaults."""
import numpy as np
import pytest
from test_seq2seq_model import assert_gradient_matches_differences, batch, make

import charlm.runtime as rt
from charlm.seq2seq.products import t_times, times


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nchunks", [1, 2, 3, 50])
def test_split_products_equal_numpy(dtype, nchunks):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((7, 5, 6)).astype(dtype)
    W = rng.standard_normal((9, 6)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(times(A, W.T, nchunks), A @ W.T, rtol=tol, atol=tol)
    np.testing.assert_allclose(times(A[:, :, :4], W[:4, :4], nchunks), A[:, :, :4] @ W[:4, :4], rtol=tol, atol=tol)
    flat = A.reshape(-1, 6)
    B = rng.standard_normal((35, 4)).astype(dtype)
    np.testing.assert_allclose(t_times(flat, B, nchunks), flat.T @ B, rtol=tol, atol=tol)
    assert times(A, W.T, nchunks).dtype == dtype and t_times(flat, B, nchunks).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1024, 256), (256, 768), (7, 45), (3, 1)])
def test_packed_panels_are_the_weights_in_panel_rows_padded_with_zeros(dtype, shape):
    from charlm.kernels.tile import pack_panels, panel_width
    from charlm.seq2seq.decoder import _pack, _panels

    W = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    NR = panel_width(W)
    for transposed in (False, True):
        B = W.T if transposed else W                          # (K, N)
        K, N = B.shape
        padded = np.zeros((K, -(-N // NR) * NR), dtype)
        padded[:, :N] = B
        want = padded.reshape(K, -1, NR).transpose(1, 0, 2)  # panel j is padded[:, j*NR:(j+1)*NR]
        for _ in range(2):                                    # the second on reused, unzeroed memory
            np.testing.assert_array_equal(pack_panels(W, transposed), want)
        for nchunks in (1, 2, 3):                             # the decoder's threads pack their share each
            P = _panels(W, transposed, True)
            P[...] = np.nan
            for k in range(nchunks):
                _pack(k, nchunks, W, transposed, P)
            np.testing.assert_array_equal(P, want)
    assert _panels(W, False, False).size == 0


def test_freed_memory_is_kept_once_where_glibc_allows():
    import platform
    import sys

    from charlm.seq2seq.heap import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
    assert first == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def loss_and_grads(model, args, rng_seed=None):
    rng = None if rng_seed is None else np.random.default_rng(rng_seed)
    loss = model.loss_and_grad(*args, rng)
    return loss, model.grad_flat.copy()


@pytest.mark.parametrize("kind", ["general", "additive", "none"])
def test_a_batch_gives_the_same_gradient_in_any_row_order_and_any_split(kind, monkeypatch):
    m = make("lstm", kind, 2)
    src, sl, ti, to, tl = batch()
    loss, grad = loss_and_grads(m, (src, sl, ti, to, tl))
    perm = np.array([3, 0, 4, 2, 1])
    shuffled = (src[:, perm], sl[perm], ti[:, perm], to[:, perm], tl[perm])
    loss_p, grad_p = loss_and_grads(m, shuffled)
    np.testing.assert_allclose(loss_p, loss, rtol=1e-13)
    np.testing.assert_allclose(grad_p, grad, rtol=1e-11, atol=1e-14)
    for n in (1, 3):
        monkeypatch.setattr(rt, "_chunks", n)
        loss_n, grad_n = loss_and_grads(m, (src, sl, ti, to, tl))
        np.testing.assert_allclose(loss_n, loss, rtol=1e-13)
        np.testing.assert_allclose(grad_n, grad, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("kind", ["general", "additive"])
def test_label_smoothing_is_torchs(kind):
    from dataclasses import replace

    from seq2seq_torch import torch_loss_and_grads

    from charlm.seq2seq.model import Seq2SeqModel

    base = make("lstm", kind)
    m = Seq2SeqModel(replace(base.config, label_smoothing=0.1), np.float64).loaded(base.state_dict())
    args = batch()
    loss = m.loss_and_grad(*args)
    plain = base.loss_and_grad(*args)
    loss_t, _, _, grads_t = torch_loss_and_grads(m.config, m.state_dict(), *args)
    assert loss != pytest.approx(plain)
    np.testing.assert_allclose(loss, loss_t, rtol=1e-12)
    for name, g in m.grads.items():
        np.testing.assert_allclose(g, grads_t[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_label_smoothing_gradient_matches_finite_differences():
    from dataclasses import replace

    from charlm.seq2seq.model import Seq2SeqModel

    base = make("gru", "general")
    m = Seq2SeqModel(replace(base.config, label_smoothing=0.2), np.float64).loaded(base.state_dict())
    assert_gradient_matches_differences(m, batch(), ("out.weight", "out.bias", "combine.weight", "tgt_embedding.weight",
                                                     "encoder.weight_hh_l0"))


@pytest.mark.parametrize("cell, kind", [("lstm", "general"), ("gru", "additive")])
@pytest.mark.parametrize("chunks", [1, 2])
def test_blocks_of_many_rows_match_the_torch_module(cell, kind, chunks, monkeypatch):
    """Blocks of a register tile's rows or more (the decoder's packed products; fewer rows take BLAS)."""
    from seq2seq_torch import torch_loss_and_grads

    monkeypatch.setattr(rt, "_chunks", chunks)
    m = make(cell, kind)
    rng = np.random.default_rng(8)
    B = 24
    sl, tl = rng.integers(1, 7, B), rng.integers(1, 8, B)
    args = (rng.integers(0, 7, (6, B)), sl, rng.integers(0, 9, (7, B)), rng.integers(0, 9, (7, B)), tl)
    loss = m.loss_and_grad(*args)
    loss_t, _, _, grads_t = torch_loss_and_grads(m.config, m.state_dict(), *args)
    np.testing.assert_allclose(loss, loss_t, rtol=1e-12)
    for name, g in m.grads.items():
        np.testing.assert_allclose(g, grads_t[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_seq2seq_train_has_its_own_defaults_and_given_values_win():
    from dataclasses import asdict

    from cli_helpers import invoke

    from charlm.seq2seq.config import DEFAULTS, Seq2SeqConfig, make_configs
    from charlm.seqtask.config import SeqTrainConfig

    model, train = make_configs({})
    chosen = asdict(model) | asdict(train)
    assert {k: chosen[k] for k in DEFAULTS} == DEFAULTS
    plain = asdict(Seq2SeqConfig()) | asdict(SeqTrainConfig())
    assert all(plain[k] != v for k, v in DEFAULTS.items())   # neither the plain model's nor the classifiers'
    model, train = make_configs({"lr": 0.01, "clip_norm": None})
    assert train.lr == 0.01 and train.clip_norm == DEFAULTS["clip_norm"]
    model, _ = make_configs({}, autoencode=True)
    assert model.dropout == 0 and model.label_smoothing == 0
    assert make_configs({"dropout": 0.3}, autoencode=True)[0].dropout == 0.3
    text = " ".join(invoke("seq2seq", "train", "--help").stdout.split())
    for name, value in DEFAULTS.items():
        after = text[text.index("--" + name.replace("_", "-") + " "):]
        assert after[after.index("[default:"):].startswith(f"[default: {value}]"), name


@pytest.mark.parametrize("B, nchunks", [(7, 1), (64, 2), (5, 2), (10, 3), (2, 4)])
def test_decoder_rows_are_dealt_evenly_to_the_blocks(B, nchunks):
    from charlm.kernels.parallel import chunk
    from charlm.seq2seq.training_pass import balanced_rows

    lengths = np.random.default_rng(B).integers(1, 12, B)
    order = balanced_rows(lengths, nchunks)
    assert sorted(order.tolist()) == list(range(B))
    steps = []
    for k in range(nchunks):
        block = lengths[order[slice(*chunk(k, B, nchunks))]]
        assert np.all(np.diff(block) <= 0)          # each block longest first
        steps.append(block.sum())
    assert max(steps) - min(steps) <= lengths.max()
