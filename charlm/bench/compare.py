"""charlm beside PyTorch: each side in a fresh process, medians over repeats, ratios, and a check
that BLAS runs the best kernel this CPU has.

``measure_isolated(cfg)`` runs ``bench.measure`` in a fresh interpreter (``python -m charlm.bench.speed``),
so that peak RSS and start-up belong to one configuration only; ``run_torch`` runs the same model
in PyTorch there too (torch_side.py), and ``run_torch_baseline`` a PyTorch script given by the
caller (``charlm bench --torch-baseline``) on the same configuration, each after
``check_torch_python`` made sure that Python can import PyTorch at all.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys

from ..errors import CharlmError
from .speed import BenchConfig


def measure_isolated(cfg: BenchConfig, python: str = sys.executable, env=None) -> dict:
    """``measure(cfg)`` in a fresh interpreter (its own peak RSS and start-up)."""
    args = json.dumps(dataclasses.asdict(cfg))
    return _run_json([python, "-m", "charlm.bench.speed", args], env)


GET_TORCH = "pip install torch (CPU only: pip install torch --index-url https://download.pytorch.org/whl/cpu)"


def check_torch_python(python: str) -> None:
    """Raise CharlmError (one line, saying how to get PyTorch) unless ``python`` runs and imports
    it: checked before any measurement, so a comparison never fails after minutes of charlm's side."""
    try:
        proc = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    except OSError as e:
        raise CharlmError(f"cannot run {python} for the PyTorch side: {e.strerror or e}") from None
    if proc.returncode != 0:
        here = "" if python == sys.executable else f" for {python}"
        raise CharlmError(f"the comparison needs PyTorch, which is not installed{here}: {GET_TORCH}")


def run_torch(cfg: BenchConfig, python: str = sys.executable, env=None) -> dict:
    """The same model in PyTorch (torch_side.py) on ``cfg``, in a fresh interpreter (another
    Python finds this charlm through PYTHONPATH)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return _run_json([python, "-m", "charlm.bench.torch_side", json.dumps(dataclasses.asdict(cfg))], env)


def run_torch_baseline(cfg: BenchConfig, script: str, python: str = sys.executable, env=None) -> dict:
    """The PyTorch baseline ``script`` on the same configuration (its own process), parsed from
    the last JSON line it prints. It is passed the flags below and must print the field names of
    ``measure`` (at least ``train.chars_per_s``, ``sample.chars_per_s``, ``peak_rss_mb``)."""
    cmd = [python, str(script), "--cell", cfg.cell, "--layers", str(cfg.layers), "--hidden", str(cfg.hidden),
           "--batch", str(cfg.batch), "--seq", str(cfg.seq_len), "--vocab", str(cfg.vocab),
           "--threads", str(cfg.threads), "--warmup", str(cfg.warmup), "--steps", str(cfg.steps),
           "--sample-chars", str(cfg.sample_chars), "--sample-reps", str(cfg.sample_reps),
           "--temperature", str(cfg.temperature), "--lr", str(cfg.lr), "--clip", str(cfg.clip),
           "--seed", str(cfg.seed), "--peak-gflops", str(cfg.peak_gflops)]
    if cfg.embed and cfg.embed != cfg.vocab:
        cmd += ["--input", "embedding", "--embed-dim", str(cfg.embed)]
    if not cfg.train:
        cmd.append("--no-train")
    if not cfg.sample:
        cmd.append("--no-sample")
    return _run_json(cmd, env, CharlmError)


def _run_json(cmd, env, error=RuntimeError) -> dict:
    """The last JSON line ``cmd`` prints; ``error`` (a charlm bug by default, a CharlmError for
    the user's baseline script) with the end of its output when it fails or prints none."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
    tail = "".join(ch if ch.isprintable() else "?" for ch in tail)  # another program's bytes
    what = f"failed (exit {proc.returncode})" if proc.returncode else "printed no JSON line"
    raise error(f"{' '.join(cmd[:3])} ... {what}: {tail or 'no output'}")


def torch_sample_chars_per_s(t: dict) -> float | None:
    """PyTorch's best batch-1 sampling figure: oneDNN on or off, whichever is faster."""
    vals = [t[k]["chars_per_s"] for k in ("sample", "sample_mkldnn_off") if k in t]
    return max(vals) if vals else None


def ratios(ours: dict, theirs: dict) -> dict:
    """charlm / PyTorch for training and sampling throughput; RSS as charlm / PyTorch (lower is better)."""
    r = {}
    if "train" in ours and "train" in theirs:
        r["train"] = ours["train"]["chars_per_s"] / theirs["train"]["chars_per_s"]
    ts = torch_sample_chars_per_s(theirs)
    if "sample" in ours and ts:
        r["sample"] = ours["sample"]["chars_per_s"] / ts
    r["peak_rss"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    return {k: round(v, 3) for k, v in r.items()}


def median_result(results: list[dict]) -> dict:
    """One result from repeated runs: the run with the median training (else sampling) speed,
    with the throughput fields replaced by their medians over all runs."""
    if len(results) == 1:
        return results[0]
    key = "train" if "train" in results[0] else "sample"
    ranked = sorted(results, key=lambda r: r[key]["chars_per_s"])
    out = json.loads(json.dumps(ranked[len(ranked) // 2]))
    for part in ("train", "sample", "sample_mkldnn_off"):
        if part in out:
            out[part]["chars_per_s"] = statistics.median(r[part]["chars_per_s"] for r in results)
            out[part]["chars_per_s_repeats"] = [round(r[part]["chars_per_s"], 1) for r in results]
    out["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in results)
    return out


def blas_warning(blas: list[dict], isa: str = "native") -> str | None:
    """A warning when a BLAS library runs a kernel below what this CPU supports (e.g. OpenBLAS
    forced to "Haswell" by OPENBLAS_CORETYPE on an AVX-512 machine), else None. ``isa`` "avx2":
    the measurement was restricted to AVX2 (bench/isa.py), so an AVX2 kernel is the best."""
    flags = _cpu_flags()
    if isa == "avx2":
        flags.discard("avx512f")
    best = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    if best is None:
        return None
    avx512_kernels = {"skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5"}
    avx2_kernels = avx512_kernels | {"haswell", "zen", "zen2", "zen3", "excavator"}
    ok = avx512_kernels if best == "AVX-512" else avx2_kernels
    slow = sorted({str(d.get("architecture")) for d in blas
                   if d.get("internal_api") == "openblas" and str(d.get("architecture")).lower() not in ok})
    if not slow:
        return None
    forced = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(k)]
    hint = (f"; {' and '.join(forced)} {'is' if len(forced) == 1 else 'are'} set: run with "
            f"'env {' '.join('-u ' + k for k in forced)} charlm bench ...'") if forced else ""
    return (f"OpenBLAS runs its {'/'.join(slow)} kernel but this CPU supports {best}: GEMMs run "
            f"below their speed here{hint}")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


