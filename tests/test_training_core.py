"""The one training loop under both tasks: the same divergence and resume rules, step records
for every task, a JSON-able summary, and checkpoints in the shapes written before the loop was
shared (built here from fresh ones) still resume exactly."""
import json
import math

import numpy as np
import pytest
from test_classify import FAST, FAST_TRAIN, toy_examples

from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import build_corpus
from charlm.errors import ConfigError
from charlm.lm import checkpoint as ckpt
from charlm.lm.train import Trainer
from charlm.runs.metrics import read_metrics
from charlm.seqtask import store
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.task import SeqTask
from charlm.seqtask.train import SeqTrainer
from charlm.training.events import StepEvent, WarningEvent
from charlm.training.loop import MAX_BAD_STEPS

TEXT = "".join(f"line {i % 11} of the shared loop's text\n" for i in range(200))
SEQ = SeqModelConfig(**(FAST | {"dropout": 0.2}))


def seq_trainer(run_dir, **train):
    config = SeqTrainConfig(**(FAST_TRAIN | {"steps": 16, "eval_every": "5"} | train))
    return SeqTrainer(toy_examples(120), toy_examples(30, 1), SEQ, config, run_dir)


def stop_at(trainer, step):
    for event in trainer.events():
        if isinstance(event, StepEvent) and event.step == step:
            trainer.request_stop()
    return event


def lm_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return build_corpus([path], val_fraction=0.1)


def lm_builder(tokenizer, tcfg, sources):
    return build_corpus(sources, eos=tcfg.eos, val_fraction=tcfg.val_fraction, tokenizer=tokenizer)


LM = ModelConfig(cell="gru", embed=8, hidden=12, layers=1, dropout=0.1)
LM_TRAIN = TrainConfig(steps=12, seq_len=8, batch_size=4, eval_every="4", lr=5e-3, threads=1, seed=2)


def test_a_classifier_diverges_by_the_language_models_rule(tmp_path, monkeypatch):
    original, calls = SeqTask.loss_and_grad, {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        loss, carry = original(self, batch)
        return (math.nan if calls["n"] in (3, 4) or calls["n"] >= 9 else loss), carry

    monkeypatch.setattr(SeqTask, "loss_and_grad", poisoned)
    events = list(seq_trainer(tmp_path / "run").events())
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    assert all("non-finite" in w.message and "halved" in w.message for w in warnings)
    assert len(warnings) == 2 + MAX_BAD_STEPS
    done = events[-1]
    assert done.reason == "diverged" and "intact" in done.message and done.step == 6
    last = store.load(tmp_path / "run" / store.LAST_FILE)   # the last good checkpoint, at step 5
    assert last.metadata["step"] == 5 and last.metadata["schedule"]["scale"] == pytest.approx(0.25)


def test_a_classifier_buffers_step_records_and_sums_up_as_json(tmp_path):
    trainer = seq_trainer(tmp_path / "run")
    events = list(trainer.events())
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 17))
    assert [r["step"] for r in records if r["kind"] == "eval"] == [5, 10, 15, 16]
    summary = json.loads(json.dumps(events[-1].summary()))
    assert summary["reason"] == "steps" and summary["steps"] == 16
    assert summary["best"]["metric"] == "accuracy" and summary["best"]["step"] in (5, 10, 15, 16)


@pytest.mark.parametrize("task", ["lm", "seq"])
def test_resume_changes_only_the_budget_cadence_and_threads(tmp_path, task):
    if task == "lm":
        stop_at(Trainer(lm_corpus(tmp_path), LM, LM_TRAIN, tmp_path / "run"), 5)
        resume = lambda **kw: Trainer.resume(tmp_path / "run", lm_builder, **kw)  # noqa: E731
    else:
        stop_at(seq_trainer(tmp_path / "run"), 5)
        resume = lambda **kw: SeqTrainer.resume(tmp_path / "run", toy_examples(120), toy_examples(30, 1), **kw)  # noqa: E731
    with pytest.raises(ConfigError, match=r"cannot change lr when resuming \(the run was trained with lr=") as e:
        resume(lr=0.5)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot change hidden"):
        resume(hidden=4)
    trainer = resume(steps=20, eval_every="30s", threads=1)
    assert trainer.pos.step == 5 and trainer.tcfg.steps == 20


def _rewrite_seq(path, change):
    last = store.load(path)
    meta = change(dict(last.metadata))
    store.save(path, last.config, last.tokenizer, last.labels, last.tensors, extra=last.extra, metadata=meta)


def test_a_classifier_checkpoint_of_the_old_shape_resumes_exactly(tmp_path):
    """The shape written before the shared loop: eval_every 0 (once per epoch), the data position
    and [accuracy, loss] of the best inside ``position``, loss_sum/loss_count, no schedule."""
    straight = seq_trainer(tmp_path / "a")
    list(straight.events())
    stop_at(seq_trainer(tmp_path / "b"), 7)

    def old(meta):
        p, data = meta["position"], meta.pop("data_position")
        best = p["best"]
        meta["position"] = {"epoch": data["epoch"], "batch": data["batch"], "elapsed": p["elapsed"],
                            "best": [best["accuracy"], best["loss"]], "loss_sum": p["train_loss_sum"],
                            "loss_count": p["train_loss_count"]}
        meta["train_config"] = meta["train_config"] | {"eval_every": 0}
        del meta["schedule"]
        return meta

    _rewrite_seq(tmp_path / "b" / store.LAST_FILE, old)
    resumed = SeqTrainer.resume(tmp_path / "b", toy_examples(120), toy_examples(30, 1))
    assert resumed.pos.step == 7 and resumed.tcfg.eval_every == "auto" and resumed.pos.best["accuracy"] >= 0
    assert list(resumed.events())[-1].reason == "steps"
    np.testing.assert_array_equal(resumed.model.flat, straight.model.flat)
    assert store.load(tmp_path / "b" / store.LAST_FILE).metadata["position"]["train_loss_count"] == 0


def test_a_language_model_checkpoint_of_the_old_shape_resumes_exactly(tmp_path):
    corpus = lm_corpus(tmp_path)
    full = [e.loss for e in Trainer(corpus, LM, LM_TRAIN, tmp_path / "a").events() if isinstance(e, StepEvent)]
    first = Trainer(corpus, LM, LM_TRAIN, tmp_path / "b")
    part = []
    for event in first.events():
        if isinstance(event, StepEvent):
            part.append(event.loss)
            if event.step == 6:
                first.request_stop()
    path = tmp_path / "b" / ckpt.LAST_FILE
    last = ckpt.load_checkpoint(path)
    meta = dict(last.metadata)
    del meta["position"]["best"]   # the loop's best scores: not in checkpoints written before it
    ckpt.save_checkpoint(path, last.config, last.tokenizer, last.tensors, extra_tensors=last.extra, metadata=meta)
    resumed = Trainer.resume(tmp_path / "b", lm_builder)
    assert resumed.pos.best == {"val_loss": meta["best_val_loss"]}
    rest = [e.loss for e in resumed.events() if isinstance(e, StepEvent)]
    np.testing.assert_array_equal(np.array(part + rest), np.array(full))


def test_the_sequence_loader_refuses_tensors_its_header_does_not_describe(tmp_path, monkeypatch):
    from charlm.errors import CheckpointError

    list(seq_trainer(tmp_path / "run", steps=2).events())
    import safetensors.numpy

    real = safetensors.numpy.load_file
    monkeypatch.setattr(safetensors.numpy, "load_file", lambda p: real(p) | {"smuggled": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="does not match its header"):
        store.load(tmp_path / "run" / store.MODEL_FILE)
