"""Row-sparse gradients of the hashed tables: zeroing only what the previous pass wrote leaves the
full gradient, the norm and clip over dense spans plus touched rows are clip_grad_norm's."""
import dataclasses

import numpy as np
import pytest

from charlm.optim import clip_grad_norm
from charlm.seqtask import sparse_grad
from charlm.seqtask.config import SeqModelConfig
from charlm.seqtask.ensemble import build_model
from charlm.seqtask.sparse_grad import GradLayout

from test_bidir import tiny_batch


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
