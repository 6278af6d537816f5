"""Where one training step of the language model spends its CPU time, phase by phase.

Usage (from the repository, with charlm importable):
    python tools/profile_step.py -c b --threads 1 --threads 2 [--isa avx2] [--steps 5] [--json]

For each configuration of ``charlm bench`` (``-c a`` ... ``-c e``) and thread count, it builds the
bench's model and runs bench's training step (forward, loss, backward, clipping, Adam) with:
- the layer kernels' phase marks bound to the thread CPU clock (kernels/phase_clock.py), which
  splits each layer call into the recurrent products, input projections, weight-gradient GEMMs,
  input gradients and the cells' pointwise passes;
- the process CPU time of every other kernel call of the step (decoder, loss, the per-thread
  partial sums, clipping, Adam) read around the call; what none of them covers is Python and
  NumPy glue (the folded table, bias sums, copies).
The figures are shares of the step's process CPU time, summed over the timed steps: they hold
on a loaded machine. "idle" is the share of wall time x threads not spent on the CPU (threads
waiting for one another at the end of a kernel): meaningful only when nothing else runs.
``--isa avx2`` runs the profile in a child restricted to AVX2 + FMA, as ``charlm bench --isa
avx2`` does (bench/isa.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict


def profile(name: str, threads: int, steps: int, warmup: int) -> dict:
    """{phase: CPU seconds over the timed steps} plus "step cpu", "step wall" and "threads"."""
    import numpy as np

    from charlm.bench.speed import STANDARD
    from charlm.data.batches import StreamBatcher
    from charlm.kernels import layer, loss, parallel, phase_clock
    from charlm.lm.model import Model
    from charlm.optim import Adam, clip_grad_norm
    from charlm.runtime import kernel_threads, thread_limits

    cfg = STANDARD[name]
    totals: dict[str, float] = defaultdict(float)
    on = [False]

    def timed(label, fn):
        def wrapper(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if on[0]:
                    totals[label] += time.process_time() - t0
        return wrapper

    buf = np.zeros((64, len(phase_clock.PHASES)), np.int64)
    model_cfg, _ = cfg.configs()
    cell_id = model_cfg.row.id
    kernels = layer.profiled_kernels(cell_id, phase_clock.clocked_mark(buf))
    cached = layer._kernels
    layer._kernels = lambda cid: kernels if cid == cell_id else cached(cid)
    layer.layer_forward = timed("layer forward call", layer.layer_forward)
    layer.layer_backward = timed("layer backward call", layer.layer_backward)
    parallel.matmul_rows_bias = timed("decoder forward", parallel.matmul_rows_bias)
    parallel.matmul_tn = timed("decoder weight gradient", parallel.matmul_tn)
    parallel.matmul_rows = timed("decoder input gradient", parallel.matmul_rows)
    parallel.sum_blocks = timed("partial sums of weight gradients", parallel.sum_blocks)
    loss.cross_entropy_grad_par = timed("softmax + loss + gradient", loss.cross_entropy_grad_par)
    clip = timed("clipping", clip_grad_norm)

    with thread_limits(threads):
        nc = kernel_threads()
        model = Model(model_cfg, np.float32).init_weights(np.random.default_rng(cfg.seed))
        rng = np.random.default_rng(cfg.seed)
        n = warmup + steps
        ids = rng.integers(0, cfg.vocab, cfg.batch * cfg.seq_len * n + cfg.batch + 1).astype(np.int32)
        batcher = StreamBatcher(ids, cfg.batch, cfg.seq_len)
        opt = Adam(model.size, model.dtype)
        opt_step = timed("Adam", opt.step)
        state = model.init_state(cfg.batch)
        for step in range(n):
            x, y = batcher.next_batch()
            if step == warmup:
                buf[...] = 0
                totals.clear()
                on[0] = True
            w0, c0 = time.perf_counter(), time.process_time()
            _, state = model.loss_and_grad(x, y, state)
            clip(model.grad_flat, cfg.clip)
            opt_step(model.flat, model.grad_flat, cfg.lr)
            if on[0]:
                totals["step cpu"] += time.process_time() - c0
                totals["step wall"] += time.perf_counter() - w0
    blocks = buf.sum(axis=0) / 1e9
    for label, secs in zip(phase_clock.PHASES, blocks):
        totals[label] = float(secs)
    fwd_blocks = float(blocks[:phase_clock.BWD_CELL].sum())
    totals["fwd packing + launch"] = totals.pop("layer forward call", 0.0) - fwd_blocks
    totals["bwd packing + launch"] = totals.pop("layer backward call", 0.0) - float(blocks.sum()) + fwd_blocks
    totals["threads"] = nc
    return dict(totals)


_ORDER = ("fwd recurrent product", "bwd recurrent product", "fwd input projection", "bwd input gradient",
          "bwd weight-gradient GEMMs", "partial sums of weight gradients", "fwd pointwise", "bwd pointwise",
          "fwd block other", "bwd block other", "fwd packing + launch", "bwd packing + launch", "decoder forward",
          "softmax + loss + gradient", "decoder weight gradient", "decoder input gradient", "clipping", "Adam")


def shares(t: dict) -> list[tuple[str, float]]:
    """(phase, share of the step's CPU time) in a fixed order, then glue and idle."""
    cpu = t["step cpu"]
    rows = [(label, t.get(label, 0.0) / cpu) for label in _ORDER]
    rows.append(("Python + NumPy glue", 1.0 - sum(s for _, s in rows)))
    rows.append(("idle (of wall x threads; quiet only)", max(0.0, 1.0 - cpu / (t["step wall"] * t["threads"]))))
    return rows


def phase_flops(name: str) -> dict[str, float]:
    """FLOPs per step of the phases that are products (layer 0's input projection is a gather from
    the folded table, so it has none; its weight gradient comes from the table's, in the glue)."""
    from charlm.bench.speed import STANDARD
    from charlm.kernels.cells import get_cell

    cfg = STANDARD[name]
    N, H, L, V = cfg.batch * cfg.seq_len, cfg.hidden, cfg.layers, cfg.vocab
    one = 2 * N * H * get_cell(cfg.cell).gates * H  # one (N, H) x (H, G) product
    return {"fwd recurrent product": L * one, "bwd recurrent product": L * one,
            "fwd input projection": (L - 1) * one, "bwd input gradient": (L - 1) * one,
            "bwd weight-gradient GEMMs": (2 * L - 1) * one, "decoder forward": 2 * N * H * V,
            "decoder weight gradient": 2 * N * H * V, "decoder input gradient": 2 * N * H * V}


def _child(args, name, threads) -> dict:
    """The profile in a fresh process (its own Numba thread count; restricted to AVX2 if asked)."""
    env = dict(os.environ)
    if args.isa == "avx2":
        from charlm.bench.isa import child_env

        env = child_env("avx2", "charlm")
    cmd = [sys.executable, __file__, "--child", name, str(threads), str(args.steps), str(args.warmup)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", dest="configs", action="append", help="bench configuration a..e (repeatable; default b)")
    p.add_argument("--threads", type=int, action="append", help="thread count (repeatable; default 1 and 2)")
    p.add_argument("--isa", choices=("native", "avx2"), default="native")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", action="store_true", help="one JSON line per run instead of the table")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        name, threads, steps, warmup = args.child
        print(json.dumps(profile(name, int(threads), int(steps), int(warmup))))
        return
    runs = [(name, threads, _child(args, name, threads))
            for name in args.configs or ["b"] for threads in args.threads or [1, 2]]
    if args.json:
        for name, threads, t in runs:
            print(json.dumps({"config": name, "isa": args.isa, "threads": threads, "seconds": t}))
        return
    heads = [f"{name} {args.isa} {threads}t" for name, threads, _ in runs]
    table = [shares(t) for _, _, t in runs]
    print("| phase (share of step CPU time) | " + " | ".join(heads) + " |")
    print("| --- |" + " ---: |" * len(runs))
    for i, (label, _) in enumerate(table[0]):
        print(f"| {label} | " + " | ".join(f"{col[i][1] * 100:.1f} %" for col in table) + " |")
    for label in phase_flops(runs[0][0]):
        print(f"| {label}: GFLOP per CPU-second | " + " | ".join(
            f"{phase_flops(name)[label] * args.steps / t[label] / 1e9:.0f}" if t.get(label) else "-"
            for name, _, t in runs) + " |")
    print("| step CPU s (wall s) | " + " | ".join(
        f"{t['step cpu'] / args.steps:.3f} ({t['step wall'] / args.steps:.3f})" for _, _, t in runs) + " |")


if __name__ == "__main__":
    main()
