"""What ``charlm info`` shows of a language-model run, as plain JSON-able data."""
from __future__ import annotations

import math
from pathlib import Path

from ..config import to_dict
from ..errors import CharlmError
from ..runs.header import json_or_none
from ..runs.metrics import METRICS_FILE, read_metrics_checked
from . import checkpoint as ckpt


def describe_run(path) -> dict:
    """Everything ``charlm info`` shows, as plain JSON-able data. ``problems``: damaged lines of
    the metrics log, which are skipped (the checkpoint is what matters)."""
    from .model import parameter_shapes

    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    loaded = ckpt.load_checkpoint(path)
    meta, tok = loaded.metadata, loaded.tokenizer
    params = sum(math.prod(shape) for _, shape in parameter_shapes(loaded.config))
    metrics, problems = read_metrics_checked(run_dir)
    evals = [r for r in metrics if r.get("kind") == "eval" and _finite(r.get("val_loss"))]
    steps = [r for r in metrics if r.get("kind") == "step" and _finite(r.get("loss"))]
    best = min(evals, key=lambda r: r["val_loss"], default=None)
    files = [{"name": p.name, "bytes": p.stat().st_size}
             for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    tcfg = meta.get("train_config") or {}
    return {
        "run": str(run_dir), "checkpoint": str(loaded.path),
        "model_config": to_dict(loaded.config), "train_config": tcfg,
        "parameters": params, "step": _steps_trained(run_dir, meta, metrics),
        "sources": meta.get("sources", []),
        "init_from": meta.get("init_from"),   # a fine-tuned run's starting model (lm/finetune.py)
        "labels": meta.get("labels", []),   # a labelled model's label vocabulary (lm/labels.py)
        "validation": bool(tcfg.get("val_file") or tcfg.get("val_fraction", 0.1)),
        "vocab": {"level": tok.level, "split": tok.split, "size": len(tok), "eos": meta.get("eos"),
                  "specials": tok.tokens[:2], "first_tokens": tok.tokens[2:42]},
        "best": None if best is None else {k: best.get(k) for k in ("step", "val_loss", "val_bpc", "val_ppl")},
        "elapsed": (evals or steps or [{}])[-1].get("elapsed"),
        "time_split": _time_split(evals),
        "history": {"eval": evals, "step": [{"step": step, "loss": loss} for step, loss in
                                            bucket_means([(r["step"], r["loss"]) for r in steps], 400)]},
        "files": files,
        "problems": [p.describe(run_dir / METRICS_FILE) for p in problems],
    }


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _steps_trained(run_dir: Path, meta: dict, metrics: list) -> int | None:
    """Steps trained: the latest checkpoint's step (model.safetensors holds the best step,
    which is earlier when the model stopped improving), else the latest logged step."""
    steps = [meta.get("step")] if isinstance(meta.get("step"), int) else []
    try:
        header, _ = ckpt.read_header(run_dir / ckpt.LAST_FILE)
        last = json_or_none(header["__metadata__"]["charlm.step"])
        if isinstance(last, int) and not isinstance(last, bool):
            steps.append(last)
    except (CharlmError, KeyError, TypeError, OSError):
        pass
    steps += [r["step"] for r in metrics[-1:]]
    return max(steps, default=None)


def _time_split(evals: list) -> dict | None:
    """Seconds of training, evaluation, checkpoints and kernel loading at the last evaluation
    that recorded them (None for a run from before they were recorded)."""
    keys = ("train_s", "eval_s", "checkpoint_s", "compile_s")
    for record in reversed(evals):
        if all(_finite(record.get(k)) for k in keys) and _finite(record.get("elapsed")):
            return {k: record[k] for k in keys} | {"elapsed": record["elapsed"]}
    return None


def bucket_means(points: list, n: int) -> list:
    """(step, value) points averaged over at most ``n`` consecutive buckets, each labelled with
    its last step: a readable learning curve instead of per-step noise."""
    size = max(1, math.ceil(len(points) / n))
    out = []
    for i in range(0, len(points), size):
        part = points[i:i + size]
        out.append((part[-1][0], sum(v for _, v in part) / len(part)))
    return out
