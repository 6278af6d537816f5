"""A sweep of any task survives its workers and obeys stop signals: a killed worker is a recorded
failed trial and the others go on; SIGTERM, SIGHUP or Ctrl-C stops every worker, saves and records
the running trials, starts no other and leaves no process behind; a sweep directory has one owner.

Every moment is an event seen in the sweep's directory (a trial's lock file naming its worker,
its first checkpoint), never a delay; timeouts only bound a hung test."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals and process groups")
SETTINGS = ["layers=1", "embed=8", "hidden=4", "batch_size=4", "eval_every=5", "threads=1"]   # every task's
LONG = 1_000_000   # steps no trial reaches in a test: it ends by the test's doing


def _sweep(tmp_path, steps: str, where="sw", workers=2, task="lm"):
    if task == "lm":
        corpus, command = tmp_path / "words.txt", ["sweep"]
        text, settings = "a quick brown fox jumps over the lazy dog under grey skies\n" * 200, [*SETTINGS, "seq_len=8"]
    else:   # a classifier's sweep: the same workers, signals and records
        corpus, command = tmp_path / "words.tsv", [task, "sweep"]
        text, settings = "".join(f"{w}\t{len(w) % 2}\n" for w in "a quick brown fox jumps over".split() * 40), SETTINGS
    if not corpus.exists():
        corpus.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), CHARLM_RUNS_DIR=str(tmp_path / "runs"),
               CHARLM_CACHE_DIR=str(tmp_path / "cache"))
    grid = [arg for s in [*settings, f"steps={steps}"] for arg in ("--grid", s)]
    return subprocess.Popen([sys.executable, "-m", "charlm", *command, str(corpus), *grid,
                             "--workers", str(workers), "--sweep-dir", str(tmp_path / where)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _worker_of(trial_dir, proc, bound=300.0):
    """The pid of the worker training ``trial_dir``, once it has saved a checkpoint."""
    end = time.monotonic() + bound
    while time.monotonic() < end and proc.poll() is None:
        try:
            pid = int((trial_dir / ".charlm.lock").read_text().split()[0])
            if (trial_dir / "last.safetensors").exists():
                return pid
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    pytest.fail(f"{trial_dir.name} never saved a checkpoint: {proc.communicate()[1][-2000:]}")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()     # a zombie left for init to reap has ended
    except FileNotFoundError:
        return True


def _records(tmp_path):
    return {r["name"]: r for r in map(json.loads, (tmp_path / "sw" / "sweep.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_a_killed_worker_is_a_failed_trial_and_the_others_go_on(tmp_path, task):
    proc = _sweep(tmp_path, f"{LONG},20", task=task)
    os.kill(_worker_of(tmp_path / "sw" / "trial-001", proc), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "internal error" not in err, err
    records = _records(tmp_path)
    assert "SIGKILL" in records["trial-001"]["error"]
    assert records["trial-002"]["error"] is None and records["trial-002"]["steps"] == 20


@pytest.mark.parametrize("signum, group, task", [(signal.SIGTERM, False, "lm"), (signal.SIGHUP, False, "lm"),
                                                (signal.SIGINT, True, "lm"), (signal.SIGTERM, False, "classify")],
                         ids=["SIGTERM", "SIGHUP", "Ctrl-C", "SIGTERM-classify"])
def test_a_stop_signal_saves_and_records_the_running_trials_and_leaves_no_process(tmp_path, signum, group, task):
    from charlm.lm.checkpoint import load_checkpoint
    from charlm.seqtask import store

    load = load_checkpoint if task == "lm" else store.load
    proc = _sweep(tmp_path, f"{LONG},{LONG},{LONG}", task=task)
    workers = [_worker_of(tmp_path / "sw" / name, proc) for name in ("trial-001", "trial-002")]
    if group:   # a terminal's Ctrl-C reaches the sweep and its workers at once
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "internal error" not in err, err
    records = _records(tmp_path)
    assert sorted(records) == ["trial-001", "trial-002"] and not (tmp_path / "sw" / "trial-003").exists()
    for name, record in records.items():
        assert record["reason"] == "stopped" and record["error"] is None
        saved = load(tmp_path / "sw" / name / "last.safetensors").metadata["step"]
        assert saved == record["steps"] > 0
    assert all(_gone(pid) for pid in workers)


def test_a_sweep_directory_has_one_owner(tmp_path):
    first = _sweep(tmp_path, f"{LONG},{LONG}")
    _worker_of(tmp_path / "sw" / "trial-001", first)
    second = _sweep(tmp_path, "20")
    out, err = second.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert second.returncode == 1 and len(lines) == 1 and "in use by another charlm process" in lines[0], err
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=600)
    assert sorted(_records(tmp_path)) == ["trial-001", "trial-002"]     # only the owner's records
