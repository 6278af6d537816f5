"""The classifier's and tagger's recipe chosen for the budget: the rule for made-up data shapes
and machines (no training), flags win and are named, the choice is stored, shown by eval and
kept by a resume."""
import dataclasses
import json

import pytest
from cli_helpers import invoke
from test_classify import toy_examples, write_tsv

from charlm.seqtask import recipe
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.recipe import (DataShape, EPOCH_CAP, MAX_MEMBERS, MEMBER_EPOCHS, TAG_LADDER,
                                   TOKENS_PER_PARAM, choose, parameters, wide_buckets)
from charlm.training.recipe import climb

WORDS = DataShape(examples=36_000, tokens=300_000, longest=30)   # word language identification's shape
CLASSIFIER = SeqModelConfig(task="classify", vocab_size=40, num_labels=12)
FIVE_MINUTES = SeqTrainConfig(time_budget=300.0)


def members_rate(per_member: float):
    """A made-up machine: training tokens per second shared by the members."""
    return lambda model: per_member / model.members


def epochs(rate, model, shape=WORDS, seconds=300.0):
    return rate(model) * seconds * (1 - recipe._eval_share()) / shape.tokens


def test_the_ladder_stops_at_the_first_rung_the_budget_cannot_feed():
    seen = []
    assert climb((1, 2, 3, 4), lambda k: True, lambda k: seen.append(k) or k < 3) == 2 and seen == [1, 2, 3]
    assert climb((1, 2), lambda k: True, lambda k: False) == 1          # the floor, however short the budget
    assert climb((1, 2, 3), lambda k: k < 3, lambda k: True) == 2       # memory stops the walk too
    assert climb((1, 2), lambda k: False, lambda k: True) is None


def test_a_classifier_gets_the_features_and_as_many_members_as_get_their_epochs():
    rate = members_rate(30_000)   # 29 epochs of one model in five minutes: 3 members get 9.8 each, 4 get 7.35
    choice = choose(CLASSIFIER, FIVE_MINUTES, WORDS, set(), rate)
    v = choice.values
    assert (v["ngrams"], v["input_dropout"], v["dropout"]) == (4, 0.5, 0.5)
    assert (v["wide_ngrams"], v["wide_dropout"], v["wide_buckets"]) == (5, 0.3, 131072)
    assert v["class_lm"] == 5 and "class 5-gram LMs" in choice.reason
    assert v["members"] == 3 and v["member_salts"] is True
    assert epochs(rate, SeqModelConfig(members=3)) >= MEMBER_EPOCHS > epochs(rate, SeqModelConfig(members=4))
    assert v["epochs"] == EPOCH_CAP == MEMBER_EPOCHS   # 9.8 would fit: past a member's epochs it only overfits
    assert choice.reason.startswith("3 members with own n-gram hashes, 2..4-gram embeddings")
    assert f"at most {EPOCH_CAP:g} epochs: ~{EPOCH_CAP:.1f} epochs in 300s" in choice.reason
    assert "4 members would get 7.3 epochs each, < 8" in choice.reason and "in 300s" in choice.reason
    assert choice.given == ()
    again = choose(CLASSIFIER, FIVE_MINUTES, WORDS, set(), rate)   # deterministic given the rates
    assert (again.values, again.reason, again.rates) == (choice.values, choice.reason, choice.rates)


def test_short_budgets_train_one_model_and_long_ones_stop_at_the_epoch_cap():
    short = choose(CLASSIFIER, SeqTrainConfig(time_budget=30.0), WORDS, set(), members_rate(30_000))
    assert short.values["members"] == 1 and short.values["member_salts"] is False
    assert short.values["ngrams"] == 4 and "2 members would get" in short.reason
    assert "epochs" not in short.values   # a budget short of the cap trains to its end
    long = choose(CLASSIFIER, SeqTrainConfig(time_budget=3600.0), WORDS, set(), members_rate(30_000))
    assert long.values["members"] == MAX_MEMBERS and long.values["epochs"] == EPOCH_CAP
    assert f"at most {EPOCH_CAP:g} epochs" in long.reason and "more did not pay" in long.reason
    bigger = DataShape(examples=360_000, tokens=3_000_000, longest=30)   # ten times the data: fewer members
    assert choose(CLASSIFIER, SeqTrainConfig(time_budget=1800.0), bigger, set(),
                  members_rate(30_000)).values["members"] == 2


def test_the_data_shapes_the_features():
    words = choose(SeqModelConfig(task="classify", level="word", vocab_size=5000, num_labels=2), FIVE_MINUTES,
                   WORDS, set(), members_rate(30_000))
    assert (words.values["ngrams"], words.values["wide_ngrams"]) == (2, 2)   # word pairs at the word level
    assert not words.values["class_lm"] and "LMs" not in words.reason        # not measured on words: none
    alone = choose(CLASSIFIER, FIVE_MINUTES, dataclasses.replace(WORDS, held_out=False), set(), members_rate(30_000))
    assert not alone.values["class_lm"] and "LMs" not in alone.reason        # no dev split to weigh them on
    many = choose(SeqModelConfig(task="classify", vocab_size=40, num_labels=1000), FIVE_MINUTES, WORDS, set(),
                  members_rate(30_000))
    assert many.values["wide_buckets"] == wide_buckets(1000) == 2048 and "(2,048 buckets)" in many.reason
    assert wide_buckets(12) == 131072 and wide_buckets(10**6) == 1024


def test_given_settings_win_and_are_named():
    rate = members_rate(30_000)
    model = SeqModelConfig(task="classify", vocab_size=40, num_labels=12, members=2, ngrams=0, cell="gru")
    choice = choose(model, FIVE_MINUTES, WORDS, {"members", "ngrams", "cell", "time_budget", "seed"}, rate)
    assert not {"members", "ngrams", "input_dropout"} & set(choice.values)   # no n-grams: no input dropout
    assert choice.values["member_salts"] is True and choice.values["wide_ngrams"] == 5
    assert "members given" in choice.reason and choice.given == ("cell", "members", "ngrams")
    plain = choose(CLASSIFIER, FIVE_MINUTES, WORDS, {"wide_ngrams", "dropout", "class_lm"}, rate)
    assert not {"wide_ngrams", "wide_dropout", "wide_buckets", "dropout", "class_lm"} & set(plain.values)
    assert choose(CLASSIFIER, SeqTrainConfig(steps=100), WORDS, set(), rate) is None        # no time budget
    assert "in 300s" in choose(CLASSIFIER, SeqTrainConfig(), WORDS, set(), rate).reason   # none: the default
    tagger = SeqModelConfig(task="tag", vocab_size=40, num_labels=2)
    kept = choose(tagger, FIVE_MINUTES, WORDS, {"hidden"}, rate)
    assert kept.values == {"ngrams": 4} and "width given" in kept.reason
    assert choose(tagger, FIVE_MINUTES, WORDS, {"hidden", "ngrams"}, rate) is None   # nothing left to choose
    words = SeqModelConfig(task="tag", level="word", vocab_size=40, num_labels=2)
    assert "ngrams" not in choose(words, FIVE_MINUTES, WORDS, set(), rate).values


def test_memory_and_ranks_limit_the_ensemble():
    rate = members_rate(10**6)
    assert choose(CLASSIFIER, FIVE_MINUTES, WORDS, set(), rate).values["members"] == MAX_MEMBERS
    tight = choose(CLASSIFIER, FIVE_MINUTES, WORDS, set(), rate, fits=lambda m: m.members < 3)
    assert tight.values["members"] == 2 and "(3) would not fit in memory" in tight.reason
    ranks = choose(CLASSIFIER, FIVE_MINUTES, WORDS, set(), rate, ranks=2)
    assert ranks.values["members"] == 1 and "ranks" in ranks.reason


def test_a_tagger_gets_the_widest_model_its_tokens_still_train():
    tagger = SeqModelConfig(task="tag", vocab_size=60, num_labels=2)
    text = DataShape(examples=60_000, tokens=3_000_000, longest=200)

    def rate(model):   # tokens per second inversely proportional to the recurrent work
        return 2e10 / parameters(model)
    choice = choose(tagger, FIVE_MINUTES, text, set(), rate)
    H = choice.values["hidden"]
    train_seconds = 300 * (1 - recipe._eval_share())

    def sized(hidden):
        return SeqModelConfig(task="tag", vocab_size=60, num_labels=2, hidden=hidden, ngrams=4)
    assert rate(sized(H)) * train_seconds >= TOKENS_PER_PARAM * parameters(sized(H))
    wider = TAG_LADDER[TAG_LADDER.index(H) + 1]
    assert rate(sized(wider)) * train_seconds < TOKENS_PER_PARAM * parameters(sized(wider))
    assert f"width {wider} would train" in choice.reason and choice.values == {"ngrams": 4, "hidden": H}
    assert choice.reason.startswith(f"bidirectional LSTM 1×{H}, 2..4-gram embeddings")
    longer = choose(tagger, SeqTrainConfig(time_budget=3000.0), text, set(), rate)
    assert longer.values["hidden"] > H


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    # a made-up machine instead of the probe: the choice is the rule's, whatever the load
    monkeypatch.setattr(recipe, "probe_rate", lambda model, train, sample: 1e5 / model.members)
    return write_tsv(tmp_path / "train.tsv", toy_examples(64)), write_tsv(tmp_path / "dev.tsv", toy_examples(16, 1))


TINY = ["--hidden", "6", "--embed", "4", "--batch-size", "16", "--threads", "1"]


def test_the_chosen_line_is_printed_stored_shown_by_eval_and_kept_by_a_resume(data, tmp_path):
    run = tmp_path / "run"
    result = invoke("classify", "train", data[0], "--dev", data[1], "--run-dir", run, *TINY,
                    "--members", "1", "--time", "10m", "--steps", "2")
    assert result.exit_code == 0, result.output
    chosen = [line for line in result.stderr.splitlines() if line.strip().startswith("chosen")]
    assert len(chosen) == 1 and "2..4-gram embeddings" in chosen[0]
    assert "given --batch-size, --embed, --hidden, --members; any flag overrides" in chosen[0]
    evaluated = invoke("classify", "eval", run, data[1])
    assert evaluated.exit_code == 0 and chosen[0].strip() in evaluated.stdout
    report = json.loads(invoke("classify", "eval", run, data[1], "--json").stdout)
    assert report["chosen"]["values"]["ngrams"] == 4 and "members" in report["chosen"]["given"]
    resumed = invoke("classify", "train", "--resume", run, "--steps", "4")
    assert resumed.exit_code == 0, resumed.output
    assert chosen[0].strip() in resumed.stderr
    from charlm.seqtask import store

    last = store.load(run / "last.safetensors")
    assert (last.config.ngrams, last.config.wide_ngrams, last.config.input_dropout) == (4, 5, 0.5)
    assert last.metadata["data"]["chosen"]["reason"] == report["chosen"]["reason"]
    assert last.metadata["step"] == 4


def test_a_step_budget_chooses_nothing_and_a_tagger_chooses_its_width(data, tmp_path):
    result = invoke("classify", "train", data[0], "--dev", data[1], "--run-dir", tmp_path / "plain", *TINY,
                    "--steps", "2")
    assert result.exit_code == 0 and "chosen" not in result.stderr
    (tmp_path / "text.txt").write_text("the cat sat on the mat\nand the dog sat too\n" * 20)
    tagged = invoke("tag", "train", tmp_path / "text.txt", "--format", "spaces", "--run-dir", tmp_path / "tag",
                    "--embed", "4", "--time", "5m", "--steps", "2", "--threads", "1")
    assert tagged.exit_code == 0, tagged.output
    line = next(line for line in tagged.stderr.splitlines() if line.strip().startswith("chosen"))
    assert "LSTM 1×" in line and "--level" not in line and "given --embed" in line
