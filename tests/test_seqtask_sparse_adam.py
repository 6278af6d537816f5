"""Row-sparse gradients of the hashed tables: zeroing only what the previous pass wrote leaves the
full gradient, the norm and clip over dense spans plus touched rows are clip_grad_norm's; lazy Adam
is torch.optim.SparseAdam on the tables and charlm.optim.Adam on the rest; training resumes exactly."""
import dataclasses

import numpy as np
import pytest
from test_bidir import tiny_batch
from test_classify import FAST_TRAIN, toy_examples

from charlm.errors import ConfigError
from charlm.optim import Adam, clip_grad_norm
from charlm.seqtask import sparse_grad, store
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.ensemble import build_model
from charlm.seqtask.sparse_adam import LazyAdam
from charlm.seqtask.sparse_grad import GradLayout
from charlm.seqtask.train import SeqTrainer


def hashed_model(members=1, dtype=np.float64, **changes):
    """A classifier with both hashed tables (n-gram embeddings, wide path) and every dropout on."""
    config = SeqModelConfig(vocab_size=7, num_labels=3, embed=3, hidden=4, ngrams=3, buckets=23, wide_ngrams=3,
                            wide_buckets=29, input_dropout=0.4, wide_dropout=0.4, dropout=0.3, members=members,
                            member_salts=members > 1)
    model = build_model(dataclasses.replace(config, **changes), dtype).init_weights(np.random.default_rng(0))
    model.flat[...] = np.random.default_rng(1).uniform(-0.6, 0.6, model.size)
    return model


def test_layout_merges_dense_neighbours_and_keeps_tables_apart():
    shapes = [("a", (2, 3)), ("t", (5, 2)), ("b", (4,)), ("c", (3,)), ("u", (7, 3))]
    layout = GradLayout.of(shapes, ("t", "u"))
    assert layout.dense == ((0, 6), (16, 23))
    assert layout.tables == ((6, 5, 2), (23, 7, 3))
    joined = GradLayout.joined([layout, layout], [0, 44])
    assert joined.dense[2:] == ((44, 50), (60, 67)) and joined.tables[3] == (67, 7, 3)
    flat = np.arange(88.0)
    np.testing.assert_array_equal(joined.table(flat, 3), np.arange(67, 88).reshape(7, 3))


@pytest.mark.parametrize("members", [1, 3])
def test_each_backward_leaves_the_full_gradient_though_it_zeroes_only_what_was_written(members):
    """Batch after batch, the gradient equals a fresh model's (which zeroes everything) bit for bit,
    and the touched rows hold every non-zero row of the tables."""
    model = hashed_model(members)
    rng = np.random.default_rng(5)
    for step, lengths in enumerate([(2, 5, 3, 5), (6, 1, 4, 2), (3, 3, 1, 2), (5, 2, 2, 4)]):
        ids, lengths, labels = tiny_batch("classify", rng, lengths)
        model.loss_and_grad(ids, lengths, labels, np.random.default_rng(step))
        fresh = hashed_model(members)
        fresh.flat[...] = model.flat
        fresh.loss_and_grad(ids, lengths, labels, np.random.default_rng(step))
        np.testing.assert_array_equal(model.grad_flat, fresh.grad_flat)
        for i, rows in enumerate(model.touched):
            table = model.layout.table(model.grad_flat, i)
            nonzero = np.flatnonzero(np.abs(table).sum(axis=1))
            assert set(nonzero) <= set(rows) and len(rows) < table.shape[0]
        model.flat[...] += rng.normal(0, 0.01, model.size)  # the next step's weights differ


@pytest.mark.parametrize("max_norm", [0.0, 0.05, 1e6])
def test_clip_over_dense_spans_and_touched_rows_is_clip_grad_norm(max_norm):
    model = hashed_model(2)
    ids, lengths, labels = tiny_batch("classify", np.random.default_rng(3))
    model.loss_and_grad(ids, lengths, labels, np.random.default_rng(4))
    full = model.grad_flat.copy()
    norm_full = clip_grad_norm(full, max_norm)
    norm = sparse_grad.clip_norm(model.grad_flat, model.layout, model.touched, max_norm)
    assert norm > 0.05
    np.testing.assert_allclose(norm, norm_full, rtol=1e-13)
    np.testing.assert_allclose(model.grad_flat, full, rtol=1e-13, atol=0)


def test_a_non_finite_norm_comes_back_unclipped():
    layout = GradLayout.of([("a", (3,)), ("t", (4, 2))], ("t",))
    grad = np.zeros(11)
    grad[1], grad[3 + 2 * 2] = np.inf, 1.0
    assert sparse_grad.clip_norm(grad, layout, [np.array([2])], 1.0) == np.inf
    assert grad[1] == np.inf and grad[7] == 1.0


# -- lazy Adam --------------------------------------------------------------------------------------

# (lookups of one step into a 10-row table: repeated rows sum, rows 0, 7 and 9 never appear, 4 and 5
# appear at one step only)
LOOKUPS = [[1, 3, 3, 8], [2, 3, 6, 6, 6, 1], [8, 4, 1], [3, 3, 2, 5], [1, 6, 8, 8]]


@pytest.mark.parametrize("eps, rtol", [(1e-30, 1e-13), (1e-8, 1e-4)])
def test_table_rows_follow_torch_sparse_adam(eps, rtol):
    """nn.Embedding(sparse=True) + SparseAdam on the same weights and gradients. With a negligible
    eps the two agree to rounding; at the default eps they differ by where eps is added (the
    module docstring), far below an update's size."""
    torch = pytest.importorskip("torch")
    K, D, lr = 10, 3, 0.05
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (K, D))
    embedding = torch.nn.Embedding(K, D, sparse=True, dtype=torch.float64)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(weight))
    reference = torch.optim.SparseAdam(embedding.parameters(), lr=lr, eps=eps)
    layout = GradLayout.of([("table", (K, D))], ("table",))
    param, grad = weight.reshape(-1).copy(), np.zeros(K * D)
    lazy = LazyAdam(layout, K * D, np.float64, eps=eps)
    for ids in LOOKUPS:
        coefs = rng.normal(0, 1, (len(ids), D))
        reference.zero_grad()
        (embedding(torch.tensor(ids)) * torch.from_numpy(coefs)).sum().backward()
        reference.step()
        table = layout.table(grad, 0)
        table[...] = 0
        np.add.at(table, ids, coefs)
        lazy.step(param, grad, lr, [np.unique(ids)])
    result, expected = layout.table(param, 0), embedding.weight.detach().numpy()
    np.testing.assert_allclose(result - weight, expected - weight, rtol=rtol, atol=0)
    np.testing.assert_array_equal(result[[0, 7, 9]], weight[[0, 7, 9]])  # never seen: never moved


def dense_and_table_problem(seed=0):
    """A buffer long enough (> 32768) for charlm.optim.Adam's fused pass: a dense span, a 2000 x 16
    table, a second dense span."""
    layout = GradLayout.of([("a", (700,)), ("table", (2000, 16)), ("b", (1300,))], ("table",))
    size = 700 + 32000 + 1300
    return layout, size, np.random.default_rng(seed).normal(0, 1, size)


def sparse_gradient(layout, size, rng, rows):
    grad = np.zeros(size)
    for a, b in layout.dense:
        grad[a:b] = rng.normal(0, 1, b - a)
    layout.table(grad, 0)[rows] = rng.normal(0, 1, (len(rows), 16))
    return grad


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_dense_spans_follow_adam_exactly_and_untouched_rows_stay(weight_decay):
    layout, size, start = dense_and_table_problem()
    dense, lazy = start.copy(), start.copy()
    adam, lazy_adam = Adam(size, np.float64, weight_decay=weight_decay), LazyAdam(layout, size, np.float64,
                                                                                  weight_decay=weight_decay)
    rng = np.random.default_rng(1)
    seen = np.zeros(2000, bool)
    for step in range(4):
        rows = np.unique(rng.integers(0, 300, 40))
        seen[rows] = True
        grad = sparse_gradient(layout, size, rng, rows)
        adam.step(dense, grad.copy(), 1e-2)
        lazy_adam.step(lazy, grad, 1e-2, [rows])
    for a, b in layout.dense:
        np.testing.assert_array_equal(lazy[a:b], dense[a:b])
    table = layout.table(lazy, 0)
    np.testing.assert_array_equal(table[~seen], layout.table(start, 0)[~seen])
    assert not np.array_equal(table[seen], layout.table(dense, 0)[seen])  # dense Adam moved them on absent steps
    np.testing.assert_array_equal(layout.table(lazy_adam.state["v"], 0)[~seen], 0)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_rows_touched_at_every_step_follow_dense_adam_bit_for_bit(weight_decay):
    layout, size, start = dense_and_table_problem(3)
    dense, lazy = start.copy(), start.copy()
    adam, lazy_adam = Adam(size, np.float64, weight_decay=weight_decay), LazyAdam(layout, size, np.float64,
                                                                                  weight_decay=weight_decay)
    rng = np.random.default_rng(4)
    every = np.arange(2000)
    for _ in range(3):
        grad = sparse_gradient(layout, size, rng, every)
        adam.step(dense, grad.copy(), 3e-3)
        lazy_adam.step(lazy, grad, 3e-3, [every])
    np.testing.assert_array_equal(lazy, dense)
    np.testing.assert_array_equal(lazy_adam.state["m"], adam.state["m"])


def test_state_round_trips_and_a_dense_adam_state_resumes_lazily():
    layout, size, start = dense_and_table_problem()
    adam = Adam(size, np.float64)
    adam.step(start.copy(), np.ones(size), 1e-3)
    lazy = LazyAdam(layout, size, np.float64)
    lazy.load_state_dict(*adam.state_dict())
    assert lazy.t == 1 and np.array_equal(lazy.state["v"], adam.state["v"])
    arrays, scalars = lazy.state_dict()
    assert scalars == {"name": "lazy_adam", "t": 1}
    with pytest.raises(ConfigError, match="sgd"):
        lazy.load_state_dict(arrays, {"name": "sgd", "t": 1})


def test_training_with_hashed_tables_resumes_exactly(tmp_path):
    """Stopped at step 7 and resumed, the run ends where the uninterrupted one does: weights and
    both moments bit for bit (the tables' moments are their own rows' history)."""
    config = SeqModelConfig(hidden=8, embed=6, dropout=0.2, input_dropout=0.3, ngrams=3, buckets=64,
                            wide_ngrams=3, wide_buckets=128, wide_dropout=0.3, members=2, member_salts=True)
    train_config = SeqTrainConfig(epochs=2, **FAST_TRAIN)
    straight = SeqTrainer(toy_examples(200), toy_examples(60, 1), config, train_config, tmp_path / "a")
    list(straight.events())
    stopped = SeqTrainer(toy_examples(200), toy_examples(60, 1), config, train_config, tmp_path / "b")
    for event in stopped.events():
        if getattr(event, "step", 0) == 7:
            stopped.request_stop()
    assert store.load(tmp_path / "b" / store.LAST_FILE).metadata["optimizer"] == {"name": "lazy_adam", "t": 7}
    resumed = SeqTrainer.resume(tmp_path / "b", toy_examples(200), toy_examples(60, 1))
    assert resumed.pos.step == 7
    list(resumed.events())
    assert resumed.pos.step == straight.pos.step > 7
    np.testing.assert_array_equal(resumed.model.flat, straight.model.flat)
    for key in ("m", "v"):
        np.testing.assert_array_equal(resumed.optimizer.state[key], straight.optimizer.state[key])
    v = straight.model.layout.table(straight.optimizer.state["v"], 1)  # member 0's wide table
    assert 0 < (v.sum(axis=1) > 0).sum() < v.shape[0]  # some rows trained, some never touched


def test_entries_cut_the_dense_spans_into_pieces_and_the_rows_into_chunks():
    layout = GradLayout.of([("a", (700,)), ("t", (50, 4)), ("b", (1300,)), ("u", (9, 3))], ("t", "u"))
    pieces, tables, rows, chunks = layout.entries([np.array([3, 7]), np.array([0, 8, 2])], piece=256, chunk=2)
    covered = [i for a, b in pieces for i in range(a, b)]
    assert covered == [i for a, b in layout.dense for i in range(a, b)] and (pieces[:, 1] - pieces[:, 0]).max() == 256
    assert tables.tolist() == [[700, 50, 4], [2200, 9, 3]] and rows.tolist() == [3, 7, 0, 8, 2]
    assert chunks.tolist() == [[0, 0, 2], [1, 2, 4], [1, 4, 5]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_parallel_passes_give_the_serial_results_on_any_thread_count(dtype):
    """Adam's update, the reset and the ensemble's division, one pass across the threads over the dense pieces
    and listed rows: NumPy's division element for element, and the same buffers on 1 and 2 threads."""
    from charlm.seqtask.model import kernel_scope

    layout, size, start = dense_and_table_problem(5)
    rows = np.unique(np.random.default_rng(6).integers(0, 2000, 300))
    grad = sparse_gradient(layout, size, np.random.default_rng(7), rows).astype(dtype)
    results = []
    for threads in (1, 2):
        param, g = start.astype(dtype), grad.copy()
        with kernel_scope(threads):
            sparse_grad.divide(g, layout, [rows], 3)
            adam = LazyAdam(layout, size, dtype, weight_decay=0.01)
            for _ in range(2):
                adam.step(param, g.copy(), 1e-2, [rows])
        results.append((g, param, adam.state["m"], adam.state["v"]))
    np.testing.assert_array_equal(results[0][0], grad / dtype(3))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    sparse_grad.zero(grad, layout, [rows])  # the reset: every written element, nothing else to do
    assert not grad.any()
