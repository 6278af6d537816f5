"""Ctrl-C, SIGTERM and SIGHUP during ``charlm train``: one path for all three.

``timeout``, systemd, docker and Slurm stop a job with SIGTERM, and a closed terminal sends
SIGHUP; each deserves what Ctrl-C gets. Until the loop starts its first step (reading the data,
compiling the kernels, warming up) there is nothing new to save and the signal stops the command
at once, with one line that says so; should it land in a compiled call (which turns it into some
other exception), the command still ends as stopped by that signal. Once the loop runs (its
``started``), the handler only records the signal and asks the loop to stop;
everything else happens at safe points, between the loop's events (``watch``): the notice is
shown, and a second signal aborts there (the last checkpoint stays as it was) instead of raising
inside a kernel. The exit status is the shell's convention for a process stopped by a signal:
128 + its number (130, 143, 129), the last one received. A signal that was ignored when the
command started (SIGHUP under ``nohup``) stays ignored.
"""
from __future__ import annotations

import signal
import threading

from ..errors import CharlmError
from .common import StopSignal

_ITS_OWN = (StopSignal, SystemExit, CharlmError, OSError, MemoryError)   # errors that are not a signal's

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
NAMES = {getattr(signal, n): label for n, label in (("SIGINT", "Ctrl-C"), ("SIGTERM", "SIGTERM"),
                                                     ("SIGHUP", "SIGHUP")) if hasattr(signal, n)}
NOTHING_TO_SAVE = "stopped before the first step; nothing to save"


class StopSignals:
    """Install the handlers for the life of a ``with`` block (main thread only; elsewhere a no-op)."""

    def __init__(self):
        self.received: int | None = None   # the first signal, once training has started
        self.signals: list[int] = []       # every signal recorded, in order
        self._announced = 0
        self._trainer = self._view = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # `nohup`, or a shell's background job: the user asked for it to be ignored
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind, exc, tb):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if exc is not None and self.signals and not isinstance(exc, _ITS_OWN):
            # The signal's exception was swallowed or replaced on its way out (a compiled call
            # reports "returned a result with an exception set"): it is still that signal. A
            # problem of its own (a full disk while saving) keeps its line.
            raise self._stop_now(self.signals[-1]) from None
        return False

    def training(self, trainer, view) -> None:
        """From the loop's first step on (its ``started``), a signal stops the Trainer gracefully
        instead of raising."""
        self._trainer, self._view = trainer, view

    def watch(self, events):
        """``events`` (a training loop's), acting between them on the signals recorded meanwhile."""
        try:
            for event in events:
                yield event
                self.act()
        finally:
            events.close()  # an abort ends the loop here, its thread limits undone

    def act(self) -> None:
        """At a safe point: announce a stop request once; abort if asked twice."""
        if len(self.signals) > 1:
            raise StopSignal(self.signals[-1])
        if self.received is not None and self._announced == 0:
            self._announced = 1
            name = NAMES.get(self.received, "signal")
            again = "Ctrl-C" if self.received == signal.SIGINT else f"another {name}"
            self._view.note(f"{name}: stopping after this step and saving… ({again} to abort)")

    @property
    def exit_code(self) -> int:
        return 128 + (self.signals[-1] if self.signals else signal.SIGINT)

    def _started(self) -> bool:
        """Whether the training loop has begun its first step (a stand-in without the
        attribute, such as a sweep's, counts as running)."""
        return self._trainer is not None and getattr(self._trainer, "started", True)

    def _stop_now(self, signum: int) -> StopSignal:
        return StopSignal(signum, None if self._started() else NOTHING_TO_SAVE)

    def _handle(self, signum, frame):
        # Only record once training runs: raising there could land inside a compiled call mid-step.
        self.signals.append(signum)
        if not self._started():
            raise self._stop_now(signum)  # setting up, compiling: nothing new to save, stop now
        if self.received is None:
            self.received = signum
            self._trainer.request_stop()
