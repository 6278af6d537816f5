"""Crash safety: SIGKILL at 20 moments (half of them inside the checkpoint-writing path), and Ctrl-C.

Every kill must leave loadable checkpoints, and resuming must reproduce, step for step and bit for
bit, the losses of a run that was never interrupted; the best checkpoint is only ever replaced by
a better one.

How the kills are cheap and targeted: the test starts ONE driver process (this file run as a
script). It imports charlm, warms the kernels and runs the uninterrupted reference; then each
"segment" of the interrupted run is a ``fork()`` of the driver (no imports, no compilation), which
resumes from the run directory and trains until it is killed:

- "event" kills: the child kills itself with SIGKILL right after a random number of the loop's
  events (steps, evaluations, checkpoints written), counted, never timed: a busy machine
  changes nothing about where the kills land;
- "write" kills: the child kills itself with SIGKILL at a chosen point of the write path, by
  wrapping the ``os`` functions that ``charlm.fsutil`` (atomic writes) and ``charlm.runs.metrics`` call: after the temporary file is
  fully written but before its fsync, before the rename over the target, right after the rename
  (for model.safetensors this is the moment between writing the best and the last checkpoint),
  before the directory fsync, and inside a metrics append.

SIGKILL leaves the kernel's page cache intact, so this tests what a crash of the *process* can do
(torn temporary files, half-done rename sequences), not a power cut (lost unsynced pages); the
fsync-before-rename ordering is what covers the latter, and it is not exercised here.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KILLS = 20
SIGINTS = 3
STEPS = 180
WRITE_POINTS = ["tmp-fsync", "replace-before", "replace-after", "dir-fsync"]
# the 10 write-path kills: each point of the atomic write of the best model (early in the run,
# while validation still improves, so that the write happens), of the last checkpoint, of the
# metrics rewrite done on resume, and an append to the metrics log
WRITE_TARGETS = ([(p, "model.safetensors") for p in WRITE_POINTS] + [(p, "last.safetensors") for p in WRITE_POINTS]
                 + [("replace-after", "metrics.jsonl"), ("metrics-fsync", "metrics.jsonl")])


# ---------------------------------------------------------------------------------------------
# the test (runs in pytest)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("crash")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, str(work)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sigkill_twenty_times_never_loses_or_changes_the_run(report):
    kills = [s for s in report["segments"] if s["kind"] in ("event", "write")]
    assert len(kills) == KILLS and all(s["killed"] for s in kills), report["segments"]
    # the write-path kills hit every targeted point, in both checkpoint files
    hit = {s["hit"].split(" ")[0] for s in kills if s["kind"] == "write"}
    assert set(WRITE_POINTS) | {"metrics-fsync"} <= hit, hit
    assert sorted(s["hit"] for s in kills if s["kind"] == "write") == sorted(f"{p} {f}" for p, f in WRITE_TARGETS)
    # after every kill: both checkpoints loaded, metrics matched the reference, progress was kept
    for s in report["segments"]:
        assert s["problems"] == [], s
    assert max(s["last_step"] or 0 for s in kills) >= 30  # the kills were spread over the run
    # the finished run equals the uninterrupted one
    final = report["final"]
    assert final["losses_equal"] and final["evals_equal"], final
    assert final["model_bytes_equal"] and final["last_tensors_equal"], final
    assert final["stale_temp_files"] == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_best_checkpoint_is_only_replaced_by_a_better_one(report):
    replacements = report["best_replacements"]
    assert replacements, "no best checkpoint was written"
    for r in replacements:
        assert r["old"] is None or r["new"] < r["old"], r
    # and over time (sampled after every kill) its val_loss never went up
    seen = [v for v in report["best_over_time"] if v is not None]
    assert seen == sorted(seen, reverse=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_ctrl_c_saves_the_exact_position(report):
    stops = [s for s in report["segments"] if s["kind"] == "sigint"]
    assert len(stops) == SIGINTS
    for s in stops:
        assert s["exit"] == 130, s
        assert s["reason"] == "stopped", s
        # nothing trained was lost: last.safetensors is at the newest step in the metrics
        assert s["last_step"] == s["metrics_step"], s


# ---------------------------------------------------------------------------------------------
# the driver (runs as a script, forks the training segments)


def _setup(work: Path):
    from charlm.config import ModelConfig, TrainConfig

    rnd = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "carried", "state", "loss", "resume", "kill"]
    text = "".join(" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 9))) + "\n" for _ in range(300))
    corpus_path = work / "corpus.txt"
    corpus_path.write_text(text, encoding="utf-8")
    mcfg = ModelConfig(cell="lstm", embed=8, hidden=16, layers=2, dropout=0.1)
    tcfg = TrainConfig(steps=STEPS, seq_len=8, batch_size=4, eval_every=3, lr=1e-2, threads=1, seed=7,
                       val_fraction=0.05)
    return corpus_path, mcfg, tcfg


def _trainer(run_dir: Path, corpus_path, mcfg, tcfg):
    from charlm.data.corpus import build_corpus
    from charlm.lm import checkpoint as ckpt
    from charlm.lm.train import Trainer

    if (run_dir / ckpt.LAST_FILE).exists():
        return Trainer.resume(run_dir, lambda tok, t, sources: build_corpus(
            sources, eos=t.eos, val_fraction=t.val_fraction, tokenizer=tok))
    # no checkpoint yet (killed before the first one): start over, as a user would
    for p in run_dir.glob("*") if run_dir.exists() else []:
        p.unlink()
    return Trainer(build_corpus([corpus_path], eos=tcfg.eos, val_fraction=tcfg.val_fraction), mcfg, tcfg, run_dir)


class _KillingOs:
    """Stands in for ``os`` inside charlm.fsutil and charlm.runs.metrics: logs every best-model replacement and,
    when ``target`` = (point, file, n) is given, SIGKILLs this process at the n-th time the
    write of ``file`` reaches ``point``."""

    def __init__(self, log_fd, target=None):
        self.log_fd, self.target, self.counts, self.writing = log_fd, target, {}, "?"

    def __getattr__(self, name):
        return getattr(os, name)

    def _at(self, point, file):
        key = (point, file)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.target == (point, file, self.counts[key]):
            os.write(self.log_fd, (json.dumps({"hit": f"{point} {file}"}) + "\n").encode())
            os.kill(os.getpid(), signal.SIGKILL)

    def fsync(self, fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        name = os.path.basename(path)
        if os.path.isdir(path):          # the directory, after the rename of self.writing
            self._at("dir-fsync", self.writing)
        elif name.endswith(".tmp"):      # .<file>.<random>.tmp, fully written, not yet synced
            self.writing = name[1:].rsplit(".", 2)[0]
            self._at("tmp-fsync", self.writing)
        else:                            # an append to metrics.jsonl
            self._at("metrics-fsync", name)
        os.fsync(fd)

    def replace(self, src, dst):
        from charlm.lm import checkpoint as ckpt

        name = os.path.basename(dst)
        if name == ckpt.MODEL_FILE:  # every best-model replacement, with both losses
            new, old = _val_loss(src), _val_loss(dst) if os.path.exists(dst) else None
            os.write(self.log_fd, (json.dumps({"replace": {"new": new, "old": old}}) + "\n").encode())
        self._at("replace-before", name)
        os.replace(src, dst)
        self._at("replace-after", name)


def _val_loss(path):
    from charlm.lm import checkpoint as ckpt

    header, _ = ckpt.read_header(Path(path))
    return json.loads(header["__metadata__"]["charlm.val_loss"])


def _segment(run_dir, setup, log_path, target=None, on_sigint=False, after=None):
    """Fork a child that resumes (or starts) the run and trains; returns its pid. ``after``: the
    child sends itself SIGKILL (SIGINT with ``on_sigint``) right after that many of its events."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        from charlm.lm import checkpoint as ckpt
        from charlm.lm.train import DoneEvent

        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        from charlm import fsutil
        from charlm.runs import metrics

        fsutil.os = metrics.os = _KillingOs(log_fd, target)  # atomic writes and metrics appends
        stop = {"trainer": None, "asked": False}
        if on_sigint:
            def handler(signum, frame):
                stop["asked"] = True
                if stop["trainer"] is not None:
                    stop["trainer"].request_stop()
            signal.signal(signal.SIGINT, handler)
        trainer = stop["trainer"] = _trainer(run_dir, *setup)
        if stop["asked"]:
            trainer.request_stop()
        reason = None
        for seen, event in enumerate(trainer.events(), 1):
            if isinstance(event, DoneEvent):
                reason = event.reason
            if seen == after:
                os.kill(os.getpid(), signal.SIGINT if on_sigint else signal.SIGKILL)
        os.write(log_fd, (json.dumps({"done": reason}) + "\n").encode())
        code = 130 if reason == "stopped" else 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _records(run_dir):
    from charlm.lm import checkpoint as ckpt

    records = ckpt.read_metrics(run_dir)
    steps = {r["step"]: r["loss"] for r in records if r["kind"] == "step"}
    evals = {r["step"]: r["val_loss"] for r in records if r["kind"] == "eval"}
    return records, steps, evals


def _check_after(run_dir, ref_steps, ref_evals):
    """Problems found in the run directory after a segment ended (empty list = all good)."""
    from charlm.errors import CharlmError
    from charlm.lm import checkpoint as ckpt

    problems, last_step, best = [], None, None
    for name in (ckpt.LAST_FILE, ckpt.MODEL_FILE):
        if (run_dir / name).exists():
            try:
                loaded = ckpt.load_checkpoint(run_dir / name)
            except CharlmError as e:
                problems.append(f"{name} does not load: {e}")
                continue
            if name == ckpt.LAST_FILE:
                last_step = loaded.metadata["step"]
            else:
                best = loaded.metadata["val_loss"]
                if best != ref_evals.get(loaded.metadata["step"]):
                    problems.append(f"best model's val_loss {best} is not the reference's at its step")
    records, steps, evals = _records(run_dir)
    order = [r["step"] for r in records if r["kind"] == "step"]
    if order != list(range(1, len(order) + 1)):
        problems.append(f"metrics steps are not 1..n in order: {order[:5]}...{order[-5:]}")
    problems += [f"step {s} loss {v} != reference {ref_steps.get(s)}" for s, v in steps.items() if ref_steps.get(s) != v]
    problems += [f"eval {s} val_loss {v} != reference" for s, v in evals.items() if ref_evals.get(s) != v]
    if last_step is not None and last_step > max(order, default=0):
        problems.append(f"last.safetensors at step {last_step} is ahead of the metrics")
    return problems, last_step, best, max(order, default=0)


def _wait(pid, timeout):
    """waitpid with a deadline (a target never reached must fail the test, not hang it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1] | 0x10000  # marks "timed out" (neither exited nor killed by us)


def _read_log(log_path):
    out = []
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            out.append(json.loads(line))
        log_path.unlink()
    return out


def _content(path):
    """(parsed header, data bytes): the file minus the order of its header's keys, which the
    safetensors writer (a Rust HashMap) varies from process to process."""
    from charlm.lm import checkpoint as ckpt

    header, start = ckpt.read_header(path)
    return header, path.read_bytes()[start:]


def driver(work: Path) -> dict:
    import numpy as np

    from charlm.lm import checkpoint as ckpt

    setup = _setup(work)
    rnd = random.Random(20240)
    # 1. the uninterrupted reference, in this process (after warming the kernels, which the
    # forks then inherit)
    ref_dir, run_dir, log_path = work / "ref", work / "run", work / "log.jsonl"
    from dataclasses import replace

    for _ in _trainer(work / "warm", setup[0], setup[1], replace(setup[2], steps=2, eval_every=1)).events():
        pass
    for _ in _trainer(ref_dir, *setup).events():
        pass
    _trainer(ref_dir, *setup)  # (a resume rewrites nothing but an identical metrics file)
    _, ref_steps, ref_evals = _records(ref_dir)
    assert len(ref_steps) == STEPS

    segments, replacements, best_over_time = [], [], []
    plan = ["write" if i % 2 else "event" for i in range(KILLS)]
    sigint_at = set(rnd.sample(range(2, KILLS), SIGINTS))
    for i, kind in enumerate(plan):
        for mode in (["sigint"] if i in sigint_at else []) + [kind]:
            target = None
            if mode == "write":
                point, file = WRITE_TARGETS[i // 2]
                # (the best model: its first write after the resume, while it still improves;
                # metrics.jsonl is rewritten once per resume; the last checkpoint: any of the next 3)
                target = (point, file, rnd.randint(1, 3) if file == "last.safetensors" else 1)
            # event kills and Ctrl-C: after 1 to 12 of the segment's events (steps, evaluations,
            # checkpoints); the timeout below only bounds a hung child
            after = rnd.randint(1, 12) if mode in ("event", "sigint") else None
            pid = _segment(run_dir, setup, log_path, target=target, on_sigint=mode == "sigint", after=after)
            status = _wait(pid, timeout=120)
            log = _read_log(log_path)
            replacements += [e["replace"] for e in log if "replace" in e]
            problems, last_step, best, metrics_step = _check_after(run_dir, ref_steps, ref_evals)
            best_over_time.append(best)
            segments.append({
                "kind": mode, "target": target,
                "killed": status < 0x10000 and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
                "exit": "timeout" if status >= 0x10000 else os.WEXITSTATUS(status) if os.WIFEXITED(status)
                else -os.WTERMSIG(status),
                "hit": next((e["hit"] for e in log if "hit" in e), ""),
                "reason": next((e["done"] for e in log if "done" in e), None),
                "last_step": last_step, "metrics_step": metrics_step, "problems": problems})
    # 2. finish the interrupted run and compare it with the reference
    pid = _segment(run_dir, setup, log_path)
    final_status = _wait(pid, timeout=60)
    replacements += [e["replace"] for e in _read_log(log_path) if "replace" in e]
    _, steps, evals = _records(run_dir)
    ref_last, last = ckpt.load_checkpoint(ref_dir / ckpt.LAST_FILE), ckpt.load_checkpoint(run_dir / ckpt.LAST_FILE)
    final = {
        "status": final_status,
        "losses_equal": [steps.get(s) for s in range(1, STEPS + 1)] == [ref_steps[s] for s in range(1, STEPS + 1)],
        "evals_equal": evals == ref_evals,
        "model_bytes_equal": _content(run_dir / ckpt.MODEL_FILE) == _content(ref_dir / ckpt.MODEL_FILE),
        "last_tensors_equal": all(np.array_equal(ref_last.tensors[k], last.tensors[k]) for k in ref_last.tensors)
        and all(np.array_equal(ref_last.extra[k], last.extra[k]) for k in ref_last.extra),
        "stale_temp_files": sorted(p.name for p in run_dir.glob(".*.tmp")),
    }
    return {"segments": segments, "best_replacements": replacements, "best_over_time": best_over_time,
            "final": final}


if __name__ == "__main__":
    print(json.dumps(driver(Path(sys.argv[1]))))
