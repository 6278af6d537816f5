"""Model quality at equal wall-clock time: charlm's ``train`` beside a PyTorch training script.

Both train a character model on the same text, split the same way (the last 10% of the
characters held out, no sequence boundaries), for the same time budget, one after the other
(never at once: they would share the cores), and report the validation loss in nats per
character over the whole held-out text. charlm runs with its own defaults unless arguments are
given; the PyTorch script runs once per hidden size asked for, and the better of its results is
the one to beat. A benchmark, not a test: its figures depend on the machine and on what else runs.

The PyTorch script is any program that takes ``--text --time-budget --cosine --cell --layers
--hidden --embed --batch --seq --lr --threads`` and prints one JSON line with ``final_val_nats``
and ``steps`` (the quality anchor kept beside the project's benchmarks has that interface).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CharlmError


@dataclass
class QualityRun:
    name: str                 # "charlm" or "pytorch 2x256"
    val_nats: float           # validation loss at the end (nats per character)
    steps: int
    wall_s: float             # the whole process, start-up and evaluations included
    detail: dict = field(default_factory=dict)


def run_charlm(corpus: Path, seconds: float, args=(), threads: int = 2) -> QualityRun:
    """``charlm train CORPUS --time SECONDS --val-fraction 0.1 --eos none [args]`` in a fresh process."""
    from ..lm.checkpoint import MODEL_FILE, read_header
    from ..runs.metrics import read_metrics

    with tempfile.TemporaryDirectory(prefix="charlm-quality-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "charlm", "train", str(corpus), "--time", f"{seconds:g}s",
               "--val-fraction", "0.1", "--eos", "none", "--threads", str(threads), "--run-dir", str(run_dir),
               *args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise CharlmError(f"charlm train failed ({proc.returncode}): {_last_line(proc.stderr)}")
        evals = [r for r in read_metrics(run_dir) if r.get("kind") == "eval"]
        if not evals:
            raise CharlmError("charlm train wrote no evaluation")
        header, _ = read_header(run_dir / MODEL_FILE)
        config = json.loads(header["__metadata__"]["charlm.config"])
        last = evals[-1]
        return QualityRun("charlm", float(last["val_loss"]), int(last["step"]), wall,
                          {"model": config, "time_split": {k: last.get(k) for k in
                                                           ("train_s", "eval_s", "checkpoint_s", "compile_s")},
                           "elapsed": last.get("elapsed"), "command": " ".join(cmd[1:])})


def run_torch(script: Path, corpus: Path, seconds: float, hidden: int, python: str | None = None,
              threads: int = 2) -> QualityRun:
    """The PyTorch script with the reference settings (LSTM 2xH, embed 64, B32 T64, Adam 2e-3, cosine)."""
    cmd = [python or sys.executable, str(script), "--text", str(corpus), "--time-budget", f"{seconds:g}",
           "--cosine", "--cell", "lstm", "--layers", "2", "--hidden", str(hidden), "--embed", "64",
           "--batch", "32", "--seq", "64", "--lr", "2e-3", "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise CharlmError(f"{script} failed ({proc.returncode}): {_last_line(proc.stderr)}")
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return QualityRun(f"pytorch 2x{hidden}", float(result["final_val_nats"]), int(result["steps"]), wall,
                          {"train_s": result.get("train_s"), "eval_s": result.get("eval_s_total"),
                           "command": " ".join(cmd[1:])})
    except (IndexError, KeyError, TypeError, ValueError):
        raise CharlmError(f"{script} printed no result line with final_val_nats and steps") from None


def compare(corpus, seconds: float, script, hiddens=(256, 384), charlm_args=(), python=None, threads=2,
            progress=None) -> list[QualityRun]:
    """PyTorch at each hidden size, then charlm: one after the other on the same corpus and budget."""
    corpus, script = Path(corpus), Path(script)
    for path, what in ((corpus, "corpus"), (script, "PyTorch script")):
        if not path.is_file():
            raise CharlmError(f"{path}: no such {what}")
    runs = []
    for hidden in hiddens:
        if progress:
            progress(f"pytorch 2x{hidden}, {seconds:g}s")
        runs.append(run_torch(script, corpus, seconds, hidden, python, threads))
    if progress:
        progress(f"charlm, {seconds:g}s")
    runs.append(run_charlm(corpus, seconds, charlm_args, threads))
    return runs


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"
