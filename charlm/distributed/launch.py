"""Which process of a job this is. mpi4py is imported only when an MPI launcher started us.

``mpiexec`` (MPICH's Hydra, Open MPI, Slurm's PMI) tells each process the job's size in its
environment, so a process started any other way knows it is alone without importing anything:
``world()`` is then a ``Solo``. Ranks other than 0 send their stdout and stderr to /dev/null
(rank 0 speaks for the job); a rank that fails gets its stderr back, prints its one line
prefixed with its rank, and aborts the whole job, because MPI lets the other ranks wait in
their next collective forever otherwise.
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path

from ..errors import CharlmError, ConfigError

INSTALL_HINT = "pip install 'charlm[mpi]'"
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

# How long a failing rank waits between printing why and aborting the job: the launcher forwards
# a rank's output and its abort on separate channels, and an abort that overtook the output once
# lost the line (on a slow, loaded machine). Only a failing job waits.
REPORT_GRACE_S = 1.0

_world = None


def launched_size() -> int:
    """The number of processes the launcher started (1 when no launcher did)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def local_ranks() -> int:
    """How many ranks of the job run on this machine (1 when the launcher does not say)."""
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


class Solo:
    """The world of a process that trains alone: every collective is the identity."""

    rank, size, writes = 0, 1, True
    compute_s = 0.0

    def loss_and_grad(self, loop, batch):
        t0 = time.perf_counter()
        result = loop.task.loss_and_grad(batch)
        self.compute_s = time.perf_counter() - t0
        return result

    def full_state(self, state):
        return state

    def step_record(self) -> dict:
        """The step's forward and backward time (the same fields as a multi-rank run's)."""
        return {"compute_s": round(self.compute_s, 6), "allreduce_s": 0.0}


class MpiWorld:
    """MPI_COMM_WORLD and what this process does in it."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.writes = self.rank == 0
        self._stderr = None
        if self.rank > 0:  # rank 0 speaks for the job
            self._stderr = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)

    def speak(self) -> None:
        """Give this rank its stderr back (to report why it fails)."""
        if self._stderr is not None:
            os.dup2(self._stderr, 2)


def world():
    """This process's world: ``Solo`` unless launched as one of several MPI ranks."""
    global _world
    if _world is None:
        size = launched_size()
        if size <= 1:
            _world = Solo()
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ConfigError(f"started by an MPI launcher as one of {size} ranks, but mpi4py is "
                                  f"not installed: {INSTALL_HINT}") from None
            _world = MpiWorld(MPI.COMM_WORLD)
            _keep_stop_handlers()
    return _world


def _keep_stop_handlers() -> None:
    """Put Python's stop-signal handlers back in force: MPI's start-up (UCX) installs its own
    SIGHUP handler beneath them, and a closed terminal would then no longer stop the ranks at a
    step. (Python still reports its handler; the process no longer calls it.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        handler = signal.getsignal(signum) if signum is not None else None
        if callable(handler):
            signal.signal(signum, handler)


def rank_failed(error: BaseException) -> BaseException:
    """The error to report for ``error`` on this rank (named by rank when it is not rank 0),
    and the job set to abort at exit. Outside a multi-rank job: ``error`` unchanged."""
    if isinstance(error, SystemExit) or launched_size() <= 1:
        return error
    try:  # a rank may fail before it ever joined the job: join now, so that it can stop the others
        w = world()
    except ConfigError:
        return error
    if not (w.rank > 0 and isinstance(error, KeyboardInterrupt)):  # a stop reached every rank: rank 0 says it
        w.speak()
    atexit.register(_abort_job, w.comm)  # runs before mpi4py's MPI_Finalize (registered earlier)
    if w.rank > 0 and isinstance(error, CharlmError):
        return type(error)(f"rank {w.rank}: {error}")
    return error


def _abort_job(comm) -> None:
    """Stop every rank of the job, once what this rank printed is on its way to the launcher."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # a stream closed or gone: nothing to send
            pass
    time.sleep(REPORT_GRACE_S)
    comm.Abort(1)


def from_rank0(compute):
    """``compute()`` run by rank 0 alone, its (picklable) result sent to every rank: for a
    choice that must be the same everywhere, such as a model width measured by a probe.
    Alone, just ``compute()``. If rank 0 fails, it reports why and the others leave quietly."""
    w = world()
    if w.size == 1:
        return compute()
    if w.rank > 0:
        ok, value = w.comm.bcast(None, root=0)
        if not ok:
            raise SystemExit(1)
        return value
    ok, value = False, None
    try:
        value, ok = compute(), True
    finally:  # the others wait for this broadcast: always send one, failed or not
        w.comm.bcast((ok, value), root=0)
    return value


def on_rank0(claim):
    """Rank 0 runs ``claim()`` (claiming a run directory, which only one process may hold) and
    the others get a lock-less stand-in for the same directory; alone, just ``claim()``."""
    held = []

    def claim_and_name():
        held.append(claim())
        return None if held[0] is None else str(held[0].run_dir)

    path = from_rank0(claim_and_name)
    if held:
        return held[0]
    if path is None:  # rank 0 goes on to report that the run does not exist
        raise SystemExit(1)
    from ..runs.directory import RunLock

    return RunLock(Path(path), None, False)
