"""Word level: --split whitespace|words, line breaks kept through encode and decode (a poem comes
back with its lines), and a word model's samples keep them too and never show <unk>."""
import pytest
from cli_helpers import invoke

from charlm.data.tokenizer import NEWLINE, Tokenizer, split_words
from charlm.lm.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py
POEM = "Roses are red,\nviolets are blue;\nsugar is sweet,\nand so are you.\n"


def test_split_rules_keep_line_breaks():
    assert split_words("a  b\tc\n\nd", "whitespace") == ["a", "b", "c", NEWLINE, NEWLINE, "d"]
    assert split_words("red,\nblue.", "words") == ["red", ",", NEWLINE, "blue", "."]
    assert split_words("x<eos>y", "words") == ["x", "<eos>", "y"]


@pytest.mark.parametrize("split", ["whitespace", "words"])
def test_a_poem_comes_back_with_its_lines(split):
    tok = Tokenizer.fit([POEM], "word", split=split)
    text = tok.decode(tok.encode(POEM))
    assert text.split("\n") == [" ".join(split_words(line, split)) for line in POEM.split("\n")]
    if split == "whitespace":
        assert text == POEM
    assert Tokenizer.from_json(tok.to_json()) == tok   # "\n" is a valid token in the saved form


def test_a_vocabulary_without_line_breaks_drops_them_as_before():
    old = Tokenizer("word", ["<eos>", "<unk>", "a", "b"], "whitespace")
    assert old.encode("a\nb\n").tolist() == [2, 3] and old.count_unknown("a\nb\nc") == 1


@pytest.fixture(scope="module")
def poem_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("poems")
    (tmp / "poems.txt").write_text((POEM + "\n") * 60)
    for split in ("whitespace", "words"):
        r = invoke("train", tmp / "poems.txt", "--level", "word", "--split", split, "--eos", "paragraph",
                   "--steps", "60", "--hidden", "32", "--layers", "1", "--seq-len", "16", "--batch-size", "8",
                   "--lr", "0.01", "--run-dir", tmp / split)
        assert r.exit_code == 0, r.output
    return tmp


@pytest.mark.parametrize("split", ["whitespace", "words"])
def test_a_word_model_learns_and_samples_lines(poem_runs, split):
    checkpoint = load_checkpoint(poem_runs / split)
    tok = checkpoint.tokenizer
    assert tok.split == split and NEWLINE in tok.tokens
    assert ("," in tok.tokens) == (split == "words")
    r = invoke("sample", poem_runs / split, "-t", "0.5", "--seed", "3", "--num-samples", "3", "--json")
    assert r.exit_code == 0, r.output
    import json

    samples = json.loads(r.stdout)["samples"]
    assert any("\n" in s.strip("\n") for s in samples) and not any("<unk>" in s for s in samples)
    assert not any(" \n" in s or "\n " in s for s in samples)
