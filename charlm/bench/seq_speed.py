"""Training speed of a bidirectional sequence classifier or tagger (``charlm bench --task classify|tag``).

Batches: ``batch`` sequences per step, lengths drawn uniformly from [max(1, T // 4), T] (T =
``seq_len``), token ids uniformly from the vocabulary, labels uniformly from ``labels`` classes
(one per sequence, or one per token when tagging), all from ``seed``: ``seq_batches`` is NumPy
only, so PyTorch's twin (torch_side.py) trains on the very same batches. A step is the task's
own (seqtask/task.py): forward, loss, backward, global-norm clipping (5.0) and Adam; dropout off on
both sides. Throughput counts a batch's tokens (the sum of its lengths, padding excluded) over its
step's time: the median over the timed steps.

FLOPs per token (``seq_flops_per_token``): per layer and direction 2*G*H*(I+H), I = E for the first
layer and 2H above it (both directions' outputs); a tagger's head 2*(2H)*C per token (a
classifier's, once per sequence, is left out); training 3x forward, as for the language model.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..kernels.cells import get_cell

SEQ_TASKS = ("classify", "tag")


def seq_batches(cfg, n: int):
    """``n`` batches (ids (T, B) int64 right-padded with 0, lengths (B,), labels (B,) or (T, B))."""
    rng = np.random.default_rng(cfg.seed)
    lo = max(1, cfg.seq_len // 4)
    for _ in range(n):
        lengths = rng.integers(lo, cfg.seq_len + 1, cfg.batch).astype(np.int64)
        T = int(lengths.max())
        valid = np.arange(T)[:, None] < lengths[None, :]
        ids = np.where(valid, rng.integers(0, cfg.vocab, (T, cfg.batch)), 0).astype(np.int64)
        shape = cfg.batch if cfg.task == "classify" else (T, cfg.batch)
        labels = rng.integers(0, cfg.labels, shape).astype(np.int64)
        yield ids, lengths, (labels if cfg.task == "classify" else np.where(valid, labels, 0))


def seq_flops_per_token(cfg) -> int:
    """Forward FLOPs per token of the bidirectional model (module docstring)."""
    g, H, D = get_cell(cfg.cell).gates, cfg.hidden, 2
    fwd = sum(D * 2 * g * H * ((cfg.embed_dim if k == 0 else D * H) + H) for k in range(cfg.layers))
    return fwd + (2 * D * H * cfg.labels if cfg.task == "tag" else 0)


def timed_steps(cfg, step) -> dict:
    """Run ``step(batch) -> loss`` on ``cfg.warmup + cfg.steps`` batches; the training fields both
    sides report (median tokens/s of the timed steps)."""
    rates, losses, first = [], [], 0.0
    for k, batch in enumerate(seq_batches(cfg, cfg.warmup + cfg.steps)):
        t0 = time.perf_counter()
        losses.append(float(step(batch)))
        dt = time.perf_counter() - t0
        if k == 0:
            first = dt
        if k >= cfg.warmup:
            rates.append(int(batch[1].sum()) / dt)
    med = statistics.median(rates)
    gflops = med * 3 * seq_flops_per_token(cfg) / 1e9
    return {"chars_per_s": med, "chars_per_s_steps": [round(r, 1) for r in rates], "first_step_s": first,
            "loss_first": losses[0], "loss_last": losses[-1], "gflops_achieved": round(gflops, 2),
            "fraction_of_peak": round(gflops / cfg.peak_gflops, 4) if cfg.peak_gflops else None}


def model_config(cfg):
    """The SeqModelConfig charlm trains for ``cfg``: bidirectional, final-state pooling, no dropout."""
    from ..seqtask.config import SeqModelConfig

    return SeqModelConfig(task=cfg.task, cell=cfg.cell, vocab_size=cfg.vocab, num_labels=cfg.labels,
                          embed=cfg.embed_dim, hidden=cfg.hidden, layers=cfg.layers, bidirectional=True,
                          dropout=0.0, pooling="final")


def measure_seq(cfg) -> dict:
    """charlm's side of ``--task classify|tag`` in this process: one JSON-ready dict."""
    from ..seqtask.ensemble import build_model
    from ..seqtask.model import kernel_scope
    from ..seqtask.sparse_adam import LazyAdam
    from ..seqtask.sparse_grad import clip_norm
    from .host import peak_rss_mb

    model = build_model(model_config(cfg), np.float32).init_weights(np.random.default_rng(cfg.seed))
    opt = LazyAdam(model.layout, model.size, model.dtype)
    rng = np.random.default_rng(cfg.seed + 1)

    def step(batch):
        loss = model.loss_and_grad(*batch, rng)
        clip_norm(model.grad_flat, model.layout, model.touched, cfg.clip)
        opt.step(model.flat, model.grad_flat, cfg.lr, model.touched)
        return loss

    with kernel_scope(cfg.threads):
        train = timed_steps(cfg, step)
    return {"bench": "charlm", "task": cfg.task, "config": seq_config_record(cfg), "params": int(model.size),
            "flops_per_char_fwd": seq_flops_per_token(cfg), "train": train, "peak_rss_mb": peak_rss_mb()}


def seq_config_record(cfg) -> dict:
    return {"task": cfg.task, "cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "directions": 2,
            "embed_dim": cfg.embed_dim, "batch": cfg.batch, "max_len": cfg.seq_len,
            "min_len": max(1, cfg.seq_len // 4), "vocab": cfg.vocab, "labels": cfg.labels, "threads": cfg.threads,
            "warmup": cfg.warmup, "steps": cfg.steps, "seed": cfg.seed}
