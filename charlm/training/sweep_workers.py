"""A sweep's local worker processes: one spawned process per trial, watched by the sweep.

- A worker that dies (``kill -9``, the OOM killer) or fails is that trial's recorded failure; the
  other trials go on.
- A stop (``poll`` says so: the caller's signal handling) starts no further trial and asks every
  running worker to stop with SIGTERM: each finishes its step, saves, and returns its result,
  which is recorded. A worker that has not answered within ``STOP_GRACE`` seconds, or any worker
  still alive when the sweep ends for another reason, is killed: no process outlives the sweep.
- Workers start with the stop signals blocked (the mask survives the spawn's exec) and unblock
  them once their handlers, which only record, are in place: a Ctrl-C sent to the whole process
  group during a worker's start-up is a graceful stop, not a traceback. A worker whose parent
  went away (the sweep was killed) stops too.
"""
from __future__ import annotations

import os
import signal
import time

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
STOP_GRACE = 60.0   # seconds a stopped worker may take to save (a step, then a checkpoint)
_POLL = 0.2         # seconds between the sweep's looks at its stop request

_stop_requested = []   # in a worker: the signals received


def run_on_processes(workers: int, jobs, run, failed, poll=None):
    """Yield ``run(*job)``'s result dict for each job, ``workers`` processes at a time;
    ``failed(job, why)`` makes the result of a worker that ended without one. ``poll()``, called
    between waits, returns True once the sweep should stop (and may raise to abort at once)."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")  # a forked copy of Numba's threads is unsafe
    pending, running = list(jobs), {}               # connection -> (process, job)
    stopping, deadline = False, None
    try:
        while pending or running:
            if not stopping and poll is not None and poll():
                stopping, deadline = True, time.monotonic() + STOP_GRACE
                pending.clear()                     # trials not started never start
                for process, _ in running.values():
                    process.terminate()             # SIGTERM: finish the step, save, report
            while pending and len(running) < max(1, workers):
                job = pending.pop(0)
                conn, process = _start(context, run, job)
                running[conn] = (process, job)
            if deadline is not None and time.monotonic() > deadline:
                break
            for conn in wait(list(running), timeout=_POLL):
                process, job = running.pop(conn)
                yield _receive(conn, process, job, failed)
    finally:
        _end(running)


def _start(context, run, job):
    receiver, sender = context.Pipe(duplex=False)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        process = context.Process(target=_worker, args=(sender, run, job, os.getpid()), daemon=True)
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    sender.close()   # the worker's end: once it dies, the receiver reads end-of-file
    return receiver, process


def _receive(conn, process, job, failed) -> dict:
    try:
        record = conn.recv()
    except (EOFError, OSError):
        record = None
    conn.close()
    process.join()
    if isinstance(record, dict) and "__failed__" in record:
        return failed(job, record["__failed__"])
    if record is None:
        code = process.exitcode
        why = (f"its worker process was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"its worker process ended (exit status {code}) without a result")
        record = failed(job, why)
    return record


def _end(running: dict) -> None:
    processes = [process for process, _ in running.values()]
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=STOP_GRACE / 4)
        if process.is_alive():
            process.kill()
            process.join()
    for conn in running:
        conn.close()


def _worker(sender, run, job, parent: int) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        record = run(*job, stop=lambda: bool(_stop_requested) or os.getppid() != parent)
    except BaseException as e:  # noqa: BLE001 - whatever ends the trial is its recorded failure
        record = {"__failed__": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    sender.send(record)
    sender.close()


def _record(signum, frame) -> None:
    _stop_requested.append(signum)   # only record: the trial's loop stops at its next step
