"""Ctrl-C, SIGTERM and SIGHUP during ``charlm train``: one path for all three.

``timeout``, systemd, docker and Slurm stop a job with SIGTERM, and a closed terminal sends
SIGHUP; each deserves what Ctrl-C gets. While the run is being set up (reading the corpus,
compiling) there is nothing to save and the signal stops the command at once. Once training
runs, the first signal asks the Trainer to finish its step and save the exact position; a
second one aborts (the last checkpoint stays as it was). The exit status is the shell's
convention for a process stopped by that signal: 128 + its number (130, 143, 129). A signal
that was ignored when the command started (SIGHUP under ``nohup``) stays ignored.
"""
from __future__ import annotations

import signal
import threading

from .common import StopSignal

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
NAMES = {getattr(signal, n): label for n, label in (("SIGINT", "Ctrl-C"), ("SIGTERM", "SIGTERM"),
                                                     ("SIGHUP", "SIGHUP")) if hasattr(signal, n)}


class StopSignals:
    """Install the handlers for the life of a ``with`` block (main thread only; elsewhere a no-op)."""

    def __init__(self):
        self.received: int | None = None   # the first signal, once training has started
        self._trainer = self._view = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # `nohup`, or a shell's background job: the user asked for it to be ignored
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False

    def training(self, trainer, view) -> None:
        """From now on a signal stops the Trainer gracefully instead of raising."""
        self._trainer, self._view = trainer, view

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    def _handle(self, signum, frame):
        if self._trainer is None or self.received is not None:
            raise StopSignal(signum)  # setting up (nothing to save), or asked twice: stop now
        self.received = signum
        self._trainer.request_stop()
        again = "Ctrl-C" if signum == signal.SIGINT else f"another {NAMES.get(signum, 'signal')}"
        self._view.note(f"{NAMES.get(signum, 'signal')}: stopping after this step and saving… "
                        f"({again} to abort)")
