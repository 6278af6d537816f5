"""Weight averaging in the one training loop: the running mean against NumPy's over the budget's
tail, evaluations and the best checkpoint on the average while training goes on from the raw
weights (which stay those of a run without averaging, bit for bit), exact resume for every task,
two ranks' average that of one process, and the setting's one-line errors."""
import dataclasses

import numpy as np
import pytest
from cli_helpers import invoke
from test_classify import toy_examples, write_tsv
from test_distributed import charlm, needs_mpi
from test_seqtask_distributed import assert_same_seq_run, files  # noqa: F401 (files: a fixture)
from test_training_core import LM, LM_TRAIN, lm_builder, lm_corpus, seq_trainer, stop_at

from charlm.errors import CheckpointError, ConfigError
from charlm.lm import checkpoint as ckpt
from charlm.lm.train import Trainer
from charlm.runs.metrics import read_metrics
from charlm.seqtask import store
from charlm.seqtask.config import SeqTrainConfig
from charlm.seqtask.train import SeqTrainer
from charlm.kernels import update
from charlm.runtime import thread_limits
from charlm.training import average as avg
from charlm.training.average import WeightAverage
from charlm.training.events import EvalEvent, StepEvent


def test_the_mean_is_numpys_over_the_tail_every_k_steps(monkeypatch):
    assert (avg.snapshot_every(2_000_000), avg.snapshot_every(15_503_152)) == (1, 60)
    monkeypatch.setattr(avg, "DENSE_MAX", 9)
    monkeypatch.setattr(avg, "SNAPSHOT_WEIGHTS", 4)
    monkeypatch.setattr(update, "SPLIT_MIN", 3)   # the update split across two threads
    rng = np.random.default_rng(0)
    steps, fraction = 40, 0.3
    a = WeightAverage(fraction, 10, np.float64)
    assert a.every == 3
    kept = []
    for step in range(1, steps + 1):
        flat = rng.normal(size=10)
        with thread_limits(2):
            a.update(flat, step, step / steps)
        if step % 3 == 0 and step / steps >= 1 - fraction:
            kept.append(flat)
    assert a.count == len(kept) == 4   # steps 30, 33, 36, 39
    np.testing.assert_allclose(a.mean, np.mean(kept, axis=0), rtol=1e-13)


def test_off_keeps_nothing_and_a_swap_puts_the_raw_weights_back():
    off = WeightAverage(0.0, 5, np.float32)
    off.update(np.ones(5, np.float32), 10, 1.0)
    assert off.mean is None and off.state() == ({}, {})
    on, flat = WeightAverage(0.5, 5, np.float32), np.arange(5, dtype=np.float32)
    on.update(flat * 0, 1, 0.9)
    with pytest.raises(RuntimeError):
        with on.swapped_in(flat):
            np.testing.assert_array_equal(flat, 0)
            raise RuntimeError
    np.testing.assert_array_equal(flat, np.arange(5))


def test_evaluation_and_best_hold_the_average_while_training_goes_on_raw(tmp_path):
    off = seq_trainer(tmp_path / "off")
    off_events = list(off.events())
    on = seq_trainer(tmp_path / "on", average=0.5)
    on_events = list(on.events())
    losses = [[e.loss for e in events if isinstance(e, StepEvent)] for events in (off_events, on_events)]
    assert losses[0] == losses[1]                             # the raw trajectory is untouched
    np.testing.assert_array_equal(on.model.flat, off.model.flat)
    scores = [[e.scores["loss"] for e in events if isinstance(e, EvalEvent)] for events in (off_events, on_events)]
    assert scores[0][0] == scores[1][0] and scores[0][-1] != scores[1][-1]   # step 5: not averaging yet
    assert on.average.count == 9                              # steps 8..16 of 16
    best = store.load(tmp_path / "on" / store.MODEL_FILE)
    if best.metadata["step"] == 16:
        np.testing.assert_array_equal(best.build_model().flat, on.average.mean)
    last = store.load(tmp_path / "on" / store.LAST_FILE)
    again = SeqTrainer.resume(tmp_path / "on", toy_examples(120), toy_examples(30, 1))
    np.testing.assert_array_equal(again.average.mean, on.average.mean)
    assert "average" in last.metadata and avg.ARRAY in last.extra
    plain = store.load(tmp_path / "off" / store.LAST_FILE)   # off: the checkpoint as before
    assert "average" not in plain.metadata and avg.ARRAY not in plain.extra


def test_a_classifier_resumes_exactly_with_its_average(tmp_path):
    whole = seq_trainer(tmp_path / "a", average=0.6)
    list(whole.events())
    stop_at(seq_trainer(tmp_path / "b", average=0.6), 11)      # inside the tail
    resumed = SeqTrainer.resume(tmp_path / "b", toy_examples(120), toy_examples(30, 1))
    assert (resumed.average.count, whole.average.count) == (5, 10)   # steps 7..11 of 7..16
    list(resumed.events())
    np.testing.assert_array_equal(resumed.model.flat, whole.model.flat)
    np.testing.assert_array_equal(resumed.average.mean, whole.average.mean)
    evals = [[r for r in read_metrics(tmp_path / d) if r["kind"] == "eval"] for d in "ab"]
    assert [r["loss"] for r in evals[0]] == [r["loss"] for r in evals[1]]


def test_a_budget_grown_on_resume_starts_its_tail_afresh(tmp_path):
    list(seq_trainer(tmp_path / "run", average=0.5).events())
    resumed = SeqTrainer.resume(tmp_path / "run", toy_examples(120), toy_examples(30, 1), steps=40)
    assert resumed.average.count == 9
    list(resumed.events())
    assert resumed.average.count == 21   # steps 20..40 of 40


def test_a_language_model_resumes_exactly_with_its_average(tmp_path):
    corpus, tcfg = lm_corpus(tmp_path), dataclasses.replace(LM_TRAIN, average=0.5)
    whole = Trainer(corpus, LM, tcfg, tmp_path / "a")
    full = [e.loss for e in whole.events() if isinstance(e, StepEvent)]
    stop_at(Trainer(corpus, LM, tcfg, tmp_path / "b"), 9)
    resumed = Trainer.resume(tmp_path / "b", lm_builder)
    rest = [e.loss for e in resumed.events() if isinstance(e, StepEvent)]
    assert len(rest) == 3 and rest == full[-3:]
    np.testing.assert_array_equal(resumed.average.mean, whole.average.mean)
    best = ckpt.load_checkpoint(tmp_path / "b" / ckpt.MODEL_FILE)
    assert [r["val_loss"] for r in read_metrics(tmp_path / "b") if r["kind"] == "eval"][-1] == pytest.approx(
        [r["val_loss"] for r in read_metrics(tmp_path / "a") if r["kind"] == "eval"][-1], abs=0)
    assert best.metadata["step"] >= 4


def test_a_seq2seq_run_resumes_exactly_with_its_average(tmp_path):
    from charlm.seq2seq import runs
    from charlm.seq2seq.config import Seq2SeqConfig, make_configs
    from charlm.seqtask.config import seq_resume_overrides

    (tmp_path / "pairs.tsv").write_text("".join(f"{w}\t{' '.join(w[::-1])}\n" for w in
                                                ("abc", "bca", "cab", "abba", "cc", "bac", "acb", "ab") * 6))
    values = {"embed": 8, "hidden": 8, "steps": 20, "eval_every": "10", "batch_size": 8, "dropout": 0.2,
              "average": 0.5}
    spec = runs.data_spec(tmp_path / "pairs.tsv", dev_fraction=0.25)
    whole = runs.start(spec, *make_configs(values), tmp_path, tmp_path / "whole")
    list(whole.events())
    whole.run_lock.release()
    part = runs.start(spec, *make_configs(values), tmp_path, tmp_path / "part")
    stop_at(part, 13)
    part.run_lock.release()
    again = runs.resume(tmp_path / "part", seq_resume_overrides({}, Seq2SeqConfig))
    list(again.events())
    again.run_lock.release()
    np.testing.assert_array_equal(again.model.flat, whole.model.flat)
    np.testing.assert_array_equal(again.average.mean, whole.average.mean)


def test_a_malformed_average_is_one_checkpoint_error(tmp_path):
    a = WeightAverage(0.5, 4, np.float32)
    with pytest.raises(CheckpointError, match="does not match"):
        a.restore({avg.ARRAY: np.zeros(3, np.float32)}, {"count": 1, "every": 1}, tmp_path)
    with pytest.raises(CheckpointError, match="malformed"):
        a.restore({avg.ARRAY: np.zeros(4, np.float32)}, {"count": "x"}, tmp_path)


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_the_setting_is_checked(value):
    with pytest.raises(ConfigError, match="average must be in"):
        SeqTrainConfig(average=value).validate()


def test_the_option_is_one_line_and_fixed_on_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tsv(tmp_path / "t.tsv", toy_examples(40))
    r = invoke("classify", "train", "t.tsv", "--average", "1.5", "--steps", "2")
    assert r.exit_code == 2 and "Traceback" not in r.output and "--average" in r.output
    run = seq_trainer(tmp_path / "run", average=0.25)
    stop_at(run, 3)
    with pytest.raises(ConfigError, match="cannot change average"):
        SeqTrainer.resume(tmp_path / "run", toy_examples(120), toy_examples(30, 1), average=0.5)


@needs_mpi
def test_two_ranks_keep_the_average_of_one_process(files, tmp_path):
    args = [*files["classify"], "--steps", "18", "--average", "0.5"]
    for name, more in (("alone", []), ("two", ["--ranks", "2"])):
        done = charlm([*args, "--run-dir", tmp_path / name, *more])
        assert done.returncode == 0, done.stderr
    assert_same_seq_run(tmp_path / "alone", tmp_path / "two")
    means = [store.load(tmp_path / name / store.LAST_FILE).extra[avg.ARRAY] for name in ("alone", "two")]
    np.testing.assert_allclose(means[0], means[1], rtol=1e-6)


def test_the_header_says_when_evaluations_score_the_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tsv(tmp_path / "t.tsv", toy_examples(40))
    averaged = invoke("classify", "train", "t.tsv", "--average", "0.5", "--steps", "2", "--run-dir", "a")
    plain = invoke("classify", "train", "t.tsv", "--steps", "2", "--run-dir", "p")
    assert averaged.exit_code == 0 and plain.exit_code == 0, averaged.output + plain.output
    assert "evaluations score the weights' mean over its last 50%" in averaged.output
    assert "mean over" not in plain.output
