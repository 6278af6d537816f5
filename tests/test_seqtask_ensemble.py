"""Ensembles (--members K): the prediction is the mean of the members' probabilities, each member
the PyTorch model its tensors describe; the gradient is that of the mean of the members' losses;
training, checkpoints, prediction and exact resume work as for one model."""
import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff
from test_bidir import tiny_batch
from test_classify import FAST_TRAIN, toy_examples

from charlm.errors import ConfigError
from charlm.seqtask import store
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.ensemble import SeqEnsemble, build_model
from charlm.seqtask.model import SeqModel
from charlm.seqtask.predict import Predictor
from charlm.seqtask.train import SeqTrainer


def ensemble(task="classify", members=3, ngrams=0, seed=0):
    config = SeqModelConfig(task=task, vocab_size=7, num_labels=3, embed=3, hidden=4, layers=1, dropout=0.0,
                            pooling="final", members=members, ngrams=ngrams, buckets=11)
    model = build_model(config, np.float64).init_weights(np.random.default_rng(seed))
    model.flat[...] = np.random.default_rng(seed + 1).uniform(-0.6, 0.6, model.size)
    return model


def test_a_one_member_configuration_is_a_plain_model():
    assert isinstance(build_model(SeqModelConfig(vocab_size=7, num_labels=3)), SeqModel)


def test_prediction_is_the_mean_of_the_members_pytorch_probabilities():
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence

    model = ensemble(members=3)
    assert isinstance(model, SeqEnsemble)
    c = model.config
    ids, lengths, _ = tiny_batch("classify", np.random.default_rng(1))
    probs = []
    for k in range(c.members):
        module = torch.nn.ModuleDict({
            "embedding": torch.nn.Embedding(c.vocab_size, c.embed),
            "rnn": torch.nn.LSTM(c.embed, c.hidden, bidirectional=True),
            "head": torch.nn.Linear(2 * c.hidden, c.num_labels)}).double()
        prefix = f"members.{k}."
        module.load_state_dict({name[len(prefix):]: torch.from_numpy(a.copy()) for name, a in
                                model.state_dict().items() if name.startswith(prefix)}, strict=True)
        with torch.no_grad():
            x = module["embedding"](torch.from_numpy(ids))
            _, (h_n, _) = module["rnn"](pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False))
            probs.append(torch.softmax(module["head"](torch.cat([h_n[-2], h_n[-1]], 1)), -1).numpy())
    logits, _ = model.forward(ids, lengths)
    np.testing.assert_allclose(logits, np.log(np.mean(probs, axis=0)), rtol=0, atol=1e-12)
    assert not np.allclose(probs[0], probs[1])  # the members differ


@pytest.mark.parametrize("task, ngrams", [("classify", 3), ("tag", 0)])
def test_gradient_is_that_of_the_mean_member_loss(task, ngrams):
    model = ensemble(task, members=2, ngrams=ngrams)
    ids, lengths, labels = tiny_batch(task, np.random.default_rng(2))

    def mean_member_loss():
        return np.mean([m.loss(m.forward(ids, lengths)[0], labels, lengths)[0] for m in model.members])

    loss = model.loss_and_grad(ids, lengths, labels)
    assert loss == pytest.approx(mean_member_loss(), abs=1e-14)
    assert_gradient_matches_finite_diff(mean_member_loss, model.flat, model.grad_flat.copy(), "ensemble",
                                        rtol=1e-5, atol=1e-8)


def test_an_ensemble_trains_saves_predicts_and_resumes_exactly(tmp_path):
    config = SeqModelConfig(hidden=12, embed=6, dropout=0.2, members=2)
    train_config = SeqTrainConfig(epochs=4, **FAST_TRAIN)
    straight = SeqTrainer(toy_examples(200), toy_examples(60, 1), config, train_config, tmp_path / "a")
    events = list(straight.events())
    assert events[-1].best_value == 1.0
    checkpoint = store.load(tmp_path / "a" / store.MODEL_FILE)
    assert checkpoint.config.members == 2 and "members.1.head.bias" in checkpoint.tensors
    result = Predictor.load(tmp_path / "a").classify(["aeiou", "bcd"], top_k=1)
    assert [r["labels"][0]["label"] for r in result] == ["vowel", "cons"]

    stopped = SeqTrainer(toy_examples(200), toy_examples(60, 1), config, train_config, tmp_path / "b")
    for event in stopped.events():
        if getattr(event, "step", 0) == 20:
            stopped.request_stop()
    resumed = SeqTrainer.resume(tmp_path / "b", toy_examples(200), toy_examples(60, 1))
    list(resumed.events())
    np.testing.assert_array_equal(resumed.model.flat, straight.model.flat)


def test_configurations_stored_before_salts_load_unsalted():
    import dataclasses

    from charlm.config import from_dict

    stored = dataclasses.asdict(SeqModelConfig(vocab_size=7, num_labels=3, members=2, ngrams=3))
    del stored["member_salts"]
    config = from_dict(SeqModelConfig, stored).validate()
    assert config.member_salts is False
    assert [m.ngram_salt for m in build_model(config).members] == [0, 0]


def test_a_stored_salted_ensemble_without_ngrams_still_loads():
    """A new run refuses --member-salts without hashed n-grams (runs.py), but models saved before
    that rule may hold it: their configuration must still load."""
    import dataclasses

    from charlm.config import from_dict

    stored = dataclasses.asdict(SeqModelConfig(vocab_size=7, num_labels=3, members=2, member_salts=True))
    config = from_dict(SeqModelConfig, stored).validate()
    assert config.member_salts and not config.ngrams and len(build_model(config).members) == 2


def test_salted_members_hash_apart_and_a_stored_ensemble_hashes_as_trained(tmp_path):
    from dataclasses import replace

    model = ensemble(members=3, ngrams=3)
    salted = build_model(replace(model.config, member_salts=True), np.float64)
    salted.flat[...] = model.flat
    ids, lengths, _ = tiny_batch("classify", np.random.default_rng(1))
    assert [m.ngram_salt for m in model.members] == [0, 0, 0]
    assert [m.ngram_salt for m in salted.members] == [0, 1, 2]
    grams = [m.forward(ids, lengths)[1][4] for m in salted.members]
    assert (grams[0] != grams[1]).any() and (grams[1] != grams[2]).any()
    plain_logits, salted_logits = model.forward(ids, lengths)[0], salted.forward(ids, lengths)[0]
    assert not np.allclose(plain_logits, salted_logits)
    from charlm.data.tokenizer import EOS, UNK, Tokenizer

    tokenizer = Tokenizer("char", [EOS, UNK] + list("abcde"))
    assert len(tokenizer) == salted.config.vocab_size
    store.save(tmp_path / "m.safetensors", salted.config, tokenizer, ["a", "b", "c"], salted.state_dict())
    loaded = store.load(tmp_path / "m.safetensors").build_model(np.float64)
    np.testing.assert_array_equal(loaded.forward(ids, lengths)[0], salted_logits)


def test_two_threads_give_the_serial_results_bit_for_bit():
    """Members stacked in one kernel call per layer, their directions' blocks split across the
    threads: the same loss, gradients and logits as one thread, dropout and salted n-grams included. The
    members' serial phases run on two Python threads."""
    import threading
    from dataclasses import replace

    from charlm.seqtask.model import kernel_scope

    results, where = [], []
    for threads in (1, 2):
        base = ensemble(members=3, ngrams=3)
        model = build_model(replace(base.config, dropout=0.3, input_dropout=0.2, member_salts=True, wide_ngrams=3,
                                    wide_buckets=13, wide_dropout=0.2),
                            np.float64).init_weights(np.random.default_rng(0))
        own = model.members[1].inputs_backward
        model.members[1].inputs_backward = lambda *a: where.append(threading.current_thread().name) or own(*a)
        ids, lengths, labels = tiny_batch("classify", np.random.default_rng(5), lengths=(7, 3, 6, 1, 7, 2))
        with kernel_scope(threads):
            loss = model.loss_and_grad(ids, lengths, labels, np.random.default_rng(6))
            logits, _ = model.forward(ids, lengths)
        results.append((loss, logits, model.grad_flat.copy()))
    # one thread: the members one after another; two: member 1's serial phases on the second Python thread
    assert where[0] == threading.current_thread().name and where[1].startswith("charlm-member")
    (loss1, logits1, grad1), (loss2, logits2, grad2) = results
    assert loss1 == loss2
    np.testing.assert_array_equal(logits1, logits2)
    np.testing.assert_array_equal(grad1, grad2)
    assert np.abs(grad1).max() > 0


@pytest.mark.parametrize("members", [0, 17, -1])
def test_bad_member_counts_are_one_clear_error(members):
    with pytest.raises(ConfigError, match="members"):
        SeqModelConfig(vocab_size=7, num_labels=3, members=members).validate()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("task, layers, bidirectional", [("classify", 2, True), ("classify", 2, False), ("tag", 2, True)])
def test_stacked_members_compute_what_each_member_computes_alone(task, layers, bidirectional, threads):
    """One kernel call per layer for all members gives every member's loss, gradient and logits of
    its own model run alone with its own generator, bit for bit (dropout between layers included)."""
    from dataclasses import replace

    from charlm.seqtask.model import kernel_scope
    from charlm.seqtask.sparse_grad import divide

    config = replace(ensemble(task).config, layers=layers, bidirectional=bidirectional, dropout=0.3,
                     input_dropout=0.2, ngrams=3, member_salts=True,
                     **(dict(wide_ngrams=3, wide_buckets=13, wide_dropout=0.2) if task == "classify" else {}))
    model = build_model(config, np.float64).init_weights(np.random.default_rng(0))
    alone = build_model(config, np.float64)
    alone.flat[...] = model.flat
    model.schedule = "stacked"  # on one thread too
    with kernel_scope(threads):
        # a longer batch, then a shorter one: the reused scratch arrays hold stale values past its end
        for seed, batch_lengths in ((5, (7, 3, 6, 1, 7, 2)), (8, (2, 5, 3, 5))):
            ids, lengths, labels = tiny_batch(task, np.random.default_rng(seed), lengths=batch_lengths)
            loss = model.loss_and_grad(ids, lengths, labels, np.random.default_rng(seed))
            rngs = alone.member_generators(np.random.default_rng(seed))
            losses = [m.loss_and_grad(ids, lengths, labels, rng) for m, rng in zip(alone.members, rngs)]
            divide(alone.grad_flat, alone.layout, alone.touched, len(alone.members))
            assert loss == sum(losses) / len(losses)
            np.testing.assert_array_equal(model.grad_flat, alone.grad_flat)
            for rows, rows_alone in zip(model.touched, alone.touched):
                np.testing.assert_array_equal(rows, rows_alone)
        _, outputs = model.forward(ids, lengths)
        for member, (member_logits, _) in zip(alone.members, outputs):
            np.testing.assert_array_equal(member.forward(ids, lengths)[0], member_logits)


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_member_phases_on_two_python_threads_give_the_serial_results_bit_for_bit(task):
    """A stacked step with its members' serial phases (inputs, heads, their backward passes) on two
    Python threads: the same losses, gradients, touched rows and logits as on one, step after step."""
    from dataclasses import replace

    from charlm.seqtask.model import kernel_scope

    config = replace(ensemble(task, members=4).config, dropout=0.3, input_dropout=0.2, ngrams=3, member_salts=True,
                     **(dict(wide_ngrams=3, wide_buckets=13, wide_dropout=0.2) if task == "classify" else {}))
    results = []
    for member_threads in (1, 2):
        model = build_model(config, np.float64).init_weights(np.random.default_rng(0))
        model.schedule, model.member_threads = "stacked", member_threads
        run = []
        with kernel_scope(2):
            for seed, batch_lengths in ((5, (7, 3, 6, 1, 7, 2)), (8, (2, 5, 3, 5))):
                ids, lengths, labels = tiny_batch(task, np.random.default_rng(seed), lengths=batch_lengths)
                loss = model.loss_and_grad(ids, lengths, labels, np.random.default_rng(seed))
                run.append((loss, model.grad_flat.copy(), [r.copy() for r in model.touched],
                            model.forward(ids, lengths)[0]))
        results.append(run)
    for (loss1, grad1, rows1, logits1), (loss2, grad2, rows2, logits2) in zip(*results):
        assert loss1 == loss2
        np.testing.assert_array_equal(grad1, grad2)
        np.testing.assert_array_equal(logits1, logits2)
        for a, b in zip(rows1, rows2):
            np.testing.assert_array_equal(a, b)
    assert np.abs(results[0][0][1]).max() > 0


def test_a_failed_member_phase_is_raised_once_the_other_thread_is_done():
    """The calling thread fails on member 0: the second thread's members (1, 3) finish first, so
    no phase of a step ever overlaps the next one."""
    import time

    from charlm.seqtask.ensemble import MemberThreads

    done = []

    def run(k):
        if k == 0:
            raise ValueError("member 0")
        time.sleep(0.01)
        done.append(k)
        return k

    threads = MemberThreads()
    with pytest.raises(ValueError, match="member 0"):
        threads.map(run, 4, 2)
    assert done == [1, 3]
    with pytest.raises(ValueError, match="member 0"):  # and a failure on the second thread is raised too
        threads.map(lambda k: run(k - 1 if k % 2 else 1), 4, 2)
    assert threads.map(lambda k: k * k, 5, 2) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_every_schedule_of_the_members_gives_the_same_step_bit_for_bit(task):
    """Members one after another, whole members on Python threads (their layers' blocks on their
    own thread) and stacked in one kernel call: the same losses, gradients, touched rows and predictions,
    step after step, on one thread and on two."""
    from dataclasses import replace

    from charlm.seqtask.model import kernel_scope

    config = replace(ensemble(task, members=3).config, layers=2, dropout=0.3, input_dropout=0.2, ngrams=3,
                     member_salts=True,
                     **(dict(wide_ngrams=3, wide_buckets=13, wide_dropout=0.2) if task == "classify" else {}))
    results = {}
    for schedule, threads in (("serial", 1), ("threads", 2), ("stacked", 2), (None, 2)):
        model = build_model(config, np.float64).init_weights(np.random.default_rng(0))
        model.schedule = schedule
        run = []
        with kernel_scope(threads):
            for seed, batch_lengths in ((5, (7, 3, 6, 1, 7, 2)), (8, (2, 5, 3, 5))):
                ids, lengths, labels = tiny_batch(task, np.random.default_rng(seed), lengths=batch_lengths)
                loss = model.loss_and_grad(ids, lengths, labels, np.random.default_rng(seed))
                run.append((loss, model.grad_flat.copy(), [r.copy() for r in model.touched],
                            model.forward(ids, lengths)[0]))
        results[schedule] = run
    reference = results.pop("serial")
    assert np.abs(reference[0][1]).max() > 0
    for schedule, run in results.items():
        for (loss1, grad1, rows1, logits1), (loss2, grad2, rows2, logits2) in zip(reference, run):
            assert loss1 == loss2, schedule
            np.testing.assert_array_equal(grad1, grad2, err_msg=str(schedule))
            np.testing.assert_array_equal(logits1, logits2, err_msg=str(schedule))
            for a, b in zip(rows1, rows2):
                np.testing.assert_array_equal(a, b)
