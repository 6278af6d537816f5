"""Sweeps of classifiers and taggers through the one sweep: ranked by dev accuracy (ties: lower
dev loss), records naming the metric, trials that are ordinary runs, the task's own settings."""
import json

import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.errors import ConfigError
from charlm.seqtask.runs import SeqTrials
from charlm.seqtask.task import SeqTask
from charlm.training.sweep import RESULTS_FILE, TrialResult, plan_sweep, ranked
from test_classify import toy_examples, write_tsv
from test_seqtask_runs import one_line_error
from test_tag import next_is_vowel_examples

FIXED = ["embed=6", "dropout=0", "warmup_steps=0", "batch_size=16", "threads=1"]


def _grid(*settings):
    return [arg for s in settings for arg in ("--grid", s)]


def _sweep(*args):
    return CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)


def test_a_classify_sweep_ranks_by_dev_accuracy_and_its_best_run_predicts(tmp_path):
    train, dev = write_tsv(tmp_path / "train.tsv", toy_examples(200)), write_tsv(tmp_path / "dev.tsv", toy_examples(60, 1))
    where = tmp_path / "sw"
    # a learning rate too small to learn anything in 6 epochs comes first by name, last by accuracy
    result = _sweep("classify", "sweep", str(train), "--dev", str(dev), "--sweep-dir", str(where),
                    *_grid("lr=0.000001,0.02", "min_lr=0", "hidden=12", "epochs=6", "seed=3", *FIXED))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in records] == ["trial-002", "trial-001"]
    assert all(r["metric"] == "accuracy" and r["best_value"] == r["best"]["accuracy"] for r in records)
    assert records[0]["best_value"] >= 0.95 > records[1]["best_value"]
    assert "best accuracy" in result.stderr
    assert {json.loads(line)["metric"] for line in (where / RESULTS_FILE).read_text().splitlines()} == {"accuracy"}
    best = records[0]["run_dir"]
    predicted = CliRunner().invoke(main, ["classify", "predict", best, "aeiou", "bcd", "--json"], catch_exceptions=False)
    assert predicted.exit_code == 0, predicted.output
    assert [json.loads(line)["labels"][0]["label"] for line in predicted.stdout.splitlines()] == ["vowel", "cons"]


def test_a_tag_sweep_of_two_trials(tmp_path):
    lines = []
    for e in next_is_vowel_examples(120):
        lines += [f"{t}\t{g}" for t, g in zip(e.tokens, e.label)] + [""]
    (tmp_path / "train.conll").write_text("\n".join(lines))
    result = _sweep("tag", "sweep", str(tmp_path / "train.conll"), "--dev-fraction", "0.2",
                    "--sweep-dir", str(tmp_path / "sw"), *_grid("hidden=4,8", "steps=6", "eval_every=3", *FIXED))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["name"] for r in records) == ["trial-001", "trial-002"]
    assert all(r["metric"] == "accuracy" and r["error"] is None and r["steps"] == 6 for r in records)
    first, second = (r["best"] for r in records)
    assert not SeqTask.better(second, first)   # ranked as the runs rank their own evaluations


def test_ties_in_accuracy_go_to_the_lower_loss_and_failures_last():
    def result(name, accuracy=None, loss=None):
        best = None if accuracy is None else {"accuracy": accuracy, "loss": loss}
        return TrialResult(name, {}, name, "accuracy", accuracy, best)

    results = [result("a"), result("b", 0.9, 0.5), result("c", 0.9, 0.3), result("d", 0.95, 0.9)]
    assert [r.name for r in ranked(results, SeqTask.better)] == ["d", "c", "b", "a"]


@pytest.mark.parametrize("task, setting", [("classify", "widht=3"), ("tag", "pooling=max"), ("tag", "seq_len=8")])
def test_settings_the_task_does_not_have_are_refused_in_one_line(tmp_path, task, setting):
    path = write_tsv(tmp_path / "train.tsv", toy_examples(20))
    result = CliRunner().invoke(main, [task, "sweep", str(path), "--grid", setting, "--sweep-dir", str(tmp_path / "sw")])
    one_line_error(result, repr(setting.split("=")[0]), f"charlm {task} train -h")
    assert not (tmp_path / "sw").exists()


def test_a_classify_plan_is_validated_before_anything_runs(tmp_path):
    kind = SeqTrials("classify", write_tsv(tmp_path / "train.tsv", toy_examples(20)))
    plan = plan_sweep(kind, ["time_budget=2m", "ngrams=0,3"], ["lr=1e-3:1e-2:log"], trials=2)
    assert len(plan.trials) == 4 and all(t.values["time_budget"] == 120.0 for t in plan.trials)
    with pytest.raises(ConfigError, match="buckets is for"):
        plan_sweep(kind, ["buckets=64"], [])
