"""Nothing lost: a run directory belongs to one process, a new run never merges into old files,
SIGTERM/SIGHUP save like Ctrl-C, commands never overwrite what they did not create, and a resume
refuses text or checkpoints that are not the run's own.

In-process cases use click's CliRunner; the ones about processes (locks held by another process,
signals, runs started at the same moment) use real subprocesses.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, one_red_line

from charlm.lm import checkpoint as ckpt
from charlm.runs import directory as rundir
from charlm.runs.fingerprint import ids_digest

TINY = ["--hidden", "8", "--embed", "4", "--layers", "1", "--seq-len", "8", "--batch-size", "2", "--threads", "1"]
TEXT = "".join(f"line {i % 7} of some text about foxes\n" for i in range(200))


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py



def write(path, text=TEXT):
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)


def train(run, corpus, *extra, steps=4):
    result = invoke("train", corpus, *TINY, "--steps", steps, "--eval-every", 2, "--run-dir", run, *extra)
    assert result.exit_code == 0, result.output
    return result


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def cli_process(*args, **kw):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    code = "import sys; from charlm.cli import main; sys.argv[0] = 'charlm'; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def lock_holder(run: Path):
    """Another process that holds the run's lock until killed; returns it once the lock is held."""
    code = ("import sys, time; from charlm.runs import directory; lock = directory.claim_run(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# -- 1. concurrency ---------------------------------------------------------------------------


def test_default_names_in_the_same_second_are_distinct(tmp_path):
    locks = [rundir.make_run_dir(tmp_path / "runs", "ok") for _ in range(5)]
    names = [lock.run_dir.name for lock in locks]
    assert len(set(names)) == 5 and all(lock.run_dir.is_dir() for lock in locks)


def test_a_run_locked_by_another_process_is_refused_for_resume_and_for_a_new_run(tmp_path):
    run = tmp_path / "run"
    train(run, write(tmp_path / "ok.txt"))
    holder = lock_holder(run)
    try:
        before = files(run)
        line = one_red_line(invoke("train", "--resume", run, "--steps", 8))
        assert "in use by another charlm process" in line and f"pid {holder.pid}" in line and str(run) in line
        line = one_red_line(invoke("train", tmp_path / "ok.txt", *TINY, "--steps", 2, "--run-dir", run,
                                   "--overwrite"))
        assert "in use by another charlm process" in line
        assert files(run) == before           # the refused commands wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the run continues
    result = invoke("train", "--resume", run, "--steps", 6, "--eval-every", 2)
    assert result.exit_code == 0, result.output


def test_lock_is_reentrant_within_one_process_and_released_with_its_owner(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    first = rundir.claim_run(run)
    assert rundir.claim_run(run) is first      # the same process never blocks itself
    first.release()
    del first
    holder = lock_holder(run)                  # now another process can take it
    holder.kill()
    holder.wait()


def test_three_trainings_started_together_get_three_runs(tmp_path):
    corpus = write(tmp_path / "ok.txt")
    procs = [cli_process("train", corpus, *TINY, "--steps", 3, "--eval-every", 3, cwd=tmp_path)
             for _ in range(3)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        steps = [r["step"] for r in ckpt.read_metrics(run) if r["kind"] == "step"]
        assert steps == [1, 2, 3]               # one model's records each, never mixed
    samples = {line for _, err in outs for line in err.splitlines() if "charlm sample" in line}
    assert len(samples) == 3


# -- 2. SIGTERM and SIGHUP ---------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_the_exact_position_like_ctrl_c(tmp_path, signum):
    run = tmp_path / "run"
    proc = cli_process("train", write(tmp_path / "ok.txt"), *TINY, "--steps", 100000, "--eval-every", 100000,
                       "--run-dir", run)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(line.startswith("step ") for line in seen):
        time.sleep(0.05)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    stderr = "".join(seen)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "charlm train --resume run\n" in stderr   # (cwd: tmp_path)
    steps = [r["step"] for r in ckpt.read_metrics(run) if r["kind"] == "step"]
    assert steps and ckpt.load_checkpoint(run / ckpt.LAST_FILE).metadata["step"] == steps[-1]


def test_stop_signals_map_to_their_exit_status():
    from charlm.cli.common import StopSignal, report

    assert report(StopSignal(signal.SIGTERM)) == 143
    assert report(StopSignal(signal.SIGHUP)) == 129
    assert report(StopSignal(signal.SIGINT)) == 130


def test_a_signal_while_setting_up_stops_at_once_and_one_while_training_is_only_recorded():
    from charlm.cli.common import StopSignal, report
    from charlm.cli.stop_signals import StopSignals

    with pytest.raises(StopSignal) as stopped:
        with StopSignals():
            os.kill(os.getpid(), signal.SIGTERM)   # (delivered before kill() returns)
            pytest.fail("not interrupted")
    assert stopped.value.signum == signal.SIGTERM
    asked, notes = [], []
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)   # as in a terminal (the suite may run under nohup)
    trainer = type("T", (), {"request_stop": lambda self: asked.append(True)})()
    view = type("V", (), {"note": lambda self, message: notes.append(message)})()
    with pytest.raises(StopSignal) as again:
        with StopSignals() as signals:
            signals.training(trainer, view)
            os.kill(os.getpid(), signal.SIGHUP)
            assert asked == [True] and notes == []      # the handler printed nothing
            signals.act()                               # a safe point: the notice
            assert "SIGHUP" in notes[0] and signals.exit_code == 129
            os.kill(os.getpid(), signal.SIGHUP)         # a second one is recorded...
            signals.act()                               # ...and aborts at the next safe point
            pytest.fail("not aborted")
    assert again.value.signum == signal.SIGHUP and report(again.value) == 129
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL   # handlers restored
    signal.signal(signal.SIGHUP, before)


def test_a_hangup_ignored_by_nohup_stays_ignored():
    from charlm.cli.stop_signals import StopSignals

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)   # what `nohup charlm train ...` starts with
    try:
        with StopSignals() as signals:
            signals.training(type("T", (), {"request_stop": lambda self: pytest.fail("stopped")})(), None)
            os.kill(os.getpid(), signal.SIGHUP)
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and signals.received is None
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


# -- 3. stale directories ------------------------------------------------------------------------


@pytest.mark.parametrize("leftovers, expect", [
    ({"metrics.jsonl": '{"kind": "step", "step": 1, "loss": 1.0, "lr": 1e30}\n'}, "no checkpoint"),
    ({"metrics.jsonl": "my own numbers\n", "notes.txt": "mine"}, "--overwrite"),
    ({"notes.txt": "mine"}, "not empty"),
    ({".metrics.jsonl.abc.tmp": "x", "metrics.jsonl": "{}\n"}, "no checkpoint"),
])
def test_a_new_run_refuses_a_directory_holding_other_files_and_writes_nothing(tmp_path, leftovers, expect):
    run = tmp_path / "run"
    run.mkdir()
    for name, text in leftovers.items():
        (run / name).write_text(text)
    before = files(run)
    line = one_red_line(invoke("train", write(tmp_path / "ok.txt"), *TINY, "--steps", 2, "--run-dir", run))
    assert expect in line and str(run) in line
    assert files(run) == before                        # not even a lock file was left behind


def test_a_finished_run_is_refused_with_the_resume_hint_and_replaced_only_with_overwrite(tmp_path):
    run = tmp_path / "run"
    corpus = write(tmp_path / "ok.txt")
    train(run, corpus)
    (run / "notes.txt").write_text("kept")
    line = one_red_line(invoke("train", corpus, *TINY, "--steps", 2, "--run-dir", run))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    train(run, corpus, "--overwrite", steps=2)
    steps = [r["step"] for r in ckpt.read_metrics(run) if r["kind"] == "step"]
    assert steps == [1, 2]                              # a fresh log, not appended to the old one
    assert (run / "notes.txt").read_text() == "kept"    # --overwrite replaces only the run's files


def test_overwrite_replaces_a_killed_runs_leftovers_including_its_temporary_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "loss": 9.0}\n')
    (run / ".last.safetensors.x1y2.tmp").write_bytes(b"torn")
    train(run, write(tmp_path / "ok.txt"), "--overwrite", steps=2)
    assert not list(run.glob(".*.tmp"))
    assert [r["loss"] for r in ckpt.read_metrics(run) if r["kind"] == "step"][0] != 9.0


def test_a_run_dir_that_is_a_file_and_a_failed_setup_leave_nothing_behind(tmp_path):
    write(tmp_path / "afile", "x")
    line = one_red_line(invoke("train", write(tmp_path / "ok.txt"), "--run-dir", tmp_path / "afile"), code=2)
    assert "is a file" in line and (tmp_path / "afile").read_text() == "x"
    write(tmp_path / "empty.txt", "")
    one_red_line(invoke("train", tmp_path / "empty.txt", *TINY))                  # default name under runs/
    one_red_line(invoke("train", tmp_path / "empty.txt", *TINY, "--run-dir", tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_an_empty_existing_directory_is_accepted(tmp_path):
    run = tmp_path / "empty-dir"
    run.mkdir()
    train(run, write(tmp_path / "ok.txt"), steps=2)
    assert (run / ckpt.LAST_FILE).exists()


# -- 4. inspect memory never overwrites ------------------------------------------------------------


def test_inspect_memory_refuses_a_directory_with_files_and_leaves_them(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    write(folder / "train.txt", "my training text")
    write(folder / "eval.txt", "my evaluation text")
    before = files(folder)
    line = one_red_line(invoke("inspect", "memory", "--cells", "rnn", "--distances", "2,3", "--steps", 1,
                               "--run-dir", folder), code=2)
    assert "--run-dir" in line and "not an empty directory" in line
    assert files(folder) == before


def test_memory_experiment_library_never_overwrites_its_texts(tmp_path):
    from charlm.inspect.memory import run_memory_experiment

    write(tmp_path / "train.txt", "mine")
    with pytest.raises(FileExistsError):
        run_memory_experiment(cells=("rnn",), distances=(2, 3), hidden=4, embed=4, steps=1, seq_len=8,
                              batch_size=2, train_lines=20, eval_lines=2, run_root=tmp_path)
    assert (tmp_path / "train.txt").read_text() == "mine"
    assert not (tmp_path / "eval.txt").exists()


# -- 5. resume checks the run's own text and model ---------------------------------------------------


def _changed_letter(text, new):
    i = text.index("foxes")
    return text[:i] + new + text[i + 1:]


@pytest.mark.parametrize("edit, part", [
    (lambda t: _changed_letter(t, "b"), "training text is not the one"),   # one letter, same length
    (lambda t: _changed_letter(t, "Z"), "training text is not the one"),   # a letter outside the vocabulary
    (lambda t: t[::-1], "training and validation texts are not the ones"),   # same letters, same count
])
def test_resume_refuses_a_corpus_whose_content_changed(tmp_path, edit, part):
    run, corpus = tmp_path / "run", write(tmp_path / "ok.txt")
    train(run, corpus, "--val-fraction", "0.2")
    write(corpus, edit(TEXT))
    before = files(run)
    line = one_red_line(invoke("train", "--resume", run, "--steps", 6))
    assert f"the {part} this run was trained on" in line
    assert files(run) == {k: v for k, v in before.items()}


def test_resume_refuses_a_changed_validation_file(tmp_path):
    run, corpus, val = tmp_path / "run", write(tmp_path / "ok.txt"), write(tmp_path / "val.txt", TEXT[:400])
    train(run, corpus, "--val-file", val)
    write(val, TEXT[:399] + "!")
    line = one_red_line(invoke("train", "--resume", run, "--steps", 6))
    assert "validation text is not the one" in line


def test_resume_refuses_a_last_checkpoint_from_another_model(tmp_path):
    corpus = write(tmp_path / "ok.txt")
    train(tmp_path / "a", corpus)
    other = invoke("train", corpus, "--hidden", "6", "--embed", "4", "--layers", "1", "--seq-len", "8",
                   "--batch-size", "2", "--steps", 2, "--eval-every", 2, "--run-dir", tmp_path / "b")
    assert other.exit_code == 0, other.output
    (tmp_path / "a" / ckpt.LAST_FILE).write_bytes((tmp_path / "b" / ckpt.LAST_FILE).read_bytes())
    line = one_red_line(invoke("train", "--resume", tmp_path / "a", "--steps", 6))
    assert "are not the same model" in line and "hidden 8 vs 6" in line


def test_resume_with_run_dir_is_refused_not_ignored(tmp_path):
    run = tmp_path / "run"
    train(run, write(tmp_path / "ok.txt"))
    line = one_red_line(invoke("train", "--resume", run, "--run-dir", tmp_path / "elsewhere"), code=2)
    assert "--run-dir" in line and "--resume" in line
    assert not (tmp_path / "elsewhere").exists()


def test_fingerprint_sees_content_not_storage():
    ids = np.arange(50, dtype=np.uint8) % 7
    assert ids_digest(ids) == ids_digest(ids.astype(np.uint16)) == ids_digest(list(ids))
    changed = ids.copy()
    changed[10] = (changed[10] + 1) % 7
    assert ids_digest(changed) != ids_digest(ids)
    assert ids_digest(ids[:-1]) != ids_digest(ids)


def test_the_fingerprint_is_stored_in_both_checkpoints(tmp_path):
    run = tmp_path / "run"
    train(run, write(tmp_path / "ok.txt"))
    for name in (ckpt.LAST_FILE, ckpt.MODEL_FILE):
        meta = ckpt.load_checkpoint(run / name).metadata
        assert set(meta["fingerprint"]) == {"train", "val"}
    assert json.loads(json.dumps(meta["fingerprint"])) == meta["fingerprint"]
