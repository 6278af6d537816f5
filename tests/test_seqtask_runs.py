"""Classifier and tagger run directories: one writer at a time, a new run never writes into a
directory that holds anything, and a resume refuses data whose content is not the run's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_classify import toy_examples, write_tsv

TINY = ["--hidden", "6", "--embed", "4", "--batch-size", "16", "--warmup-steps", "0", "--threads", "1"]


def one_line_error(result, *needles):
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    return write_tsv(tmp_path / "train.tsv", toy_examples(64)), write_tsv(tmp_path / "dev.tsv", toy_examples(16, 1))


def train(train_file, dev_file, run, *extra):
    return invoke("classify", "train", train_file, "--dev", dev_file, "--run-dir", run, *TINY, *extra)


def test_a_new_run_refuses_a_directory_that_holds_anything(data, tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    one_line_error(train(*data, run, "--steps", "2"), "is not empty (notes.txt)")
    assert files(run) == {"notes.txt": b"keep me"}    # nothing written, not even a lock file
    assert train(*data, tmp_path / "fresh", "--steps", "2").exit_code == 0
    one_line_error(train(*data, tmp_path / "fresh", "--steps", "2"), "already holds a run", "--resume")


def test_a_failed_setup_leaves_no_directory_behind(data, tmp_path):
    one_line_error(train(data[0], tmp_path / "missing.tsv", tmp_path / "new" / "run", "--steps", "2"),
                   "missing.tsv")
    assert not (tmp_path / "new").exists()


def test_a_run_locked_by_another_process_is_refused(data, tmp_path):
    run = tmp_path / "run"
    assert train(*data, run, "--steps", "2").exit_code == 0
    code = ("import sys, time; from charlm.runs import directory; lock = directory.claim_run(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = files(run)
        one_line_error(invoke("classify", "train", "--resume", run, "--steps", "4"),
                       "in use by another charlm process", f"pid {holder.pid}")
        assert files(run) == before
    finally:
        holder.kill()
        holder.wait()
    assert invoke("classify", "train", "--resume", run, "--steps", "4").exit_code == 0


@pytest.mark.parametrize("split", ["training", "dev"])
def test_resume_refuses_data_whose_content_changed(data, tmp_path, split):
    run = tmp_path / "run"
    assert train(*data, run, "--steps", "2").exit_code == 0
    path = data[0] if split == "training" else data[1]
    lines = path.read_text().splitlines(keepends=True)
    text, label = lines[3].rstrip("\n").split("\t")
    lines[3] = f"{'c' if text[0] == 'b' else 'b'}{text[1:]}\t{label}\n"   # one letter: the same count
    path.write_text("".join(lines))
    before = files(run)
    one_line_error(invoke("classify", "train", "--resume", run, "--steps", "4"),
                   f"the {split} data differ from what this run was trained on")
    assert files(run) == before
