"""The encoder-decoder's width chosen for its time budget (seq2seq/recipe.py): the rule with
injected rates (no timing), and the chosen line through the command line."""
import json

import pytest

from charlm.seq2seq.config import Seq2SeqConfig
from charlm.seq2seq.recipe import EPOCHS_NEEDED, LADDER, choose
from charlm.seqtask.config import SeqTrainConfig
from cli_helpers import invoke

MODEL = Seq2SeqConfig(src_vocab=30, tgt_vocab=40)
TOKENS = 1_000_000   # per epoch


def rate_for(epochs_at: dict, seconds: float):
    """A rate function that gives each width ``epochs_at[width]`` epochs in ``seconds`` of training."""
    from charlm.training.budget import MAX_EVAL_SHARE

    calls = []

    def rate(model):
        calls.append(model.hidden)
        return epochs_at[model.hidden] * TOKENS / (seconds * (1 - MAX_EVAL_SHARE))
    return rate, calls


def test_the_widest_width_that_still_gets_its_epochs_is_chosen():
    epochs = dict(zip(LADDER, (30, 22, EPOCHS_NEEDED + 1, EPOCHS_NEEDED - 1, 5, 4, 3)))
    rate, calls = rate_for(epochs, 900)
    choice = choose(MODEL, SeqTrainConfig(time_budget=900), TOKENS, set(), rate)
    assert choice.values == {"hidden": 192}
    assert calls == [128, 160, 192, 256]   # the climb stops at the first width short of its epochs
    assert f"width 256 would get {EPOCHS_NEEDED - 1:.1f} epochs" in choice.reason
    assert choice.reason.startswith("hidden 192: ~")


def test_the_floor_is_kept_and_the_top_is_named():
    low, _ = rate_for({h: 1 for h in LADDER}, 60)
    floor = choose(MODEL, SeqTrainConfig(time_budget=60), TOKENS, set(), low)
    assert floor.values == {"hidden": LADDER[0]} and "the narrowest tried" in floor.reason
    high, _ = rate_for({h: 100 for h in LADDER}, 60)
    choice = choose(MODEL, SeqTrainConfig(time_budget=60), TOKENS, set(), high)
    assert choice.values == {"hidden": LADDER[-1]} and "the widest tried" in choice.reason


def test_nothing_is_chosen_when_the_width_is_given_or_no_time_bounds_the_run():
    rate, calls = rate_for({h: 10 for h in LADDER}, 900)
    assert choose(MODEL, SeqTrainConfig(time_budget=900), TOKENS, {"hidden"}, rate) is None
    assert choose(MODEL, SeqTrainConfig(steps=100), TOKENS, set(), rate) is None
    assert calls == []
    given = choose(MODEL, SeqTrainConfig(time_budget=900), TOKENS, {"lr", "seed"}, rate)
    assert given.given == ("lr",)    # the seed describes the run, not its recipe


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    lines = "".join(f"{w}\t{' '.join(reversed(w))}\n" for w in ("abc", "abd", "bca", "cab", "dab", "bad"))
    (tmp_path / "train.tsv").write_text(lines * 4)
    (tmp_path / "dev.tsv").write_text(lines)
    return tmp_path


def test_the_chosen_line_in_training_and_in_eval(data):
    args = ("seq2seq", "train", "train.tsv", "--dev", "dev.tsv", "--target-level", "word", "--embed", "8",
            "--batch-size", "8", "--time", "1s")
    r = invoke(*args, "--run-dir", "chosen")
    assert r.exit_code == 0, r.output
    assert "chosen  hidden " in r.stderr and "given --batch-size, --embed" in r.stderr
    e = invoke("seq2seq", "eval", "chosen", "dev.tsv", "--json")
    assert e.exit_code == 0, e.output
    chosen = json.loads(e.stdout)["chosen"]
    assert chosen["values"]["hidden"] in LADDER and chosen["reason"].startswith("hidden ")
    assert "chosen  hidden " in invoke("seq2seq", "eval", "chosen", "dev.tsv").stdout
    kept = invoke(*args, "--hidden", "16", "--run-dir", "kept")
    assert kept.exit_code == 0, kept.output
    assert "chosen" not in kept.stderr and "1×16 encoder" in kept.stderr
