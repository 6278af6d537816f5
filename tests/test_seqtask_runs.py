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


def _fake_run(root: Path, name: str, task: str | None, when: float) -> Path:
    """A run directory whose model.safetensors header records ``task`` (None: a language model's,
    which names no task), written at time ``when``."""
    import numpy as np
    from safetensors.numpy import save_file

    run = root / name
    run.mkdir(parents=True)
    meta = {"charlm.format": "1"} | ({"charlm.task": task} if task else {})
    save_file({"w": np.zeros(2, np.float32)}, str(run / "model.safetensors"), metadata=meta)
    os.utime(run / "model.safetensors", (when, when))
    return run


def test_the_latest_run_is_the_latest_of_the_commands_task(tmp_path):
    from charlm.errors import CheckpointError
    from charlm.runs.find import resolve_run, task_of

    lm = _fake_run(tmp_path, "a-lm", None, 1_000)
    cls = _fake_run(tmp_path, "b-cls", "classify", 2_000)
    tag = _fake_run(tmp_path, "c-tag", "tag", 3_000)
    assert [task_of(r) for r in (lm, cls, tag)] == ["lm", "classify", "tag"]
    assert resolve_run(None, tmp_path) == lm             # the newest run is a tagger: not a language model
    assert resolve_run(None, tmp_path, "classify") == cls
    assert resolve_run(None, tmp_path, "tag") == tag
    with pytest.raises(CheckpointError, match="no language-model runs yet"):
        resolve_run(None, tmp_path / "elsewhere")
    (tmp_path / "d-junk").mkdir()
    (tmp_path / "d-junk" / "model.safetensors").write_bytes(b"not a checkpoint")
    assert task_of(tmp_path / "d-junk") is None and resolve_run(None, tmp_path) == lm
