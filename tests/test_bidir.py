"""(Bi)directional encoder over variable-length batches: PyTorch's packed sequences on identical
weights, finite differences through encoder + pooling + head, padding that changes nothing."""
import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff

from charlm.kernels import get_cell
from charlm.seqtask.bidir import Spans, encoder_backward, encoder_forward, encoder_shapes

CELL_NAMES = ["lstm", "gru", "rnn"]


def random_params(cell, I, H, L, D, rng, dtype=np.float64):
    return {name: rng.uniform(-0.5, 0.5, shape).astype(dtype)
            for name, shape in encoder_shapes(get_cell(cell).gates, I, H, L, D)}


def torch_packed(cell, params, x, lengths, L, D, w_out, w_final):
    """PyTorch's outputs, final states and gradients on a packed batch (the reference)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T, B, I = x.shape
    H = params["rnn.weight_hh_l0"].shape[1]
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
        I, H, num_layers=L, bidirectional=D == 2, dtype=torch.float64)
    module.load_state_dict({k[len("rnn."):]: torch.from_numpy(v) for k, v in params.items()}, strict=True)
    xt = torch.from_numpy(x).requires_grad_()
    packed, final = module(pack_padded_sequence(xt, torch.as_tensor(lengths), enforce_sorted=True))
    out, _ = pad_packed_sequence(packed, total_length=T)
    finals = torch.stack(list(final) if cell == "lstm" else [final], dim=1)  # (L*D, S, B, H)
    loss = (out * torch.from_numpy(w_out)).sum() + (finals * torch.from_numpy(w_final)).sum()
    loss.backward()
    grads = {"rnn." + k: p.grad.numpy() for k, p in module.named_parameters()}
    return out.detach().numpy(), finals.detach().numpy(), grads, xt.grad.numpy()


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("D", [2, 1])
def test_matches_torch_packed_sequences(cell, D):
    rng = np.random.default_rng(5)
    T, B, I, H, L = 6, 5, 3, 4, 2
    lengths = np.array([6, 4, 4, 2, 1])
    c = get_cell(cell)
    params = random_params(cell, I, H, L, D, rng)
    x = rng.standard_normal((T, B, I))
    w_out = rng.standard_normal((T, B, D * H))
    w_final = rng.standard_normal((L * D, c.states, B, H))
    out_t, finals_t, grads_t, dx_t = torch_packed(cell, params, x, lengths, L, D, w_out, w_final)

    spans = Spans.of(lengths)
    out, finals, cache = encoder_forward(c, params, x, spans, L, D)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx = encoder_backward(c, params, grads, w_out, w_final, spans, cache, L, D)
    np.testing.assert_allclose(out, out_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(finals, finals_t, rtol=0, atol=1e-12)
    assert set(grads) == set(grads_t)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_t[name], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(dx, dx_t, rtol=1e-10, atol=1e-12)


def test_spans_refuse_unsorted_or_empty_lengths():
    with pytest.raises(ValueError, match="sorted"):
        Spans.of([2, 3])
    with pytest.raises(ValueError, match="positive"):
        Spans.of([3, 0])


def test_reverse_keeps_padding_in_place():
    spans = Spans.of([3, 1])
    a = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(spans.flip(a), [[4, 1], [2, 3], [0, 5]])


# -- the whole model: embedding -> encoder -> pooling -> head -> loss ---------------------------

from charlm.seqtask.config import SeqModelConfig  # noqa: E402
from charlm.seqtask.model import SeqModel  # noqa: E402


def tiny_model(cell="lstm", task="classify", pooling="mean", bidirectional=True, layers=2, seed=0,
               dtype=np.float64, dropout=0.0, ngrams=0):
    config = SeqModelConfig(task=task, cell=cell, vocab_size=7, num_labels=3, embed=3, hidden=4, layers=layers,
                            bidirectional=bidirectional, dropout=dropout, pooling=pooling, ngrams=ngrams, buckets=11)
    model = SeqModel(config, dtype).init_weights(np.random.default_rng(seed))
    model.flat[...] = np.random.default_rng(seed + 1).uniform(-0.6, 0.6, model.size)  # no symmetric ties
    return model


def tiny_batch(task, rng, lengths=(2, 5, 3, 5)):
    T, B = max(lengths), len(lengths)
    ids = rng.integers(2, 7, (T, B))
    labels = rng.integers(0, 3, B) if task == "classify" else rng.integers(0, 3, (T, B))
    return ids, np.array(lengths), labels


@pytest.mark.parametrize("cell, task, pooling, ngrams", [
    ("lstm", "classify", "mean", 0), ("gru", "classify", "max", 0), ("rnn", "classify", "final", 0),
    ("lstm", "classify", "final", 0), ("gru", "tag", "mean", 0),
    ("lstm", "classify", "final", 3), ("gru", "classify", "max", 4), ("lstm", "tag", "mean", 3)])
def test_gradcheck_through_encoder_pooling_and_head(cell, task, pooling, ngrams):
    """(With ``ngrams``: through the hashed n-gram embeddings too.)"""
    model = tiny_model(cell, task, pooling, ngrams=ngrams)
    ids, lengths, labels = tiny_batch(task, np.random.default_rng(2))

    def loss():
        logits, _ = model.forward(ids, lengths)
        return model.loss(logits, labels, lengths)[0]

    model.loss_and_grad(ids, lengths, labels)
    analytic = model.grad_flat.copy()
    assert np.abs(analytic).max() > 1e-3
    assert_gradient_matches_finite_diff(loss, model.flat, analytic, f"{cell}/{task}/{pooling}", rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("task, pooling", [("classify", "mean"), ("classify", "max"), ("classify", "final"),
                                           ("tag", "mean")])
def test_padding_never_changes_a_loss_or_a_gradient(task, pooling):
    model = tiny_model("lstm", task, pooling)
    rng = np.random.default_rng(3)
    ids, lengths, labels = tiny_batch(task, rng)
    loss = model.loss_and_grad(ids, lengths, labels)
    grad = model.grad_flat.copy()
    # garbage tokens (and tags) beyond every length, and two more padded steps
    T, B = ids.shape
    ids2 = rng.integers(0, 7, (T + 2, B))
    labels2 = rng.integers(0, 3, (T + 2, B)) if task == "tag" else labels
    for b, n in enumerate(lengths):
        ids2[:n, b] = ids[:n, b]
        if task == "tag":
            labels2[:n, b] = labels[:n, b]
    loss2 = model.loss_and_grad(ids2, lengths, labels2)
    assert loss2 == loss
    np.testing.assert_array_equal(model.grad_flat, grad)


def test_batch_order_does_not_matter():
    model = tiny_model("gru", "classify", "final")
    ids, lengths, labels = tiny_batch("classify", np.random.default_rng(4))
    logits, _ = model.forward(ids, lengths)
    perm = np.array([2, 0, 3, 1])
    logits_p, _ = model.forward(ids[:, perm], lengths[perm])
    np.testing.assert_allclose(logits_p, logits[perm], rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell, dtype", [("lstm", np.float32), ("gru", np.float64), ("rnn", np.float32)])
def test_two_threads_give_the_serial_results_bit_for_bit(cell, dtype):
    """The reverse direction on its own thread: same logits, loss and gradients as one thread."""
    from charlm.seqtask.bidir import _blocks
    from charlm.seqtask.model import kernel_scope

    results = []
    for threads in (1, 2):
        model = tiny_model(cell, "classify", "final", dropout=0.3, dtype=dtype)
        rng = np.random.default_rng(6)
        ids, lengths, labels = tiny_batch("classify", np.random.default_rng(5), lengths=(7, 3, 6, 1, 7, 2))
        with kernel_scope(threads):
            assert _blocks(len(lengths), 2)[0] == 1  # one block per direction: on two threads, side by side
            loss = model.loss_and_grad(ids, lengths, labels, rng)
            logits, _ = model.forward(ids, lengths)
        results.append((loss, logits, model.grad_flat.copy()))
    (loss1, logits1, grad1), (loss2, logits2, grad2) = results
    assert loss1 == loss2
    np.testing.assert_array_equal(logits1, logits2)
    np.testing.assert_array_equal(grad1, grad2)
    assert np.abs(grad1).max() > 0
