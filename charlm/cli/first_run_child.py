"""The fresh interpreter of ``charlm bench --first-run`` (bench/first_run.py starts it): runs one
charlm command in-process with Numba's compile events recorded, and prints one JSON line.

It lives with the commands because it drives them; the measuring and summing are bench's.
"""
from __future__ import annotations

import json
import resource
import sys
import time

from ..bench.first_run import CompileTimes, summarise


def _child(spec: dict) -> dict:
    """In the fresh interpreter: run the command with the listener on; its summary's time split."""
    import contextlib
    import io

    t0 = time.perf_counter()
    from numba.core import event

    from . import main

    times = CompileTimes()

    class Relay(event.Listener):  # Numba takes instances of its own Listener class only
        def on_start(self, e):
            times.on_start(e)

        def on_end(self, e):
            times.on_end(e)

    out = io.StringIO()
    with event.install_listener("numba:compile", Relay()), contextlib.redirect_stdout(out):
        try:
            main.main(args=spec["args"], standalone_mode=False)
        except SystemExit as e:  # the command's exit status: a failed run has no profile to give
            if e.code not in (0, None):
                raise
    summary = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    split = (summary[-1].get("time_split") or {}) if summary else {}
    usage, helpers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"in_process_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
            "helpers_peak_rss_mb": round(helpers.ru_maxrss / 1024.0, 1),  # processes it started (0: none)
            "helpers_cpu_s": round(helpers.ru_utime + helpers.ru_stime, 3),
            "split": split, "summary": summary[-1] if summary else None} | summarise(times.records)


if __name__ == "__main__":  # python -m charlm.cli.first_run_child '{"args": [...]}': one JSON line
    print(json.dumps({"first_run": _child(json.loads(sys.argv[1]))}), flush=True)
