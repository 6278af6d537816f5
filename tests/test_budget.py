"""Budgets, the schedule that follows them, and the evaluation cadence (clocks are injected)."""
import json
import math

import numpy as np
import pytest

from charlm.config import ModelConfig, TrainConfig, make_configs, parse_eval_every
from charlm.data.corpus import build_corpus
from charlm.errors import ConfigError
from charlm.lm.train import DoneEvent, EvalEvent, StepEvent, Trainer
from charlm.training.budget import AUTO_EVALS, DEFAULT_TIME_BUDGET, MAX_EVAL_SHARE, Budget, EvalCadence

TEXT = "".join(f"line {i % 23} of a small text, state carried over\n" for i in range(400))
MCFG = ModelConfig(cell="lstm", embed=8, hidden=16, layers=1)


class StepClock:
    """Time as a function of training progress: each optimiser step takes ``dt`` seconds,
    everything else none, so a time budget is as deterministic as a step budget."""

    def __init__(self, dt):
        self.dt, self.trainer = dt, None

    def __call__(self):
        return 0.0 if self.trainer is None else self.trainer.pos.step * self.dt


def corpus_of(tmp_path, val_fraction=0.1):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return build_corpus([path], eos="none", val_fraction=val_fraction)


def trainer_with_clock(corpus, tcfg, run_dir, dt=0.5, trainer_cls=Trainer, **kw):
    clock = StepClock(dt)
    trainer = (trainer_cls(corpus, MCFG, tcfg, run_dir, clock=clock) if not kw else
               trainer_cls.resume(run_dir, clock=clock, **kw))
    clock.trainer = trainer
    return trainer


def test_progress_is_the_largest_fraction_over_the_budgets_set():
    b = Budget(steps=100, epochs=0, seconds=60)
    assert b.progress(10, 5.0, 30) == pytest.approx(0.5)
    assert b.progress(80, 5.0, 30) == pytest.approx(0.8)
    assert b.reason(80, 5.0, 59.9) is None and b.reason(80, 5.0, 60) == "time"
    assert b.reason(100, 0, 0) == "steps"
    default = Budget.of(TrainConfig())  # none given: DEFAULT_TIME_BUDGET of training, whatever the task
    assert default.progress(3, 5.0, DEFAULT_TIME_BUDGET / 4) == pytest.approx(0.25)
    assert default.reason(9, 5.0, DEFAULT_TIME_BUDGET - 1) is None and default.reason(9, 1.0, DEFAULT_TIME_BUDGET) == "time"


@pytest.mark.parametrize("value, parsed", [("auto", ("auto", 0.0)), (500, ("steps", 500.0)),
                                           ("500", ("steps", 500.0)), ("30s", ("seconds", 30.0)),
                                           ("2m", ("seconds", 120.0)), (" AUTO ", ("auto", 0.0))])
def test_eval_every_takes_auto_steps_or_a_duration(value, parsed):
    assert parse_eval_every(value) == parsed


@pytest.mark.parametrize("value", ["0", 0, "0s", "-5", "soon", True, 1.5, ""])
def test_eval_every_refuses_what_is_not_a_cadence(value):
    with pytest.raises(ConfigError, match="eval_every"):
        parse_eval_every(value)


def test_auto_cadence_spreads_evaluations_and_caps_their_cost():
    cheap = EvalCadence("auto")
    fired = [p for p in np.linspace(0.001, 1, 1000) if cheap.due(0, p, p * 100) and
             (cheap.record(p, p * 100, 0.1) or True)]
    assert len(fired) == AUTO_EVALS and fired[0] >= 1 / AUTO_EVALS - 1e-3
    costly = EvalCadence("auto")  # each evaluation takes 2 s of a 100 s run: at most one per 2 s / share
    fired = [p for p in np.linspace(0.001, 1, 1000) if costly.due(0, p, p * 100) and
             (costly.record(p, p * 100, 2.0) or True)]
    assert 1 <= len(fired) <= 100 * MAX_EVAL_SHARE / 2.0 + 1
    gaps = np.diff([p * 100 for p in fired])
    assert (gaps >= 2.0 / MAX_EVAL_SHARE - 0.2).all()


def test_explicit_zero_budgets_and_min_lr_above_lr_are_refused():
    for key, option in (("steps", "--steps"), ("epochs", "--epochs"), ("time_budget", "--time")):
        with pytest.raises(ConfigError, match=option):
            make_configs({key: 0 if key != "time_budget" else "0s"})
    with pytest.raises(ConfigError, match="min_lr"):
        make_configs({"lr": 1e-3, "min_lr": 1e-2})
    assert make_configs({"eval_every": 250})[1].eval_every == "250"  # TOML integers are steps


def test_cosine_follows_a_time_budget_to_min_lr(tmp_path):
    tcfg = TrainConfig(time_budget=20.0, seq_len=8, batch_size=4, lr=1e-2, min_lr=1e-4, schedule="cosine",
                       eval_every="5s", threads=1, seed=3)
    events = list(trainer_with_clock(corpus_of(tmp_path), tcfg, tmp_path / "run").events())
    steps = [e for e in events if isinstance(e, StepEvent)]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.reason == "time" and len(steps) == 40  # 20 s / 0.5 s
    for e in steps:  # the rate of each step is the cosine at the budget fraction before it
        before = (e.step - 1) * 0.5 / 20.0
        want = 1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + math.cos(math.pi * before))
        assert e.lr == pytest.approx(want, rel=1e-12)
    assert steps[-1].lr < 2e-4
    evals = [e.step for e in events if isinstance(e, EvalEvent)]
    assert evals == [10, 20, 30, 40]  # every 5 s, the last at the end of the budget


def test_resume_mid_budget_continues_the_time_schedule_exactly(tmp_path):
    corpus = corpus_of(tmp_path)
    tcfg = TrainConfig(time_budget=15.0, seq_len=8, batch_size=4, lr=1e-2, schedule="cosine", warmup_steps=4,
                       eval_every="4s", threads=1, seed=5)
    full = [(e.loss, e.lr) for e in trainer_with_clock(corpus, tcfg, tmp_path / "full").events()
            if isinstance(e, StepEvent)]
    first = trainer_with_clock(corpus, tcfg, tmp_path / "part")
    part = []
    for e in first.events():
        if isinstance(e, StepEvent):
            part.append((e.loss, e.lr))
            if e.step == 11:
                first.request_stop()

    def builder(tokenizer, tcfg, sources):
        return build_corpus(sources, eos=tcfg.eos, val_fraction=tcfg.val_fraction, tokenizer=tokenizer)

    second = trainer_with_clock(None, None, tmp_path / "part", trainer_cls=Trainer, corpus_builder=builder)
    part += [(e.loss, e.lr) for e in second.events() if isinstance(e, StepEvent)]
    assert len(full) == 30 and part == full


def test_step_records_reach_the_file_at_checkpoints_not_per_step(tmp_path):
    tcfg = TrainConfig(steps=12, seq_len=8, batch_size=4, eval_every=6, threads=1)
    trainer = Trainer(corpus_of(tmp_path), MCFG, tcfg, tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    for e in trainer.events():
        if isinstance(e, StepEvent) and e.step in (3, 9):
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            assert len(lines) == (0 if e.step == 3 else 7)  # 6 steps + 1 evaluation, flushed at step 6
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 13))
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12]
    assert all(r["train_s"] > 0 and r["eval_s"] >= 0 and r["checkpoint_s"] >= 0 for r in evals)


def test_time_split_adds_up_and_the_best_step_is_kept(tmp_path):
    tcfg = TrainConfig(steps=10, seq_len=8, batch_size=4, eval_every=5, threads=1)
    done = list(Trainer(corpus_of(tmp_path), MCFG, tcfg, tmp_path / "run").events())[-1]
    split = done.time_split
    assert split.train > 0 and split.eval > 0 and split.checkpoint > 0
    assert split.train + split.eval + split.checkpoint <= done.elapsed + 1e-6
    assert done.best_step in (5, 10)
