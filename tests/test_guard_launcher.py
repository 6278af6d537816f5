"""``--ranks N`` keeps the command the user started: it runs mpiexec as its child, hands it the stop
signals so that rank 0 saves and every rank stops at one step, and exits as one process would.

The job is watched through its own progress lines (an evaluation every two steps): a signal is
sent after a counted number of them, never after a delay. Only this test's own processes are
looked at (the descendants of the launcher it started), never every process of the machine."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_distributed import TINY, corpus, needs_mpi, records  # noqa: F401 (corpus: a fixture)

SIGNALS = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
HANG_GUARD_S = 900   # only ends a job that hangs (the test then fails); no speed is asserted


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}


def _started(pid: int) -> bytes | None:
    """The start time of process ``pid`` (to tell it from a later process given the same pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()[19]


def _family(root: int) -> dict[int, bytes]:
    """Every process below ``root``, with its start time."""
    from charlm.distributed.launcher import descendants

    return {pid: started for pid in descendants(root) if (started := _started(pid)) is not None}


def _launch(args, evals: int, act):
    """Start ``charlm ARGS --ranks 2``, read its progress until ``evals`` evaluation lines, call
    ``act(launcher, family)``, then read to the end. Returns (launcher, stderr, family)."""
    proc = subprocess.Popen([sys.executable, "-m", "charlm", *map(str, args), "--ranks", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    guard = threading.Timer(HANG_GUARD_S, proc.kill)
    guard.start()
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if sum(s.startswith("eval step") for s in seen) >= evals:
                break
        assert proc.poll() is None, "".join(seen)
        family = _family(proc.pid)
        act(proc, family)
        seen.append(proc.stderr.read())
        proc.wait()
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    return proc, "".join(seen), family


def _left_behind(family: dict[int, bytes]) -> list[int]:
    return [pid for pid, started in family.items() if _started(pid) == started]


@needs_mpi
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_to_the_launcher_saves_at_one_step_and_leaves_no_rank(corpus, tmp_path, signum):  # noqa: F811
    from charlm.distributed.launcher import job_ranks
    from charlm.lm.checkpoint import load_checkpoint

    run = tmp_path / "r"
    ranks = []

    def stop(proc, family):
        ranks.extend(job_ranks(proc.pid))
        proc.send_signal(signum)

    args = ["train", corpus, *TINY, "--steps", "100000", "--eval-every", "2", "--run-dir", run]
    proc, stderr, family = _launch(args, 2, stop)
    assert len(ranks) == 2 and set(ranks) <= set(family)   # the launcher is no rank: it stayed charlm
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "continue with" in stderr, stderr
    stopped = load_checkpoint(run / "last.safetensors").metadata["step"]
    assert stopped == records(run, "step")[-1]["step"] >= 4   # saved at the step every rank stopped after
    assert _left_behind(family) == []
    if signum == signal.SIGHUP:   # (once is enough) the saved run resumes on two ranks
        more = subprocess.run([sys.executable, "-m", "charlm", "train", "--resume", str(run), "--steps",
                               str(stopped + 2), "--ranks", "2"], capture_output=True, text=True, env=_env(),
                              timeout=HANG_GUARD_S)
        assert more.returncode == 0, more.stderr
        assert records(run, "step")[-1]["step"] == stopped + 2


@needs_mpi
def test_a_killed_mpiexec_is_one_line_and_its_status(corpus, tmp_path):  # noqa: F811
    from charlm.distributed.launcher import parent_of

    def kill_mpiexec(proc, family):
        mpiexec = [pid for pid in family if parent_of(pid) == proc.pid]
        assert len(mpiexec) == 1
        os.kill(mpiexec[0], signal.SIGKILL)

    args = ["train", corpus, *TINY, "--steps", "100000", "--eval-every", "2", "--run-dir", tmp_path / "r"]
    proc, stderr, family = _launch(args, 1, kill_mpiexec)
    assert proc.returncode == 128 + signal.SIGKILL, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "killed by SIGKILL" in lines[0], stderr
    assert "Traceback" not in stderr
    assert _gone(family)   # the ranks went with their mpiexec


def _gone(family: dict[int, bytes]) -> bool:
    """Whether every process of ``family`` has ended, waiting for the dying (a hang guard only)."""
    end = time.monotonic() + HANG_GUARD_S
    while _left_behind(family) and time.monotonic() < end:
        time.sleep(0.2)
    return not _left_behind(family)
