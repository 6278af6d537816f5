"""The encoder-decoder with attention: against the torch.nn module a user would write (logits, loss,
attention weights, every gradient), finite differences through the decoder and the attention,
padding that changes nothing, and decoding."""
import numpy as np
import pytest

from charlm.seq2seq import attention
from charlm.seq2seq.decoder import run_backward, run_forward
from charlm.seq2seq.model import Seq2SeqConfig, Seq2SeqModel
from gradcheck import numerical_gradient

SRC_LEN = np.array([5, 3, 6, 2, 4])
TGT_LEN = np.array([4, 6, 1, 5, 3])   # another order than the sources': the two sorts differ


def make(cell="lstm", kind="general", layers=1, bidirectional=True, dropout=0.0, dtype=np.float64, seed=0):
    c = Seq2SeqConfig(src_vocab=7, tgt_vocab=9, cell=cell, embed=4, hidden=5, layers=layers,
                      bidirectional=bidirectional, attention=kind, dropout=dropout)
    return Seq2SeqModel(c, dtype).init_weights(np.random.default_rng(seed))


def batch(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 7, (6, 5)), SRC_LEN, rng.integers(0, 9, (7, 5)), rng.integers(0, 9, (7, 5)), TGT_LEN)


def valid_mask(lengths, T):
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kind", ["general", "additive", "none"])
@pytest.mark.parametrize("layers", [1, 2])
def test_matches_the_torch_module(cell, kind, layers):
    from seq2seq_torch import torch_loss_and_grads

    m = make(cell, kind, layers)
    src, sl, ti, to, tl = batch()
    logits, alpha, _ = m.forward(src, sl, ti, tl)
    loss = m.loss_and_grad(src, sl, ti, to, tl)
    loss_t, logits_t, alpha_t, grads_t = torch_loss_and_grads(m.config, m.state_dict(), src, sl, ti, to, tl)
    valid = valid_mask(tl, 6)
    np.testing.assert_allclose(loss, loss_t, rtol=1e-12)
    np.testing.assert_allclose(logits[valid], logits_t[valid], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(alpha[valid], alpha_t[valid], rtol=1e-10, atol=1e-12)
    assert np.all(alpha[valid][:, 6:] == 0) and np.all(logits[~valid] == 0)
    assert set(grads_t) == set(m.grads)
    for name, g in m.grads.items():
        np.testing.assert_allclose(g, grads_t[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_dropout_masks_match_the_torch_module():
    """Dropout on both embeddings and on the attentional vector: the masks charlm drew, given to
    torch, give the same loss and gradients (the vector fed to the next step is the one before dropout)."""
    from seq2seq_torch import torch_loss_and_grads

    m = make("lstm", "additive", dropout=0.3)
    src, sl, ti, to, tl = batch()
    _, _, state = m.forward(src, sl, ti, tl, rng=np.random.default_rng(3))
    src_back = np.argsort(state.enc.order, kind="stable")
    tgt_back = np.argsort(state.order, kind="stable")
    masks = {"src": state.enc.keep[:, src_back], "tgt": state.keep[:, tgt_back], "out": state.drop[:, tgt_back]}
    loss = m.loss_and_grad(src, sl, ti, to, tl, rng=np.random.default_rng(3))
    loss_t, _, _, grads_t = torch_loss_and_grads(m.config, m.state_dict(), src, sl, ti, to, tl, masks)
    np.testing.assert_allclose(loss, loss_t, rtol=1e-12)
    for name, g in m.grads.items():
        np.testing.assert_allclose(g, grads_t[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell, kind, bidirectional", [("lstm", "general", True), ("gru", "additive", True),
                                                       ("rnn", "general", False), ("lstm", "additive", False),
                                                       ("lstm", "none", True), ("gru", "none", False)])
def test_loss_gradient_matches_finite_differences(cell, kind, bidirectional):
    """A few random coordinates of every parameter tensor, through the whole model."""
    assert_gradient_matches_differences(make(cell, kind, 2, bidirectional), batch())


def assert_gradient_matches_differences(m, args, names=None, seed=4):
    """Three random coordinates of each parameter tensor (of ``names``: all by default)."""
    m.loss_and_grad(*args)
    rng = np.random.default_rng(seed)
    picks = {name: rng.choice(p.size, size=min(3, p.size), replace=False) for name, p in m.params.items()
             if names is None or name in names}
    analytic = {name: m.grads[name].reshape(-1)[j].copy() for name, j in picks.items()}
    for name, j_all in picks.items():
        p = m.params[name]
        for i, j in enumerate(j_all):
            flat = p.reshape(-1)
            old = flat[j]
            flat[j] = old + 1e-6
            up = m.loss_and_grad(*args)
            flat[j] = old - 1e-6
            down = m.loss_and_grad(*args)
            flat[j] = old
            np.testing.assert_allclose(analytic[name][i], (up - down) / 2e-6, rtol=1e-6, atol=1e-9, err_msg=f"{name}[{j}]")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kind", ["general", "additive"])
def test_decoder_and_attention_match_finite_differences(cell, kind):
    """The decoder loop alone, with loss sum(w * a_t) over the running steps: its gradients wrt the
    encoder outputs (through the context and the keys), the initial states, and the attention's
    and the cell's weights in its backward, against central differences."""
    m = make(cell, kind)
    p, rng = m.params, np.random.default_rng(5)
    S, B, T, H, F = 6, 4, 5, 5, 10
    src_len, tgt_len = np.array([3, 6, 1, 4]), np.array([5, 4, 4, 2])
    memory = rng.standard_normal((S, B, F)) * (np.arange(S)[:, None] < src_len)[:, :, None]
    h0, c0, feed0 = (rng.standard_normal((B, H)) * 0.5 for _ in range(3))
    emb_share = rng.standard_normal((T, B, m.cell.gates * H)) * 0.5
    w = rng.standard_normal((T, B, H)) * valid_mask(tgt_len, T)[:, :, None]
    drop = np.zeros((0, 0, 0))

    def forward():
        keys = attention.keys(kind, memory, p)
        return keys, run_forward(m.cell, m.kind, p, emb_share.copy(), memory, keys, src_len, tgt_len, h0, c0,
                                 feed0, drop, 2)

    def loss():
        return float(np.sum(w * np.where(w != 0, forward()[1]["feed"], 0)))

    keys, fwd = forward()
    g = run_backward(m.cell, m.kind, p, fwd, w.copy(), memory, keys, src_len, tgt_len, drop, 2)
    grads = {name: np.zeros_like(v) for name, v in p.items()}
    denc = g["denc"] + attention.keys_backward(kind, memory, g["dkeys"], p, grads)
    picks = [(0, 1), (2, 1), (3, 3), (0, 0)]   # (s, b), s < src_len[b]
    for s, b in picks:
        numeric = numerical_gradient(loss, memory[s, b])
        np.testing.assert_allclose(denc[s, b], numeric, rtol=1e-6, atol=1e-9, err_msg=f"enc[{s}, {b}]")
    np.testing.assert_allclose(g["dh0"], numerical_gradient(loss, h0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g["dfeed0"], numerical_gradient(loss, feed0), rtol=1e-6, atol=1e-9)
    if m.cell.states == 2:
        np.testing.assert_allclose(g["dc0"], numerical_gradient(loss, c0), rtol=1e-6, atol=1e-9)
    weight = "attention.query.weight" if kind == "general" else "attention.key.weight"
    np.testing.assert_allclose(grads[weight], numerical_gradient(loss, p[weight]), rtol=1e-6, atol=1e-9)
    if kind == "additive":
        valid = valid_mask(tgt_len, T)
        dq = g["dq"][valid].T @ fwd["hs"][1:][valid]
        np.testing.assert_allclose(dq, numerical_gradient(loss, p["attention.query.weight"]), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(g["dv"], numerical_gradient(loss, p["attention.v.weight"])[0], rtol=1e-6,
                                   atol=1e-9)


@pytest.mark.parametrize("cell, kind", [("lstm", "general"), ("gru", "additive")])
def test_padding_is_never_read(cell, kind):
    """Garbage ids and NaN-free but absurd ids at padded positions change no loss, no gradient."""
    m = make(cell, kind, 2)
    src, sl, ti, to, tl = batch()
    loss = m.loss_and_grad(src, sl, ti, to, tl)
    grads = m.grad_flat.copy()
    logits, alpha, _ = m.forward(src, sl, ti, tl)
    junk_src = np.where(valid_mask(sl, 6), src, -10 ** 9)
    junk_in = np.where(valid_mask(tl, 7), ti, 10 ** 9)
    junk_out = np.where(valid_mask(tl, 7), to, -1)
    junk_src = np.concatenate([junk_src, np.full((3, 5), 99)])      # longer than any source
    assert m.loss_and_grad(junk_src, sl, junk_in, junk_out, tl) == loss
    np.testing.assert_array_equal(m.grad_flat, grads)
    logits2, alpha2, _ = m.forward(junk_src, sl, junk_in, tl)
    np.testing.assert_array_equal(logits2, logits)
    np.testing.assert_array_equal(alpha2, alpha)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-4)])
def test_float32_agrees_with_float64(dtype, tol):
    m64 = make("gru", "additive", 2)
    m32 = make("gru", "additive", 2, dtype=dtype)
    m32.flat[...] = m64.flat
    args = batch()
    assert abs(m32.loss_and_grad(*args) - m64.loss_and_grad(*args)) < tol
    np.testing.assert_allclose(m32.grad_flat, m64.grad_flat, rtol=0, atol=tol)


def test_state_dict_loads_strictly_into_the_torch_module():
    from seq2seq_torch import TorchSeq2Seq
    import torch

    for cell, kind in (("lstm", "additive"), ("gru", "general")):
        m = make(cell, kind, 2)
        module = TorchSeq2Seq(m.config).double()
        assert [(k, tuple(v.shape)) for k, v in module.state_dict().items()] == m.shapes
        module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()}, strict=True)
        twin = Seq2SeqModel(m.config, np.float64)
        twin.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
        np.testing.assert_array_equal(twin.flat, m.flat)
        with pytest.raises(KeyError):
            twin.load_state_dict({k: v for k, v in m.state_dict().items() if k != "out.bias"})


@pytest.mark.parametrize("cell, kind", [("lstm", "additive"), ("gru", "general")])
def test_decoder_kernels_never_read_padding_and_split_rows_alike(cell, kind):
    """NaN at every padded step of the inputs and of the gradient from above, and at every source
    position past a row's length: the running rows' results are those of a clean run, whatever the
    number of row blocks (more blocks than rows included)."""
    m = make(cell, kind)
    p, rng = m.params, np.random.default_rng(6)
    S, B, T, H, F = 6, 5, 5, 5, 10
    src_len, tgt_len = np.array([3, 6, 1, 4, 2]), np.array([5, 4, 4, 2, 1])
    src_pad, tgt_pad = ~valid_mask(src_len, S), ~valid_mask(tgt_len, T)
    memory = rng.standard_normal((S, B, F))
    xp = rng.standard_normal((T, B, m.cell.gates * H)) * 0.5
    dfeed = rng.standard_normal((T, B, H))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    drop = (rng.random((T, B, H)) < 0.8) / 0.8

    def run(memory, xp, dfeed, nchunks):
        keys = attention.keys(kind, memory, p)
        fwd = run_forward(m.cell, m.kind, p, xp.copy(), memory, keys, src_len, tgt_len, h0, c0, np.zeros((B, H)),
                          drop, nchunks)
        g = run_backward(m.cell, m.kind, p, fwd, dfeed.copy(), memory, keys, src_len, tgt_len, drop, nchunks)
        return fwd, g

    clean_mem = np.where(src_pad[:, :, None], 0, memory)
    ref_f, ref_g = run(clean_mem, xp, np.where(tgt_pad[:, :, None], 0, dfeed), 1)
    nan_mem = np.where(src_pad[:, :, None], np.nan, memory)
    nan_xp = np.where(tgt_pad[:, :, None], np.nan, xp)
    nan_dfeed = np.where(tgt_pad[:, :, None], np.nan, dfeed)
    run_valid = ~tgt_pad
    for nchunks in (1, 2, 3, 7):
        fwd, g = run(nan_mem, nan_xp, nan_dfeed, nchunks)
        for name in ("feed", "alpha", "hc"):
            np.testing.assert_allclose(fwd[name][run_valid], ref_f[name][run_valid], rtol=1e-13, atol=1e-14)
        for name in ("dxp", "dpre"):
            np.testing.assert_allclose(g[name][run_valid], ref_g[name][run_valid], rtol=1e-12, atol=1e-14)
        for name in ("dh0", "dfeed0", "dv"):
            np.testing.assert_allclose(g[name], ref_g[name], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g["denc"][~src_pad], ref_g["denc"][~src_pad], rtol=1e-12, atol=1e-14)
        assert np.all(g["denc"][src_pad] == 0) and np.all(g["dkeys"][src_pad] == 0)
