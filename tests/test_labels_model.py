"""A labelled language model (lm/layers.py, lm/labels.py): finite-difference gradients through the
label vectors, agreement with torch.nn on identical weights (the one-hot label concatenated to the
input, or an nn.Embedding giving h0), padding that changes nothing, and the plain model a label
makes that samples and scores exactly as the labelled one trains."""
import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff

from charlm.config import ModelConfig
from charlm.data.labelled import line_batch, line_bounds
from charlm.lm.evaluate import line_nll
from charlm.lm.labels import conditioned
from charlm.lm.model import Model

CELLS = ["lstm", "gru", "rnn"]
DESIGNS = ["input", "state"]


def labelled_model(cell, condition, layers=2, V=5, E=3, H=3, n_labels=3, seed=0, dtype=np.float64, **options):
    cfg = ModelConfig(cell=cell, vocab_size=V, embed=E, hidden=H, layers=layers, labels=n_labels,
                      condition=condition, **options)
    model = Model(cfg, dtype=dtype).init_weights(np.random.default_rng(seed))
    model.flat += 0.1 * np.random.default_rng(seed + 1).standard_normal(model.size)  # non-trivial biases
    return model


def lines(V, n=3, seed=3, n_labels=3):
    """ids of n lines of lengths 1..4 (<eos> text <eos> ...), and each line's label."""
    rng = np.random.default_rng(seed)
    parts = [[0]]
    for k in range(n):
        parts.append(list(rng.integers(1, V, 1 + k % 4)) + [0])
    return np.concatenate(parts).astype(np.int64), rng.integers(0, n_labels, n)


def batch_of(ids, labels):
    starts, ends = line_bounds(ids)
    return line_batch(ids, starts, ends, labels)


def loss(model, batch, seed=0):
    x, y, labels = batch
    value, _ = model.loss_and_grad(x, y, model.line_state(labels), np.random.default_rng(seed), labels)
    return value


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("condition", DESIGNS)
@pytest.mark.parametrize("layers, V", [(1, 5), (2, 13)])   # 13 > T*B: the gathered embeddings
def test_gradients_through_the_label_vectors_match_finite_differences(cell, condition, layers, V):
    model = labelled_model(cell, condition, layers, V=V)
    batch = batch_of(*lines(V))
    loss(model, batch)
    grad = model.grad_flat.copy()
    assert np.abs(model.grads["label_embedding.weight"]).max() > 0
    assert_gradient_matches_finite_diff(lambda: loss(model, batch), model.flat, grad, "every parameter", rtol=1e-5)


def test_gradients_with_dropout_match_finite_differences():
    model = labelled_model("lstm", "input", 2, V=6, dropout=0.3, weight_dropout=0.3)
    batch = batch_of(*lines(6))
    loss(model, batch, 7)   # the same seed each call: the same masks
    assert_gradient_matches_finite_diff(lambda: loss(model, batch, 7), model.flat, model.grad_flat.copy(),
                                        "every parameter", rtol=1e-5)


def torch_reference(model):
    """nn.Embedding + nn.LSTM/GRU/RNN + nn.Linear (+ nn.Embedding of the labels) holding the model's
    weights: the label concatenated as a one-hot to layer 0's input, or giving (h0, c0)."""
    torch = pytest.importorskip("torch")
    nn, c = torch.nn, model.config
    by_input = c.condition == "input"

    class Labelled(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(c.vocab_size, c.embed)
            cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.cell]
            self.rnn = cls(c.embed + (c.labels if by_input else 0), c.hidden, num_layers=c.layers)
            self.decoder = nn.Linear(c.hidden, c.vocab_size)
            if not by_input:
                self.label_embedding = nn.Embedding(c.labels, c.layers * c.states * c.hidden)

        def forward(self, x, labels):
            T, B = x.shape
            inp = self.encoder(x)
            if by_input:
                onehot = nn.functional.one_hot(labels, c.labels).to(inp.dtype)
                return self.decoder(self.rnn(torch.cat([inp, onehot[None].expand(T, B, -1)], 2))[0])
            s0 = self.label_embedding(labels).reshape(B, c.layers, c.states, c.hidden).permute(2, 1, 0, 3)
            h0 = (s0[0].contiguous(), s0[1].contiguous()) if c.states == 2 else s0[0].contiguous()
            return self.decoder(self.rnn(inp, h0)[0])

    ref = Labelled().to(torch.float64)
    weights = {k: np.array(v) for k, v in model.state_dict().items()}
    if by_input:
        weights["rnn.weight_ih_l0"] = np.hstack([weights["rnn.weight_ih_l0"], weights.pop("label_embedding.weight").T])
    ref.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=True)
    return torch, ref


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("condition", DESIGNS)
def test_agrees_with_pytorch_logits_and_every_gradient(cell, condition):
    V = 9
    model = labelled_model(cell, condition, 2, V=V, E=5, H=6, n_labels=4)
    torch, ref = torch_reference(model)
    ids, labels = lines(V, n=5, n_labels=4)
    x, y, labels = batch_of(ids, labels)
    ours = loss(model, (x, y, labels))
    logits = ref(torch.tensor(x), torch.tensor(labels))
    theirs = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.tensor(y).reshape(-1), ignore_index=-1)
    theirs.backward()
    assert ours == pytest.approx(theirs.item(), rel=1e-9)
    grads = dict(model.grads)
    if condition == "input":
        grads["rnn.weight_ih_l0"] = np.hstack([grads["rnn.weight_ih_l0"], grads.pop("label_embedding.weight").T])
    for name, param in ref.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    # logits, line by line, from the plain model each label makes (what sampling and scoring run)
    for b in range(x.shape[1]):
        n = int((y[:, b] >= 0).sum())
        plain, start = conditioned(model, int(labels[b]))
        got, _, _ = plain.forward(x[:n, b:b + 1], np.ascontiguousarray(start[:, :, None, :]))
        np.testing.assert_allclose(got, logits[:n, b].detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("condition", DESIGNS)
def test_training_loss_equals_scoring_each_line_from_its_label(condition):
    """The padded batch of whole lines (training) and the plain model per label (evaluation, score,
    sampling) give one loss: nothing of one line or its label reaches another."""
    model = labelled_model("gru", condition, 2, V=7, dropout=0.0)
    ids, labels = lines(7, n=6)
    batch = batch_of(ids, labels)
    per_token = line_nll(model, ids, labels)
    assert per_token.size == len(ids) - 1
    assert loss(model, batch) == pytest.approx(per_token.mean(), rel=1e-10)
    # one line alone, or beside others in any order, scores the same
    x, y, lab = batch
    alone = loss(model, (x[:, :1], y[:, :1], lab[:1]))
    n0 = int((y[:, 0] >= 0).sum())
    assert alone == pytest.approx(per_token[:n0].mean(), rel=1e-10)


def test_zero_label_vectors_are_the_plain_model_on_whole_lines():
    """Useless labels cost nothing: with every label vector zero, a labelled model is the unlabelled one
    (same loss and the same gradient of every shared weight), under either design."""
    for condition in DESIGNS:
        model = labelled_model("lstm", condition, 2, V=6)
        model.params["label_embedding.weight"][...] = 0
        plain = Model(ModelConfig(cell="lstm", vocab_size=6, embed=3, hidden=3, layers=2), dtype=np.float64)
        plain.load_state_dict(model.params)
        batch = batch_of(*lines(6))
        assert loss(model, batch) == pytest.approx(loss(plain, batch), rel=1e-12)
        for name in plain.params:
            np.testing.assert_allclose(model.grads[name], plain.grads[name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_parameter_name_shape_and_init():
    model = labelled_model("lstm", "input", 2, V=6, E=4, H=5, n_labels=7)
    assert model.params["label_embedding.weight"].shape == (7, 4 * 5)
    assert list(model.params)[-1] == "label_embedding.weight"
    state = labelled_model("gru", "state", 3, V=6, H=5, n_labels=2)
    assert state.params["label_embedding.weight"].shape == (2, 3 * 1 * 5)
    # an unlabelled model draws its initial weights exactly as before
    a = Model(ModelConfig(cell="gru", vocab_size=6)).init_weights(np.random.default_rng(0))
    b = Model(ModelConfig(cell="gru", vocab_size=6, labels=3)).init_weights(np.random.default_rng(0))
    np.testing.assert_array_equal(a.flat, b.flat[:a.size])


def test_a_cell_fed_by_its_output_refuses_labels():
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match="labelled"):
        ModelConfig(cell="jordan", vocab_size=5, labels=2).validate()
