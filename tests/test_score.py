"""``charlm score`` (lm/score.py): one line of scores per input line, in order, from a file or
standard input; the same numbers as ``charlm eval`` on each line alone; batched passes that agree
with one line at a time; bad lines named by number."""
import json
import math

import numpy as np
import pytest
from cli_helpers import invoke

from charlm.lm.checkpoint import load_checkpoint
from charlm.lm.evaluate import evaluate
from charlm.lm.score import LineScorer

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py
LINES = ["anna", "bob", "carla maria", "dede", "eve", "x", "zoe and ann", "bobby"] * 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score")
    (tmp / "train.txt").write_text("\n".join(LINES * 20) + "\n")
    r = invoke("train", tmp / "train.txt", "--eos", "line", "--steps", "20", "--hidden", "16", "--layers", "2",
               "--seq-len", "16", "--batch-size", "8", "--run-dir", tmp / "run")
    assert r.exit_code == 0, r.output
    return tmp / "run"


def test_scores_equal_eval_of_each_line_alone_and_sum(run, tmp_path):
    lines = LINES[:8] + ["anna Ωmega"]   # the last has unknown characters
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    r = invoke("score", run, tmp_path / "lines.txt", "--json")
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert [g["line"] for g in got] == list(range(1, len(lines) + 1))
    checkpoint = load_checkpoint(run)
    total_eval = 0.0
    for line, g in zip(lines, got):
        (tmp_path / "one.txt").write_text(line + "\n")
        e = evaluate(checkpoint, [tmp_path / "one.txt"])
        assert g["tokens"] == e.tokens == len(line) + 1 and g["oov"] == e.oov
        np.testing.assert_allclose(-g["log_prob"], e.loss_nats * e.tokens, rtol=1e-6)
        assert g["perplexity"] == pytest.approx(math.exp(-g["log_prob"] / g["tokens"]))
        total_eval += e.loss_nats * e.tokens
    np.testing.assert_allclose(-sum(g["log_prob"] for g in got), total_eval, rtol=1e-6)
    assert got[-1]["oov"] == 2   # Ω, and g: no training line has one


def test_standard_input_streams_the_same_lines_and_batches_agree(run, tmp_path, monkeypatch):
    import charlm.lm.score as score_module

    text = "\n".join(LINES + [""]) + "\n"   # an empty line too: <eos> alone
    (tmp_path / "all.txt").write_text(text)
    from_file = invoke("score", run, tmp_path / "all.txt")
    from_stdin = invoke("score", run, "-", input=text.encode())
    assert from_file.exit_code == from_stdin.exit_code == 0
    assert from_file.stdout == from_stdin.stdout and len(from_file.stdout.splitlines()) == len(LINES) + 1
    monkeypatch.setattr(score_module, "BATCH", 1)
    monkeypatch.setattr(score_module, "BUFFER", 3)
    one_by_one = invoke("score", run, tmp_path / "all.txt")
    a = np.array([[float(x) for x in line.split("\t")] for line in from_file.stdout.splitlines()])
    b = np.array([[float(x) for x in line.split("\t")] for line in one_by_one.stdout.splitlines()])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_bad_line_is_named_and_the_rest_are_scored(run, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"anna\nbob\nca\xffrla\r\neve\n")
    r = invoke("score", run, tmp_path / "bad.txt")
    assert r.exit_code == 1 and "Traceback" not in r.output
    out = r.stdout.splitlines()
    assert len(out) == 4 and out[2].startswith("error\tline 3: invalid UTF-8") and "\\x" not in out[2]
    assert out[3] == invoke("score", run, "-", input=b"eve\n").stdout.strip()
    assert "1 line(s)" in r.stderr
    missing = invoke("score", run, tmp_path / "nope.txt")
    assert missing.exit_code == 1 and "no such file" in missing.stderr


def test_many_lines_in_few_passes(run, monkeypatch):
    scorer = LineScorer(load_checkpoint(run))
    calls = []
    real = scorer.score_batch
    monkeypatch.setattr(scorer, "score_batch", lambda seqs: calls.append(len(seqs)) or real(seqs))
    items = [(k + 1, LINES[k % len(LINES)], None) for k in range(3000)]
    scores = list(scorer.scores(items))
    assert [s.line for s in scores] == list(range(1, 3001)) and sum(calls) == 3000 and len(calls) <= 3000 // 256 + 2


def test_an_empty_line_of_a_model_without_eos_predicts_nothing(tmp_path):
    (tmp_path / "t.txt").write_text("abc abd abe " * 400)
    r = invoke("train", tmp_path / "t.txt", "--eos", "none", "--steps", "3", "--hidden", "8", "--layers", "1",
               "--seq-len", "8", "--batch-size", "4", "--run-dir", tmp_path / "run")
    assert r.exit_code == 0, r.output
    out = invoke("score", tmp_path / "run", "-", input=b"\nab\n\n")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == lines[2] == "0.000000\t0\t-\t0" and lines[1].split("\t")[1] == "2"
