"""The first run on an empty kernel cache: what ``charlm train FILE --steps 1`` costs a fresh install.

``first_run(corpus)`` runs that command in a fresh interpreter whose Numba cache is a new, empty
directory (``NUMBA_CACHE_DIR``), and returns its wall time, its CPU time (user + system, less
sensitive than wall time to other programs sharing the cores), its peak RSS, the warm-up's share
(``compile_s`` of the run's summary: compiling before the first step; processes the run starts count in
the CPU time, and their largest peak RSS is reported apart) and every kernel compiled in the run's own process,
with its signature and the seconds it took. A kernel compiled inside another (a callee, or a
parallel loop's body) is listed on its own; ``self_s`` is its time without those, so the self
times add up to the compilation total. Nothing here reads a timing for a test: tests check the
fields and their arithmetic only.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from ..errors import CharlmError


class CompileTimes:
    """A Numba ``numba:compile`` listener: one record per compilation (qualified name, argument
    types, wall and CPU seconds, total and without nested compilations). Compilation holds Numba's
    global lock, so starts and ends nest like a stack."""

    def __init__(self, clock=time.perf_counter, cpu=time.process_time):
        self.clock, self.cpu = clock, cpu
        self.records, self._open = [], []

    def on_start(self, event):
        data = event.data or {}
        fn = getattr(data.get("dispatcher"), "py_func", None)
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
        self._open.append({"kernel": name, "args": ", ".join(str(a) for a in data.get("args", ())),
                           "start": self.clock(), "cpu_start": self.cpu(), "nested_s": 0.0, "nested_cpu_s": 0.0})

    def on_end(self, event):
        rec = self._open.pop()
        wall, cpu = self.clock() - rec.pop("start"), self.cpu() - rec.pop("cpu_start")
        rec.update(wall_s=wall, cpu_s=cpu, self_s=wall - rec.pop("nested_s"), self_cpu_s=cpu - rec.pop("nested_cpu_s"),
                   depth=len(self._open))
        if self._open:
            self._open[-1]["nested_s"] += wall
            self._open[-1]["nested_cpu_s"] += cpu
        self.records.append(rec)


def summarise(records: list[dict]) -> dict:
    """Totals of the compile records (top-level wall and CPU seconds, counts) and the kernels by
    self time, largest first, with their signatures."""
    top = [r for r in records if r["depth"] == 0]
    by_self = sorted(records, key=lambda r: -r["self_s"])
    return {"compiles": len(records), "compile_wall_s": round(sum(r["wall_s"] for r in top), 3),
            "compile_cpu_s": round(sum(r["cpu_s"] for r in top), 3),
            "kernels": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in by_self]}


def first_run(corpus: str, extra=(), python: str = sys.executable, cache_dir: str | None = None) -> dict:
    """``charlm train CORPUS --steps 1 EXTRA`` in a fresh interpreter on an empty Numba cache (a
    new temporary directory unless ``cache_dir``, which may be warm), in a temporary working
    directory. Returns the measurements described in the module docstring."""
    corpus = os.path.abspath(corpus)
    with tempfile.TemporaryDirectory(prefix="charlm-first-run-") as work:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir or os.path.join(work, "numba-cache"))
        spec = {"args": ["train", corpus, "--steps", "1", "--run-dir", os.path.join(work, "run"), "--json", *extra]}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([python, "-m", "charlm.cli.first_run_child", json.dumps(spec)], capture_output=True,
                              text=True, env=env, cwd=work, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"first_run"')]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise CharlmError(f"the first run failed (exit {proc.returncode}): {tail or 'no output'}")
    res = json.loads(lines[-1])["first_run"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res | {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "corpus": corpus, "args": spec["args"]}
