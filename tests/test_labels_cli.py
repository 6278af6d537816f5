"""Generation conditioned on a label: ``charlm train --labelled`` on text<TAB>label lines, then
``charlm sample --label``, ``info``, ``eval`` and ``score`` of a labelled model; every refusal one line."""
import json

import numpy as np
import pytest
from cli_helpers import invoke, one_red_line

from charlm.lm.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py
SMALL = ["--hidden", "24", "--embed", "8", "--layers", "1", "--batch-size", "8", "--eval-every", "50", "--lr", "0.01"]


def words(alphabet, n, seed):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(alphabet), rng.integers(2, 6))) for _ in range(n)]


def write_lines(path, pairs):
    path.write_text("".join(f"{text}\t{label}\n" for text, label in pairs))
    return path


def two_alphabets(n=150, seed=0):
    """Words of a, b, c labelled "abc"; words of x, y, z labelled "xyz": the label says which letters."""
    pairs = [(w, "abc") for w in words("abc", n, seed)] + [(w, "xyz") for w in words("xyz", n, seed + 1)]
    return [pairs[i] for i in np.random.default_rng(seed).permutation(len(pairs))]


def train(tmp, path, run, *extra, steps=300):
    r = invoke("train", path, "--labelled", "--steps", steps, *SMALL, "--run-dir", tmp / run, *extra)
    assert r.exit_code == 0, r.output
    return tmp / run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labels")
    return train(tmp, write_lines(tmp / "train.tsv", two_alphabets()), "run")


def samples(run, label, n=20, seed=1, *extra):
    r = invoke("sample", run, "--label", label, "--num-samples", n, "--seed", seed, "-n", 12, *extra)
    assert r.exit_code == 0, r.output
    return r.stdout.splitlines()


@pytest.mark.parametrize("condition", ["input", "state"])
def test_samples_follow_the_label_asked_for(run, tmp_path, condition):
    if condition == "state":
        run = train(tmp_path, write_lines(tmp_path / "train.tsv", two_alphabets()), "state", "--condition", "state")
    for label, other in (("abc", "xyz"), ("xyz", "abc")):
        text = "".join(samples(run, label))
        assert len(text) > 20
        assert sum(ch in label for ch in text) > 0.9 * len(text), (label, other, text)


def test_conditional_sampling_is_reproducible_by_seed_and_takes_the_sampling_controls(run):
    assert samples(run, "abc", 5, 3) == samples(run, "abc", 5, 3)
    assert samples(run, "abc", 5, 3) != samples(run, "xyz", 5, 3)
    controlled = ("-t", "0.7", "--top-k", "3", "--top-p", "0.9", "--min-length", "2", "--repetition-penalty", "1.2")
    assert samples(run, "xyz", 5, 3, *controlled) == samples(run, "xyz", 5, 3, *controlled)
    r = invoke("sample", run, "--label", "xyz", "--seed", "3", "--json", "-n", "8")
    assert json.loads(r.stdout)["label"] == "xyz"


def test_beam_search_under_a_label(run):
    r = invoke("sample", run, "--label", "abc", "--beam", "3", "-n", "8")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(set(line.split("\t")[-1]) <= set("abc") for line in lines)


def test_the_checkpoint_holds_the_labels_and_info_shows_them(run):
    checkpoint = load_checkpoint(run)
    assert checkpoint.metadata["labels"] == ["abc", "xyz"]
    assert checkpoint.tensors["label_embedding.weight"].shape == (2, 3 * 24)   # gru: 3 gates of 24
    r = invoke("info", run)
    assert r.exit_code == 0 and "abc, xyz" in r.stdout
    assert json.loads(invoke("info", run, "--json").stdout)["labels"] == ["abc", "xyz"]


def test_eval_and_score_read_each_line_with_its_label(run, tmp_path):
    from charlm.data.labelled import build_labelled_corpus
    from charlm.lm.evaluate import line_nll

    pairs = [("abca", "abc"), ("xyzz", "xyz"), ("abca", "xyz")]
    write_lines(tmp_path / "dev.tsv", pairs)
    r = invoke("eval", run, tmp_path / "dev.tsv", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    checkpoint = load_checkpoint(run)
    corpus = build_labelled_corpus([tmp_path / "dev.tsv"], val_fraction=0, tokenizer=checkpoint.tokenizer,
                                   names=checkpoint.metadata["labels"])
    nll = line_nll(checkpoint.build_model(), corpus.train, corpus.labels.train)
    assert got["tokens"] == nll.size == 15 and got["loss_nats"] == pytest.approx(nll.mean(), rel=1e-6)
    assert got["characters"] == 15   # the texts and their line ends: a label is given, not predicted
    from charlm.lm.evaluate import count_characters

    assert count_characters([tmp_path / "dev.tsv"], "line", "word", labelled=True) == 15   # a word model's count
    scored = [json.loads(line) for line in invoke("score", run, tmp_path / "dev.tsv", "--json").stdout.splitlines()]
    assert [s["tokens"] for s in scored] == [5, 5, 5]
    assert -sum(s["log_prob"] for s in scored) == pytest.approx(nll.sum(), rel=1e-6)
    assert scored[0]["log_prob"] > scored[2]["log_prob"]   # abc letters are likelier under their own label
    (tmp_path / "bad.tsv").write_text("abca\tabc\nno tab here\nabc\tqqq\n")
    r = invoke("score", run, tmp_path / "bad.tsv")
    out = r.stdout.splitlines()
    assert r.exit_code == 1 and float(out[0].split("\t")[0]) < 0, r.output
    assert out[1] == "error\texpected text<TAB>label, found no tab" and out[2] == "error\tunknown label 'qqq'"


def test_labels_that_say_nothing_train_like_no_labels(tmp_path):
    """The same lines with random labels, or with one label for all: the same loss after as many steps."""
    pairs = [(text, "one") for text, _ in two_alphabets(100, 5)]
    rng = np.random.default_rng(2)
    useless = [(text, f"l{k}") for (text, _), k in zip(pairs, rng.integers(0, 4, len(pairs)))]
    losses = []
    for name, data in (("one", pairs), ("useless", useless)):
        run = train(tmp_path, write_lines(tmp_path / f"{name}.tsv", data), name, "--val-fraction", "0.2", steps=120)
        losses.append(load_checkpoint(run).metadata["val_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


@pytest.mark.parametrize("args, message", [
    (["--num-samples", "2"], "choose one with --label (abc, xyz)"),
    (["--label", "qqq"], "unknown label 'qqq'; the model knows abc, xyz"),
    (["--label", "qqq", "--beam", "2"], "unknown label 'qqq'"),
])
def test_a_labelled_model_refuses_a_missing_or_unknown_label(run, args, message):
    assert message in one_red_line(invoke("sample", run, *args))


def test_an_unlabelled_model_refuses_a_label(tmp_path):
    (tmp_path / "t.txt").write_text("abc\nabd\n" * 40)
    r = invoke("train", tmp_path / "t.txt", "--steps", "2", "--hidden", "8", "--layers", "1", "--batch-size", "2",
               "--seq-len", "8", "--run-dir", tmp_path / "plain")
    assert r.exit_code == 0, r.output
    assert "not trained on labelled lines" in one_red_line(invoke("sample", tmp_path / "plain", "--label", "abc"))


@pytest.mark.parametrize("text, message", [
    ("ab\tx\ncd no tab\n", ":2: expected text<TAB>label, found no tab"),
    ("ab\tx\ncd\t \n", ":2: empty label"),
])
def test_training_refuses_a_line_without_a_label_naming_it(tmp_path, text, message):
    (tmp_path / "bad.tsv").write_text(text * 1)
    assert message in one_red_line(invoke("train", tmp_path / "bad.tsv", "--labelled", "--steps", "1"))


def test_a_held_out_label_unknown_to_training_and_too_few_lines_are_refused(tmp_path):
    write_lines(tmp_path / "train.tsv", [("ab", "x")] * 20)
    write_lines(tmp_path / "dev.tsv", [("ab", "zz")])
    line = one_red_line(invoke("train", tmp_path / "train.tsv", "--labelled", "--val-file", tmp_path / "dev.tsv",
                               "--steps", "1"))
    assert "label 'zz' is not one of the 1 labels" in line
    line = one_red_line(invoke("train", tmp_path / "train.tsv", "--labelled", "--batch-size", "64", "--steps", "1"))
    assert "fewer than batch_size 64" in line
