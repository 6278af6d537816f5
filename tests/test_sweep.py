"""charlm sweep: trials planned and validated up front, run as independent runs, ranked by loss."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.errors import ConfigError
from charlm.lm.start import LmTrials
from charlm.training.sweep import RESULTS_FILE, plan_sweep, run_sweep

WORDS = "a quick brown fox jumps over the lazy dog under grey skies".split()
LM = LmTrials([])
TINY = ["layers=1", "embed=8", "batch_size=4", "seq_len=8", "steps=6", "eval_every=3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("sweep") / "words.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS, 8)) for _ in range(400)) + "\n")
    return path


def test_a_grid_is_every_combination_with_typed_values():
    plan = plan_sweep(LM, ["hidden=8,16", "lr=1e-3,3e-3,1e-2", "cell=gru"], [], workers=2, cores=2)
    assert len(plan.trials) == 6 and plan.threads == 1
    assert {(t.values["hidden"], t.values["lr"]) for t in plan.trials} == \
        {(h, lr) for h in (8, 16) for lr in (1e-3, 3e-3, 1e-2)}
    assert all(t.values["cell"] == "gru" and isinstance(t.values["hidden"], int) for t in plan.trials)
    assert [t.name for t in plan.trials][:2] == ["trial-001", "trial-002"]


def test_a_duration_is_given_as_charlm_train_takes_it():
    plan = plan_sweep(LM, ["time_budget=5m,90s"], [])
    assert [t.values["time_budget"] for t in plan.trials] == [300.0, 90.0]


def test_random_axes_draw_within_their_ranges_reproducibly():
    plan = plan_sweep(LM, ["hidden=8,16"], ["lr=1e-4:1e-1:log", "dropout=0:0.3", "layers=1:3"], trials=20, seed=4)
    assert len(plan.trials) == 40
    lrs = [t.values["lr"] for t in plan.trials]
    assert all(1e-4 <= x <= 1e-1 for x in lrs)
    assert min(lrs) < 1e-3 < max(lrs)  # log-uniform: the low decades are drawn too
    assert all(0 <= t.values["dropout"] <= 0.3 and t.values["layers"] in (1, 2, 3) for t in plan.trials)
    again = plan_sweep(LM, ["hidden=8,16"], ["lr=1e-4:1e-1:log", "dropout=0:0.3", "layers=1:3"], trials=20, seed=4)
    assert [t.values for t in again.trials] == [t.values for t in plan.trials]


@pytest.mark.parametrize("grid, randoms, trials, message", [
    (["widht=8"], [], 0, "not a setting of charlm train"),
    (["hidden=eight"], [], 0, "takes int"),
    (["hidden=-3"], [], 0, "hidden"),
    ([], ["lr=1e-3:1e-2"], 0, "--trials"),
    (["hidden=8"], [], 3, "random axes"),
    ([], ["lr=1e-2:1e-3"], 2, "low < high"),
    ([], ["lr=0:1e-3:log"], 2, "low > 0"),
    ([], ["cell=rnn:gru"], 2, "not a number"),
    (["hidden"], [], 0, "name=value"),
    (["hidden=8", "hidden=16"], [], 0, "twice"),
])
def test_mistakes_are_refused_before_anything_runs(grid, randoms, trials, message):
    with pytest.raises(ConfigError, match=message):
        plan_sweep(LM, grid, randoms, trials)


def test_two_tiny_runs_on_local_workers_are_ranked(corpus, tmp_path):
    where = tmp_path / "sw"
    result = CliRunner().invoke(main, ["sweep", str(corpus), "--grid", "hidden=4,16", *sum((["--grid", s] for s in TINY), []),
                                       "--workers", "2", "--sweep-dir", str(where), "--json"])
    assert result.exit_code == 0, result.output
    ranked = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["name"] for r in ranked) == ["trial-001", "trial-002"]
    assert all(r["metric"] == "val_loss" and r["best"]["val_loss"] == r["best_value"] for r in ranked)
    losses = [r["best_value"] for r in ranked]
    assert losses == sorted(losses) and all(math.isfinite(x) for x in losses)
    assert {r["values"]["hidden"] for r in ranked} == {4, 16}
    for r in ranked:
        assert r["steps"] == 6 and (where / r["name"] / "model.safetensors").exists()
    assert len((where / RESULTS_FILE).read_text().splitlines()) == 2
    again = CliRunner().invoke(main, ["sweep", str(corpus), "--grid", "hidden=4", "--sweep-dir", str(where)])
    assert again.exit_code == 1 and "already holds trial-001" in again.output


def test_a_failing_trial_is_reported_and_the_others_still_run(corpus, tmp_path):
    plan = plan_sweep(LM, ["seq_len=8,4000", "hidden=4", *TINY[:3], *TINY[4:]], [], workers=1)
    results = run_sweep(LmTrials([corpus]), plan, tmp_path / "sw", workers=1)
    assert [r.values["seq_len"] for r in results] == [8, 4000]  # failures rank last
    assert results[0].best_value is not None and results[1].error and "seq_len" in results[1].error


def test_a_dask_cluster_runs_the_trials(corpus, tmp_path):
    distributed = pytest.importorskip("distributed", reason="needs the dask extra (pip install 'charlm[dask]')")
    plan = plan_sweep(LM, ["hidden=4,8", *TINY], [], workers=None)
    assert plan.threads == 0
    plan.threads = 1  # two workers on this 2-core machine
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        results = run_sweep(LmTrials([corpus]), plan, tmp_path / "sw", scheduler=cluster.scheduler_address)
    assert sorted(r.name for r in results) == ["trial-001", "trial-002"]
    assert all(r.error is None and r.steps == 6 for r in results)
    assert results[0].best_value <= results[1].best_value
