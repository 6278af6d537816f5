"""A classifier's or tagger's batch cut into rank blocks (seqtask/blocks.py) gives the batch's loss,
gradient, touched rows and random draws; runs anywhere (the multi-rank runs: test_distributed.py)."""
import numpy as np
import pytest
from test_classify import toy_examples
from test_tag import next_is_vowel_examples

from charlm.distributed.streams import BlockRandom, block
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.task import SeqTask

EVERY_DROPOUT = dict(embed=5, hidden=6, layers=2, dropout=0.3, input_dropout=0.3, ngrams=3, buckets=31)
CONFIGS = [("classify", EVERY_DROPOUT | dict(wide_ngrams=3, wide_buckets=37, wide_dropout=0.4, pooling="mean")),
           ("classify", dict(embed=5, hidden=6, dropout=0.0, members=2, wide_ngrams=2, wide_buckets=19)),
           ("tag", EVERY_DROPOUT),
           ("tag", dict(embed=5, hidden=6, dropout=0.2, bidirectional=False))]


def make_task(task, model):
    examples = toy_examples(37) if task == "classify" else next_is_vowel_examples(37)
    config = SeqModelConfig(task=task, **model)
    return SeqTask(examples, None, config, SeqTrainConfig(batch_size=9, seed=4, dtype="float64", lr=0.01))


def init(task, model):
    t = make_task(task, model)
    t.init_weights()
    return t


@pytest.mark.parametrize("task, model", CONFIGS)
@pytest.mark.parametrize("ranks", [2, 3])
def test_blocks_sum_to_the_batch(task, model, ranks):
    """Over an epoch's five batches (one of a single sequence), the blocks' shares of loss and gradient sum to the
    whole batch's, their touched rows' union is the batch's, and every generator ends in step."""
    alone = init(task, model)
    parts = [init(task, model) for _ in range(ranks)]
    for _ in range(alone.batches_per_epoch):
        batch = alone.next_batch()
        loss, _ = alone.loss_and_grad(batch)
        B = len(batch[1])
        total_loss, grad, mask = 0.0, np.zeros_like(alone.model.grad_flat), 0.0
        for r, part in enumerate(parts):
            b0, b1 = block(B, r, ranks)
            counts = b1 > b0
            b0, b1 = (b0, b1) if counts else (0, 1)
            piece, touched, share = part.block_loss_and_grad(batch, b0, b1, BlockRandom(part.rng, b0, b1, B))
            share = share if counts else 0.0
            total_loss += piece * share
            grad += part.model.grad_flat * share
            mask = mask + touched * counts
        assert total_loss == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(grad, alone.model.grad_flat, rtol=1e-9, atol=1e-13)
        for part in parts:
            part.merge_blocks(mask, 0, 0)
            assert [list(r) for r in part.rows] == [sorted(set(r)) for r in alone.model.touched]
            assert part.rng.bit_generator.state == alone.rng.bit_generator.state
            part.model.grad_flat[...] = grad  # as the Allreduce leaves it: the next pass must clear others' rows


def test_a_blocks_share_is_its_rows_or_its_tokens_of_the_sorted_batch():
    from charlm.seqtask.blocks import share, sort_batch

    ids, lengths = np.arange(15).reshape(5, 3), np.array([2, 5, 3])
    for targets, task, expected in ((np.array([0, 1, 0]), "classify", [1 / 3, 2 / 3]),
                                    (np.zeros((5, 3), np.int64), "tag", [5 / 10, 5 / 10])):
        whole = sort_batch((ids, lengths, targets))
        assert list(whole[1]) == [5, 3, 2] and whole[0][0, 0] == 1
        assert [share(whole, *block(3, r, 2), task) for r in range(2)] == pytest.approx(expected)


def test_an_ensemble_with_dropout_is_refused_on_several_ranks():
    t = make_task("classify", dict(embed=4, hidden=4, members=2, dropout=0.1))
    assert "ensemble" in t.split_problem()
    assert make_task("classify", dict(embed=4, hidden=4, members=2, dropout=0.0)).split_problem() is None
    assert make_task("tag", dict(embed=4, hidden=4)).split_problem() is None
