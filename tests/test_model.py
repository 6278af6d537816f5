"""The whole model: finite-difference gradients of the loss, and agreement with PyTorch modules."""
import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff
from tiny_models import batch, make_model

from charlm.config import ModelConfig
from charlm.lm.model import Model, parameter_shapes

CELLS = ["lstm", "gru", "rnn"]


def mean_loss(model, x, y, state, seed):
    loss, _ = model.loss_and_grad(x, y, state, np.random.default_rng(seed))
    return loss


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("V", [5, 11])  # 5 <= T*B uses the folded embedding table, 11 > T*B the gather path
def test_model_gradient_matches_finite_differences(cell, layers, V):
    model = make_model(cell, layers, V=V)
    x, y = batch(V)
    state = 0.3 * np.random.default_rng(9).standard_normal(model.init_state(2).shape)
    mean_loss(model, x, y, state, 0)
    assert_gradient_matches_finite_diff(lambda: mean_loss(model, x, y, state, 0), model.flat,
                                        model.grad_flat.copy(), "every parameter", rtol=1e-5)


@pytest.mark.parametrize("cell, options", [("lstm", {"dropout": 0.3}), ("lstm", {"tie": True, "E": 3, "H": 3}),
                                           ("lstm", {"weight_dropout": 0.4}),
                                           ("gru", {"weight_dropout": 0.3, "dropout": 0.2}),
                                           ("rnn", {"weight_dropout": 0.5})])
def test_model_gradient_with_dropout_and_tied_weights(cell, options):
    model = make_model(cell, 2, V=6, **options)
    x, y = batch(6)
    state = model.init_state(2)
    mean_loss(model, x, y, state, 42)  # same seed each call: same dropout masks
    assert_gradient_matches_finite_diff(lambda: mean_loss(model, x, y, state, 42), model.flat,
                                        model.grad_flat.copy(), "every parameter", rtol=1e-5)


def test_dropout_masks_hold_over_time_and_drop_connect_masks_w_hh():
    model = make_model("lstm", 2, V=6, H=8, dropout=0.5, weight_dropout=0.5)
    x, _ = batch(6, T=5, B=3)
    _, _, cache = model.forward(x, model.init_state(3), train=True, rng=np.random.default_rng(1))
    _, _, layers, (_, top_mask), recurrent, _ = cache
    for mask in (layers[1][0][1], top_mask):  # layer 2's input, the decoder's input: (T*B, H)
        per_step = mask.reshape(5, 3, 8)
        assert (per_step == per_step[0]).all() and set(np.unique(per_step)) == {0.0, 2.0}
    W_used, w_mask = recurrent[0]
    np.testing.assert_array_equal(W_used, model.params["rnn.weight_hh_l0"] * w_mask)
    assert 0.2 < (w_mask == 0).mean() < 0.8
    _, _, cache = model.forward(x, model.init_state(3))  # evaluation: no masks at all
    assert cache[3][1] is None and all(m is None for _, m in cache[4])


def test_weight_dropout_needs_a_w_hh():
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match="weight_dropout"):
        ModelConfig(cell="jordan", vocab_size=5, weight_dropout=0.2).validate()


def torch_reference(model):
    """nn.Embedding + nn.LSTM/GRU/RNN + nn.Linear holding the model's weights (strict load)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    c = model.config

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(c.vocab_size, c.embed)
            cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.cell]
            self.rnn = cls(c.embed, c.hidden, num_layers=c.layers)
            self.decoder = nn.Linear(c.hidden, c.vocab_size)
            if c.tie_weights:
                self.decoder.weight = self.encoder.weight

        def forward(self, x, h):
            out, h = self.rnn(self.encoder(x), h)
            return self.decoder(out), h

    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    ref = RNNModel().to(dtype)
    ref.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()}, strict=True)
    return torch, ref


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-8), (np.float32, 2e-4)])
def test_model_agrees_with_pytorch(cell, dtype, rtol):
    V, T, B = 13, 7, 3
    model = make_model(cell, 2, V=V, E=6, H=8, dtype=dtype)
    torch, ref = torch_reference(model)
    x, y = batch(V, T, B)
    state = model.init_state(B)
    loss, new_state = model.loss_and_grad(x, y, state)

    tx = torch.tensor(x)
    h0 = torch.zeros(2, B, 8, dtype=ref.decoder.weight.dtype)
    logits, h = ref(tx, (h0, h0.clone()) if cell == "lstm" else h0)
    tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.tensor(y).reshape(-1))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=rtol)
    h_T = h[0] if cell == "lstm" else h
    np.testing.assert_allclose(new_state[:, 0], h_T.detach().numpy(), rtol=rtol, atol=rtol * 1e-2)
    if cell == "lstm":
        np.testing.assert_allclose(new_state[:, 1], h[1].detach().numpy(), rtol=rtol, atol=rtol * 1e-2)
    for name, param in ref.named_parameters():
        np.testing.assert_allclose(model.grads[name], param.grad.numpy(), rtol=rtol * 10, atol=rtol * 1e-2,
                                   err_msg=name)


def test_parameter_names_follow_pytorch():
    names = [n for n, _ in parameter_shapes(ModelConfig(cell="gru", vocab_size=7, layers=2))]
    assert names == ["encoder.weight",
                     "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                     "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
                     "decoder.weight", "decoder.bias"]


def test_chunked_forward_equals_one_long_forward():
    """The truncated-BPTT invariant at model level: state carried across chunks changes nothing."""
    model = make_model("lstm", 2, V=7)
    x, y = batch(7, T=8, B=2)
    nll_full, s_full = model.token_nll(x, y, model.init_state(2))
    nll_a, s = model.token_nll(x[:3], y[:3], model.init_state(2))
    nll_b, s = model.token_nll(x[3:], y[3:], s)
    np.testing.assert_allclose(np.concatenate([nll_a, nll_b]), nll_full, rtol=1e-12)
    np.testing.assert_allclose(s, s_full, rtol=1e-12)


def test_initialisation_is_seeded_and_sensible():
    a = make_model("lstm", 2, V=9, E=4, H=6, seed=5)
    b = make_model("lstm", 2, V=9, E=4, H=6, seed=5)
    np.testing.assert_array_equal(a.flat, b.flat)
    fresh = Model(a.config, np.float64).init_weights(np.random.default_rng(0))
    bound = 1 / np.sqrt(6)  # PyTorch's defaults: U(±1/√H) for every recurrent weight and bias
    for name in ("rnn.weight_hh_l0", "rnn.weight_ih_l1", "rnn.bias_ih_l0", "rnn.bias_hh_l1", "decoder.weight"):
        w = fresh.params[name]
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound and abs(w.mean()) < bound / 2
    assert fresh.params["encoder.weight"].std() == pytest.approx(1.0, abs=0.35)  # N(0, 1), 36 draws
