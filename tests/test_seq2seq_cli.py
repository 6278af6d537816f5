"""charlm seq2seq train|eval|predict: a synthetic transduction (string reversal) learned through the
command line, WER and PER on several references per source, predictions as text and JSON, exact
resume on the shared loop, one-line errors, and help that loads no Numba."""
import json
import random
import subprocess
import sys

import pytest

from cli_helpers import invoke, one_red_line

TRAIN = ["train.tsv", "--embed", "16", "--hidden", "32", "--lr", "0.01", "--batch-size", "32", "--dropout", "0"]


def reversals(n, seed):
    r = random.Random(seed)
    words = ["".join(r.choice("abcdef") for _ in range(r.randint(3, 7))) for _ in range(n)]
    return "".join(f"{w}\t{w[::-1]}\n" for w in words)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A reversal model trained through the CLI for 300 steps: (its directory, the run)."""
    root = tmp_path_factory.mktemp("s2s")
    (root / "train.tsv").write_text(reversals(1500, 0))
    (root / "dev.tsv").write_text(reversals(100, 1))
    (root / "test.tsv").write_text(reversals(200, 2))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("CHARLM_RUNS_DIR", str(root / "runs"))
        r = invoke("seq2seq", "train", *TRAIN, "--dev", "dev.tsv", "--steps", "300", "--eval-every", "150",
                   "--run-dir", "run")
    assert r.exit_code == 0, r.output
    assert "WER" in r.stderr and "best model" in r.stderr
    return root, root / "run"


@pytest.fixture
def at(trained, monkeypatch):
    root, run = trained
    monkeypatch.chdir(root)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(root / "runs"))
    return root, run


def test_learns_reversal_through_the_cli(at):
    root, run = at
    for beam in ((), ("--beam", "3")):
        r = invoke("seq2seq", "eval", run, "test.tsv", *beam, "--json")
        assert r.exit_code == 0, r.output
        result = json.loads(r.stdout)
        assert result["sources"] >= 150
        assert 1 - result["wer"] >= 0.95, result


def predictions(run, *sources, beam=()):
    r = invoke("seq2seq", "predict", run, *sources, *beam, "--json")
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_eval_scores_several_references_per_source_exactly(at):
    root, run = at
    p1, p2 = (item["prediction"] for item in predictions(run, "abc", "fedcba"))
    near = ("x" if p2[0] != "x" else "y") + p2[1:]          # one substitution from the output
    (root / "refs.tsv").write_text(f"abc\tzzzz\nabc\t{p1}\nfedcba\tqqqqqqqqqq\nfedcba\t{near}\n")
    r = invoke("seq2seq", "eval", run, "refs.tsv", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert (result["sources"], result["errors"], result["edits"]) == (2, 1, 1)
    assert result["wer"] == 0.5
    assert result["per"] == pytest.approx(1 / (len(p1) + len(p2)), abs=0)
    text = invoke("seq2seq", "eval", run, "refs.tsv")
    assert text.exit_code == 0 and "WER  0.5000" in text.stdout and "1 of 2 sources" in text.stdout


def test_predict_text_and_json(at):
    root, run = at
    r = invoke("seq2seq", "predict", run, "abcd")
    assert r.exit_code == 0 and r.stdout.startswith("abcd\t")
    (plain,) = predictions(run, "abcd")
    assert set(plain) == {"source", "prediction"} and plain["source"] == "abcd"
    (root / "in.tsv").write_text("abc\tcba\n\nbeef\n")
    items = predictions(run, "-f", "in.tsv", beam=("--beam", "3"))
    assert [i["source"] for i in items] == ["abc", "beef"]
    for item in items:
        assert set(item) == {"source", "prediction", "hypotheses"} and len(item["hypotheses"]) == 3
        assert item["prediction"] == item["hypotheses"][0]["prediction"]
        logp = [h["log_prob"] for h in item["hypotheses"]]
        assert all(isinstance(x, float) and x <= 0 for x in logp)
        scores = [h["score"] for h in item["hypotheses"]]
        assert scores == sorted(scores, reverse=True)   # the order is the scores', not the log-probabilities'
    beamed = invoke("seq2seq", "predict", run, "abc", "--beam", "2")
    assert beamed.exit_code == 0 and len(beamed.stdout.splitlines()) == 3


def test_length_penalty_ranks_a_beam_and_needs_one(at):
    root, run = at
    r = invoke("seq2seq", "eval", run, "test.tsv", "--beam", "3", "--length-penalty", "0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["decoding"] == "beam 3, length penalty 0"
    lone = invoke("seq2seq", "predict", run, "abc", "--length-penalty", "1")
    assert lone.exit_code == 2 and "give --beam K too" in lone.output and "Traceback" not in lone.output
    (item,) = predictions(run, "abc", beam=("--beam", "2", "--length-penalty", "1.0"))
    assert len(item["hypotheses"]) == 2
    for h in item["hypotheses"]:   # length penalty 1: the mean log-probability per token
        length = len(h["prediction"]) + h["finished"]   # characters out, and the eos
        assert h["score"] == pytest.approx(h["log_prob"] / length)
    text = invoke("seq2seq", "predict", run, "abc", "--beam", "2", "--length-penalty", "1.0")
    first = text.stdout.splitlines()[1].split()
    assert float(first[0]) == pytest.approx(item["hypotheses"][0]["log_prob"], abs=1e-4)
    assert float(first[1]) == pytest.approx(item["hypotheses"][0]["score"], abs=1e-4)


def step_losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "step"]


def test_resume_equals_uninterrupted(at, tmp_path):
    from charlm.seq2seq import runs
    from charlm.seq2seq.config import Seq2SeqConfig, make_configs
    from charlm.seqtask.config import seq_resume_overrides
    from charlm.training.events import StepEvent

    root, _ = at
    values = {"embed": 8, "hidden": 8, "steps": 30, "eval_every": "10", "batch_size": 16, "dropout": 0.2}
    spec = runs.data_spec(root / "dev.tsv", dev_fraction=0.2)
    whole = runs.start(spec, *make_configs(values), tmp_path, tmp_path / "whole")
    list(whole.events())
    whole.run_lock.release()
    part = runs.start(spec, *make_configs(values), tmp_path, tmp_path / "part")
    for event in part.events():
        if isinstance(event, StepEvent) and event.step == 13:
            part.request_stop()
    part.run_lock.release()
    assert part.pos.step == 13
    again = runs.resume(tmp_path / "part", seq_resume_overrides({}, Seq2SeqConfig))
    list(again.events())
    again.run_lock.release()
    assert step_losses(tmp_path / "part") == step_losses(tmp_path / "whole") and len(step_losses(tmp_path / "whole")) == 30


def test_errors_are_one_line(at, tmp_path, monkeypatch):
    root, run = at
    (tmp_path / "notab.tsv").write_text("abc\tcba\nabc cba\n")
    (tmp_path / "empty.tsv").write_text("abc\t \n")
    (tmp_path / "nosrc.tsv").write_text("\tcba\n")
    assert "notab.tsv:2: expected source<TAB>target" in one_red_line(invoke("seq2seq", "train", tmp_path / "notab.tsv"))
    assert "empty.tsv:1: empty target" in one_red_line(invoke("seq2seq", "train", tmp_path / "empty.tsv"))
    assert "nosrc.tsv:1: empty source" in one_red_line(invoke("seq2seq", "eval", run, tmp_path / "nosrc.tsv"))
    assert "no such file" in one_red_line(invoke("seq2seq", "train", tmp_path / "missing.tsv"))
    assert "standard input" in one_red_line(invoke("seq2seq", "train", "-"))
    assert "cannot change the model" in one_red_line(invoke("seq2seq", "train", "--resume", run, "--hidden", "8"))
    (tmp_path / "one.tsv").write_text("a\tb\n")
    assert "too few" in one_red_line(invoke("seq2seq", "train", tmp_path / "one.tsv"))
    (tmp_path / "x.safetensors").write_bytes(b"\xff" * 64)
    one_red_line(invoke("seq2seq", "predict", tmp_path / "x.safetensors", "abc"))
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "none"))
    assert "charlm seq2seq train" in one_red_line(invoke("seq2seq", "predict", "abc"))
    r = invoke("seq2seq", "predict", run, "abc", "--beam", "0")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_a_classifier_is_not_a_seq2seq_run(at, tmp_path):
    from charlm.seqtask import store
    from charlm.seqtask.config import SeqModelConfig
    from charlm.data.tokenizer import Tokenizer
    from charlm.seqtask.ensemble import build_model

    config = SeqModelConfig(vocab_size=3, num_labels=2, embed=2, hidden=2).validate()
    model = build_model(config)
    store.save(tmp_path / "c.safetensors", config, Tokenizer("char", ["<eos>", "<unk>", "a"]), ["x", "y"],
               model.state_dict())
    line = one_red_line(invoke("seq2seq", "eval", tmp_path / "c.safetensors", at[0] / "dev.tsv"))
    assert "a classify checkpoint" in line and "charlm classify train" in line


@pytest.mark.parametrize("args", [["--help"], ["seq2seq", "-h"], ["seq2seq", "train", "-h"],
                                  ["seq2seq", "eval", "-h"], ["seq2seq", "predict", "-h"], ["seq2seq", "encode", "-h"]])
def test_help_does_not_import_numba(args):
    """Python's import log (-X importtime) of the help names neither Numba nor NumPy."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "charlm", *args], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage:" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"numba", "numpy"}, sorted(imported & {"numba", "numpy"})


def test_word_level_sides(tmp_path, monkeypatch):
    """Letters in, space-separated symbols out: a prediction's tokens are joined by spaces, and
    with no dev split the training sources are scored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "g2p.tsv").write_text("cat\tK AE T\ncat\tK AA T\ndog\tD AO G\nact\tAE K T\n")
    r = invoke("seq2seq", "train", "g2p.tsv", "--target-level", "word", "--dev-fraction", "0", "--steps", "3",
               "--embed", "4", "--hidden", "4", "--run-dir", "run")
    assert r.exit_code == 0, r.output
    assert "train loss" in r.stderr and "no dev split" in r.stderr
    (item,) = predictions(tmp_path / "run", "tac")
    assert all(token in {"K", "AE", "AA", "T", "D", "AO", "G"} for token in item["prediction"].split(" ") if token)
    from charlm.seq2seq import store

    checkpoint = store.load(tmp_path / "run")
    assert checkpoint.target.tokens[:4] == ("<pad>", "<unk>", "<bos>", "<eos>") and "AE" in checkpoint.target.tokens
    assert checkpoint.levels == {"source": "char", "target": "word"}
    assert set(checkpoint.tensors) == {name for name, _ in checkpoint.build_model().shapes}


def test_autoencoder_and_its_vectors(tmp_path, monkeypatch):
    """--autoencode: plain lines, each its own target, no attention; encode writes each line's
    vector as JSON or as one .npy array."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "words.txt").write_text("".join(f"{line.split(chr(9))[0]}\n" for line in reversals(60, 3).splitlines()))
    r = invoke("seq2seq", "train", "--autoencode", "words.txt", "--steps", "4", "--embed", "4", "--hidden", "6",
               "--run-dir", "ae")
    assert r.exit_code == 0, r.output
    assert "final vector" in r.stderr
    from charlm.seq2seq import store

    checkpoint = store.load(tmp_path / "ae")
    assert checkpoint.config.attention == "none" and not any(n.startswith("attention.") for n in checkpoint.tensors)
    items = [json.loads(line) for line in invoke("seq2seq", "encode", "ae", "abc", "fed").stdout.splitlines()]
    assert [i["source"] for i in items] == ["abc", "fed"] and all(len(i["vector"]) == 12 for i in items)
    r = invoke("seq2seq", "encode", "ae", "-f", "words.txt", "--out", "v.npy")
    assert r.exit_code == 0, r.output
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (60, 12)
    np.testing.assert_allclose(vectors[0], json.loads(invoke("seq2seq", "encode", "ae", "--json", "-f", "words.txt")
                                                      .stdout.splitlines()[0])["vector"], rtol=1e-6)
    assert "no attention" in one_red_line(invoke("seq2seq", "train", "--autoencode", "words.txt",
                                                 "--attention", "general"))
    r = invoke("seq2seq", "train", "--resume", "ae", "--steps", "6")
    assert r.exit_code == 0, r.output
