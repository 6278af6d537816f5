"""One input layer for every command: standard input as ``-`` where a file is read once, pipes and
endless devices refused before anything is made, line numbers that count LF-separated lines."""
import json
import os
import sys

import pytest
from cli_helpers import invoke
from test_classify import toy_examples, write_tsv
from test_seqtask_runs import TINY, one_line_error

from charlm.data import text_files


@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    train, dev = write_tsv(tmp_path / "train.tsv", toy_examples(64)), write_tsv(tmp_path / "dev.tsv", toy_examples(16, 1))
    done = invoke("classify", "train", train, "--dev", dev, "--run-dir", tmp_path / "run", *TINY, "--steps", "3")
    assert done.exit_code == 0, done.output
    return tmp_path / "run", dev


def test_predict_and_eval_read_standard_input_as_dash(trained):
    run, dev = trained
    texts = "".join(f"{line.split(chr(9))[0]}\n" for line in dev.read_text().splitlines()[:5])
    from_stdin = invoke("classify", "predict", run, "-f", "-", "--json", input=texts)
    assert from_stdin.exit_code == 0, from_stdin.output
    (run.parent / "texts.txt").write_text(texts)
    from_file = invoke("classify", "predict", run, "-f", run.parent / "texts.txt", "--json")
    assert from_stdin.stdout == from_file.stdout and from_stdin.stdout.count("\n") == 5
    evaluated = invoke("classify", "eval", run, "-", "--json", input=dev.read_text())
    assert evaluated.exit_code == 0, evaluated.output
    from_dev = json.loads(invoke("classify", "eval", run, dev, "--json").stdout)
    assert json.loads(evaluated.stdout) == from_dev | {"file": "-"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("command", [["classify", "train"], ["tag", "train", "--format", "spaces"], ["train"]])
def test_training_refuses_pipes_endless_devices_and_standard_input_before_making_a_run(tmp_path, monkeypatch,
                                                                                      command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    os.mkfifo(tmp_path / "pipe")
    for source, needle in ((tmp_path / "pipe", "named pipe"), ("/dev/zero", "not a regular text file"),
                           ("-", "not standard input")):
        line = one_line_error(invoke(*command, source, "--steps", "1", input="a\tb\n"), needle)
        assert "give -" not in line          # training data cannot come from standard input
    assert not (tmp_path / "runs").exists()


def test_predict_refuses_a_pipe_instead_of_waiting_for_it(trained):
    run, _ = trained
    os.mkfifo(run.parent / "pipe")
    one_line_error(invoke("classify", "predict", run, "-f", run.parent / "pipe"), "named pipe", "give - to read")


def test_line_numbers_count_lf_lines_only(tmp_path):
    """U+2028, U+0085 and a form feed inside a line are text, not line breaks."""
    path = tmp_path / "odd.tsv"
    path.write_text("a\u2028b\tx\nc\u0085d\ty\ne\x0cf\tz\nno tab here\n", encoding="utf-8")
    from charlm.errors import CorpusError
    from charlm.seqtask.data import read_tsv

    with pytest.raises(CorpusError, match=r"odd.tsv:4: expected text<TAB>label"):
        read_tsv(path)
    path.write_text("a\u2028b\tx\nc\u0085d\ty\n", encoding="utf-8")
    assert [e.tokens for e in read_tsv(path)] == ["a\u2028b", "c\u0085d"]


def test_standard_input_is_read_once_and_kept(monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\ufeffone\r\ntwo\n".encode())))
    assert text_files.read_text("-") == "one\ntwo\n" == text_files.read_text("-")   # a second read sees it too
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(text_files.CorpusError, match="standard input: is empty"):
        text_files.read_text("-")


def test_predict_refuses_a_mistyped_run_and_names_the_model_that_answers(trained):
    run, _ = trained
    (run.parent / "runs").mkdir(exist_ok=True)
    os.rename(run, run.parent / "runs" / "words")
    result = invoke("classify", "predict", "runs/wrods", "hello")       # a typo, not a text to classify
    one_line_error(result, "runs/wrods", "no such run")
    answered = invoke("classify", "predict", "runs/words", "hello")
    assert answered.exit_code == 0 and "hello" in answered.stdout
    assert "model" in answered.stderr and "words" in answered.stderr
    assert invoke("classify", "predict", "and/or").exit_code == 0      # text with a slash is still text
