"""Tagging: CoNLL and restore-spaces data, a synthetic rule learned to ~100 %, the CLI."""
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.errors import CorpusError
from charlm.seqtask import data
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.predict import Predictor
from charlm.seqtask.train import SeqTrainer


def next_is_vowel_examples(n, seed=0):
    """Tag each letter with whether the NEXT letter is a vowel: needs the right context, which
    only the reverse direction gives."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        word = [r.choice("abcdeio") for _ in range(r.randint(1, 9))]
        tags = ["V" if i + 1 < len(word) and word[i + 1] in "aeio" else "-" for i in range(len(word))]
        out.append(data.Example(word, tags))
    return out


def test_synthetic_rule_learned_by_a_bidirectional_tagger(tmp_path):
    config = SeqModelConfig(task="tag", hidden=12, embed=6, dropout=0.0)
    trainer = SeqTrainer(next_is_vowel_examples(300), next_is_vowel_examples(60, 1), config,
                         SeqTrainConfig(epochs=8, lr=0.02, warmup_steps=0, batch_size=16), tmp_path / "run")
    events = list(trainer.events())
    last = [e for e in events if hasattr(e, "scores")][-1].scores
    assert last["accuracy"] >= 0.99 and last["sequence_accuracy"] >= 0.95
    (tagged,) = Predictor.load(tmp_path / "run").tag([list("cab")])
    assert tagged["tags"] == ["V", "-", "-"]


def test_an_ensemble_tagger_with_ngrams_learns_the_rule(tmp_path):
    """The tag path through hashed n-grams, input dropout and two members, end to end."""
    config = SeqModelConfig(task="tag", hidden=12, embed=6, dropout=0.0, ngrams=3, buckets=64,
                            input_dropout=0.1, members=2)
    trainer = SeqTrainer(next_is_vowel_examples(300), next_is_vowel_examples(60, 1), config,
                         SeqTrainConfig(epochs=8, lr=0.02, warmup_steps=0, batch_size=16), tmp_path / "run")
    events = list(trainer.events())
    assert [e for e in events if hasattr(e, "scores")][-1].scores["accuracy"] >= 0.97
    (tagged,) = Predictor.load(tmp_path / "run").tag([list("cab")])
    assert tagged["tags"] == ["V", "-", "-"]


def test_restore_spaces_examples_and_back():
    text = "the  cat sat\n\non the mat\n" + "word " * 30
    examples = data.restore_spaces_examples(text, max_chars=40)
    first = examples[0]
    assert "".join(first.tokens) == "thecatsat"
    assert "".join(first.label) == "--S--S---"
    assert data.spaces_to_text(first.tokens, first.label) == "the cat sat"
    assert [len(e.tokens) for e in examples[2:]] == [40, 40, 40]  # 30 four-letter words, 10 a piece


def test_conll_reader(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- O\n\nThe DT\ncat  NN\n\n\nsat\tVBD\n")
    examples = data.read_conll(path)
    assert [(e.tokens, e.label) for e in examples] == [(["The", "cat"], ["DT", "NN"]), (["sat"], ["VBD"])]
    path.write_text("The DT\nlonely\n")
    with pytest.raises(CorpusError, match=r"a.conll:2: expected a token and its tag"):
        data.read_conll(path)


def test_cli_restore_spaces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    r = random.Random(0)
    words = ["the", "cat", "a", "dog", "ran", "sat", "on", "mat"]
    (tmp_path / "text.txt").write_text("\n".join(" ".join(r.choice(words) for _ in range(6)) for _ in range(300)))
    result = CliRunner().invoke(main, ["tag", "train", "text.txt", "--format", "spaces", "--epochs", "10",
                                       "--hidden", "24", "--lr", "0.02", "--warmup-steps", "0", "--batch-size", "16",
                                       "--dropout", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["tag", "predict", "thecatsatonthemat", "--json"], catch_exceptions=False)
    assert json.loads(result.stdout)["restored"] == "the cat sat on the mat"
    result = CliRunner().invoke(main, ["tag", "eval", "text.txt", "--json"], catch_exceptions=False)
    scores = json.loads(result.stdout)
    assert scores["accuracy"] > 0.99 and scores["labels"] == ["-", "S"]


def test_cli_conll_tag_predict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    lines = []
    for e in next_is_vowel_examples(200):
        lines += [f"{t}\t{g}" for t, g in zip(e.tokens, e.label)] + [""]
    (tmp_path / "train.conll").write_text("\n".join(lines))
    result = CliRunner().invoke(main, ["tag", "train", "train.conll", "--epochs", "1", "--hidden", "8",
                                       "--dev-fraction", "0.2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["tag", "predict", "c a b"], catch_exceptions=False)
    assert len(result.stdout.split()) == 3 and result.stdout.startswith("c/")
    result = CliRunner().invoke(main, ["classify", "predict", "abc"])
    assert result.exit_code == 1 and "no classify runs" in result.stderr
    np.testing.assert_equal(len(result.stderr.strip().splitlines()), 1)


def test_a_conll_file_is_read_as_words_unless_told_and_long_tokens_refuse_characters(tmp_path):
    from cli_helpers import one_red_line

    lines = [l for _ in range(6) for l in ("The\tDET", "cat\tNOUN", "sat\tVERB", "")]
    (tmp_path / "pos.conll").write_text("\n".join(lines))
    result = CliRunner().invoke(main, ["tag", "train", str(tmp_path / "pos.conll"), "--steps", "2", "--hidden", "8",
                                       "--run-dir", str(tmp_path / "words")])
    assert result.exit_code == 0, result.output
    from charlm.seqtask import store

    assert store.load(tmp_path / "words").config.level == "word"
    refused = CliRunner().invoke(main, ["tag", "train", str(tmp_path / "pos.conll"), "--level", "char", "--steps", "2",
                                        "--run-dir", str(tmp_path / "chars")])
    assert "'The' is longer than one character" in one_red_line(refused) and "--level word" in one_red_line(refused)
