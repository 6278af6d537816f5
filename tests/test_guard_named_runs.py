"""Which run answers: a first argument that looks like a run but is none is refused, an implicit
run (the latest) is named on stderr, and ``info`` refuses a directory holding two runs' files."""
import shutil

import pytest
from cli_helpers import invoke, one_red_line
from test_classify import toy_examples, write_tsv

pytestmark = pytest.mark.usefixtures("isolated")
LM = ["--hidden", "8", "--layers", "1", "--threads", "1", "--steps", "2"]


def _lm(tmp_path, run, *extra):
    text = tmp_path / "small.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 100)
    done = invoke("train", text, *LM, "--run-dir", run, *extra)
    assert done.exit_code == 0, done.output
    return tmp_path / run


def _classifier(tmp_path, run):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(48))
    done = invoke("classify", "train", train, "--hidden", "6", "--threads", "1", "--steps", "2", "--run-dir", run)
    assert done.exit_code == 0, done.output
    return tmp_path / run


def test_a_directory_that_is_no_run_is_refused_not_classified_as_text(tmp_path):
    _classifier(tmp_path, "runs/words")
    (tmp_path / "notes").mkdir()
    for arg in ("notes", "notes/typo", "runs/wrods"):
        line = one_red_line(invoke("classify", "predict", arg, "hello"))
        assert arg in line, line
    assert invoke("classify", "predict", "and/or").exit_code == 0   # no folder "and": text


def test_the_latest_run_is_named_on_stderr_escaped(tmp_path):
    _lm(tmp_path, "runs/x\x1b[31mred")
    lines = tmp_path / "lines.txt"
    lines.write_text("the fox\n")
    scored = invoke("score", lines)
    assert scored.exit_code == 0, scored.output
    named = [line for line in scored.stderr.splitlines() if "the latest language-model run" in line]
    assert len(named) == 1 and "\x1b" not in scored.stderr and "red" in named[0], scored.stderr
    explicit = invoke("score", tmp_path / "runs" / "x\x1b[31mred", lines)
    assert explicit.exit_code == 0 and "latest" not in explicit.stderr
    _classifier(tmp_path, "runs/words")
    predicted = invoke("classify", "predict", "hello")
    assert predicted.exit_code == 0 and "runs/words" in predicted.stderr, predicted.output


def test_info_refuses_a_directory_holding_two_runs_files(tmp_path):
    a, b = _lm(tmp_path, "a"), _lm(tmp_path, "b", "--hidden", "6")
    shutil.copy(b / "model.safetensors", a / "model.safetensors")   # another run's best model
    line = one_red_line(invoke("info", a))
    assert "model.safetensors" in line and "last.safetensors" in line and "different runs" in line, line
    assert "hidden" in line
    assert invoke("info", a / "last.safetensors").exit_code == 0   # one file of it: described
    c = _classifier(tmp_path, "c")
    shutil.copy(c / "model.safetensors", b / "model.safetensors")   # another task's
    line = one_red_line(invoke("info", b))
    assert "different tasks" in line and "classify" in line, line


def test_a_resume_refuses_other_data_and_a_run_of_another_task(tmp_path):
    run = _classifier(tmp_path, "run")
    write_tsv(tmp_path / "other.tsv", toy_examples(48, 2))
    write_tsv(tmp_path / "dev.tsv", toy_examples(16, 1))
    for changed in (["other.tsv"], ["--dev", "dev.tsv"], ["--header", "yes"], ["--dev-fraction", "0.3"]):
        line = one_red_line(invoke("classify", "train", *changed, "--resume", run, "--steps", "3"))
        assert "cannot change the data when resuming" in line, line
    same = invoke("classify", "train", "train.tsv", "--resume", run, "--steps", "3")
    assert same.exit_code == 0, same.output
    assert "classify run" in one_red_line(invoke("tag", "train", "--resume", run, "--format", "spaces"))
