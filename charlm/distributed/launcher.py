"""``--ranks N``: the process the user started stays charlm and runs ``mpiexec -n N`` as its child.

A process that replaced itself by mpiexec would be ended by a SIGHUP (a closed terminal) before
any rank saved, and would exit with mpiexec's status. Instead the launcher starts the job in its
own session (so that a terminal's Ctrl-C reaches the ranks once, through the launcher, not a
second time straight from the terminal), hands every stop signal (INT, TERM, HUP) to the job's
ranks, which record it and agree on one step to stop after (ranks.py ``request_stop``: rank 0
saves), waits for the job, and ends as one process would: 128 + the last signal after a stop,
the job's own status otherwise. Should the launcher itself be killed, the kernel sends mpiexec a
SIGTERM (Linux), which it hands to the ranks: no rank outlives the command the user started.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .launch import INSTALL_HINT, launched_size

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: the status for the launcher to exit with, and one line when the job did
    not end by itself (its mpiexec was killed)."""

    code: int
    problem: str | None = None


def launch_ranks(ranks: int | None, argv: list[str] | None = None) -> JobEnd | None:
    """``charlm train --ranks N`` (and classify/tag): run the same command without ``--ranks``
    under ``mpiexec -n N`` and wait for it. None when there is nothing to launch (no ``--ranks``,
    or inside a job already): the caller trains itself."""
    if ranks is None or launched_size() > 1:
        return None
    try:
        import mpi4py  # noqa: F401 - only whether it is there (MPI itself starts in the ranks)
    except ImportError:
        raise ConfigError(f"--ranks needs mpi4py and an MPI launcher: {INSTALL_HINT}") from None
    beside = Path(sys.executable).with_name("mpiexec")
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        raise ConfigError(f"--ranks needs an mpiexec (none beside {sys.executable} or on PATH): {INSTALL_HINT}")
    return run_job([mpiexec, "-n", str(ranks), sys.executable, "-m", "charlm", *without_ranks(argv)])


def without_ranks(argv: list[str] | None) -> list[str]:
    """The command line's arguments (``sys.argv[1:]`` by default) without ``--ranks N``."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--ranks":
            del args[i:i + 2]
            break
        if arg.startswith("--ranks="):
            del args[i]
            break
    return args


def run_job(command: list[str]) -> JobEnd:
    """Run ``command`` (an mpiexec line) as a child, handing it the stop signals, until it ends."""
    received: list[int] = []
    job = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_death_signal())

    def hand_on(signum, frame):  # only forwards: the ranks decide at a step when to stop
        received.append(signum)
        stop_ranks(job.pid, signum)

    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:  # `nohup`: the user asked for it to be ignored
            previous[signum] = signal.signal(signum, hand_on)
    try:
        code = job.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code < 0:  # mpiexec itself was killed (its ranks go with it): one line, the status of that signal
        return JobEnd(128 - code, f"the MPI job ({Path(command[0]).name}) was killed by {_signal_name(-code)}")
    return JobEnd(128 + received[-1] if received else code)


def stop_ranks(mpiexec_pid: int, signum: int) -> None:
    """Give ``signum`` to every rank of the job on this machine (each records it; they stop
    together at a step). Where ranks cannot be found (no /proc, or not started yet), mpiexec gets
    it to pass on (a SIGHUP as SIGTERM: MPICH's mpiexec would die of a SIGHUP itself)."""
    ranks = job_ranks(mpiexec_pid)
    if not ranks:
        ranks, signum = [mpiexec_pid], (signal.SIGTERM if signum == getattr(signal, "SIGHUP", None) else signum)
    for pid in ranks:
        try:
            os.kill(pid, signum)
        except OSError:  # ended meanwhile
            pass


def job_ranks(root: int) -> list[int]:
    """The processes below ``root`` that run charlm (``python -m charlm``): the ranks of the job,
    not mpiexec's own helpers (whose death would end the job unsaved)."""
    return [pid for pid in descendants(root) if _runs_charlm(pid)]


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (read from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if name.isdigit():
            parent = parent_of(int(name))
            if parent is not None:
                children.setdefault(parent, []).append(int(name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        found.append(pid)
    return found


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])  # after "(name)": state, then ppid
    except (OSError, ValueError, IndexError):
        return None


def _runs_charlm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return argv[1:3] == [b"-m", b"charlm"]


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _death_signal():
    """What the child runs before mpiexec starts: ask for a SIGTERM when the launcher dies
    (Linux's ``PR_SET_PDEATHSIG``), so that a killed launcher still stops its ranks at a step.
    Looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
