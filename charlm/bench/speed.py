"""Measure training and sampling speed, memory and start-up of one model configuration.

``measure(cfg)`` runs in the current process and returns a dict whose field names are those the
PyTorch baseline script prints too (``train.chars_per_s``, ``train.step_s_median``,
``sample.chars_per_s``, ``peak_rss_mb``, ``flops_per_char_fwd``, ``train.gflops_achieved``,
``train.fraction_of_peak``, ...) plus ``compile_s`` (first step minus a timed one: Numba compiling
or loading its cache), ``blas`` (the BLAS libraries and kernels in use), the sampling bound and
``compiled_for`` (the CPU Numba compiled for and the GEMM tile it chose, bench/isa.py).
Running it in a fresh interpreter (so that peak RSS belongs to one configuration only), beside the
same model in PyTorch (torch_side.py, or a script of the user's), and comparing the two is
compare.py's job; the sequence tasks' side is seq_speed.py.

What is measured, the same way on both sides:
- training: B*T characters per step over the median wall time of ``steps`` timed steps after
  ``warmup`` ones; a full step is forward, backward, global-norm clipping (5.0) and Adam, on B
  streams of random tokens with the state carried from step to step;
- sampling: batch 1, temperature 1, ``sample_chars`` characters per run (median of
  ``sample_reps`` runs after a warm-up run), through the same kernel call ``charlm sample`` uses
  after a sample's first NUMPY_TOKENS tokens (those come from the NumPy loop of
  kernels/generate_numpy.py, reported as ``sample.numpy_loop_chars_per_s``);
- FLOPs per character: forward 2*G*H*(I+H) per layer (I = the layer's input width) + 2*H*V for
  the decoder, training = 3x forward (the backward does two products per forward one: wrt the
  inputs and wrt the weights); the pointwise gate arithmetic and the softmax are not counted. The
  first layer's input width is ``embed``, which defaults to V: the same count as PyTorch's model
  with that embedding, or with a one-hot input. (charlm never does that GEMM: layer 0's input
  projection is a row of the folded table E @ W_ih0^T, gathered by token id. So charlm's
  "GFLOP/s achieved" counts work it skips; the chars/s are what to compare.)
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

from ..kernels.cells import CELLS, get_cell
from ..settings import setting
from .host import peak_rss_mb

# bench compares with PyTorch: the cells torch.nn has a module for
TORCH_CELLS = tuple(name for name, cell in CELLS.items() if cell.torch_module)
_CUSTOM = "custom configuration: "


@dataclass(frozen=True)
class BenchConfig:
    cell: str = setting("lstm", choices=TORCH_CELLS, help=_CUSTOM + "cell")
    layers: int = setting(1, minimum=1, help=_CUSTOM + "layers")                # L
    hidden: int = setting(128, minimum=1, help=_CUSTOM + "hidden size")         # H
    batch: int = setting(32, minimum=1, help=_CUSTOM + "streams per step")      # B
    seq_len: int = setting(64, minimum=1, help=_CUSTOM + "BPTT length")         # T
    vocab: int = setting(65, minimum=3, help=_CUSTOM + "vocabulary size")       # V
    embed: int = setting(0, minimum=0, help="embedding width (0 = vocab: PyTorch baseline's one-hot input width)")
    threads: int = setting(2, minimum=1, help="threads for both sides")  # charlm.runtime.thread_limits
    warmup: int = setting(3, minimum=0, help="untimed training steps")
    steps: int = setting(10, minimum=1, help="timed training steps")
    sample_chars: int = setting(2000, minimum=1, help="characters per sampling run")
    sample_reps: int = 3        # timed sampling runs (after one warm-up run)
    temperature: float = 1.0
    lr: float = 2e-3
    clip: float = 5.0
    seed: int = 1234
    train: bool = True
    sample: bool = True
    peak_gflops: float = 0.0    # what ``fraction_of_peak`` divides by; 0: the host's FMA limit (host.py)
    task: str = "lm"            # lm, or a sequence task (seq_speed.py): classify | tag
    labels: int = 8             # classes of a sequence task

    @property
    def embed_dim(self) -> int:
        return self.embed or self.vocab

    def label(self) -> str:
        if self.task != "lm":
            return (f"{self.task} bi-{self.cell} {self.layers}x{self.hidden} B{self.batch} T<={self.seq_len} "
                    f"V{self.vocab}")
        return f"{self.cell} {self.layers}x{self.hidden} B{self.batch} T{self.seq_len} V{self.vocab}"

    def configs(self):
        """The (ModelConfig, TrainConfig) this measures: what charlm train would build for it."""
        from ..config import ModelConfig, TrainConfig

        return (ModelConfig(cell=self.cell, vocab_size=self.vocab, embed=self.embed_dim, hidden=self.hidden,
                            layers=self.layers), TrainConfig(batch_size=self.batch, seq_len=self.seq_len))


# The five standard configurations (a-e) of the table in docs/performance.md.
STANDARD = {
    "a": BenchConfig("lstm", 1, 128, 32, 64),
    "b": BenchConfig("lstm", 2, 256, 64, 128),
    "c": BenchConfig("lstm", 2, 512, 64, 128),
    "d": BenchConfig("gru", 2, 512, 64, 128),
    "e": BenchConfig("rnn", 1, 512, 64, 128),
}

# The sequence tasks' standard configurations: a bidirectional one-layer classifier or tagger of
# each gated cell, batches of 64 sequences of 8 to 32 tokens (seq_speed.py).
STANDARD_SEQ = {f"{task}-{cell}": BenchConfig(cell, 1, 128, 64, 32, vocab=64, embed=64, task=task, sample=False)
                for task in ("classify", "tag") for cell in ("lstm", "gru")}

# Speed and memory targets, as ratios to PyTorch measured side by side (peak RSS: at most this fraction).
TARGETS = {name: {"train": 1.2 if name == "c" else 2.0, "sample": 5.0, "peak_rss": 0.5} for name in STANDARD} | {
    name: {"train": 2.0} for name in STANDARD_SEQ}
# Restricted to AVX2 (``--isa avx2``) the language models' training target is 1.6x: PyTorch loses less there.
TARGETS_AVX2 = {name: t | ({"train": min(t["train"], 1.6)} if name in STANDARD else {}) for name, t in TARGETS.items()}


def flops_per_char(cell: str, layers: int, hidden: int, vocab: int, in_dim: int) -> int:
    """Forward matmul FLOPs per character (module docstring), as the baseline counts them."""
    g = get_cell(cell).gates
    fwd = sum(2 * g * hidden * ((in_dim if l == 0 else hidden) + hidden) for l in range(layers))
    return fwd + 2 * hidden * vocab


def measure(cfg: BenchConfig) -> dict:
    """Benchmark ``cfg`` in this process (see the module docstring); one dict, JSON-ready. The
    thread limits hold for the measurement only (charlm.runtime.thread_limits)."""
    from ..runtime import thread_limits

    if not cfg.peak_gflops:
        from .host import fma_limit

        cfg = dataclasses.replace(cfg, peak_gflops=fma_limit(cfg.threads)["gflops"])
    if cfg.task != "lm":
        from .seq_speed import measure_seq

        res = measure_seq(cfg)
    else:
        with thread_limits(cfg.threads):
            res = _measure(cfg)
    from .isa import compiled_for

    return res | {"compiled_for": compiled_for()}


def _measure(cfg: BenchConfig) -> dict:
    t0 = time.perf_counter()
    import numpy as np

    from ..runtime import blas_info, kernel_threads

    threads = kernel_threads()  # applies the limits now: loads SciPy's BLAS and Numba
    import numba  # noqa: F401  (counted in import_s, as torch's import is in its process)

    import_s = time.perf_counter() - t0
    rss_import = peak_rss_mb()
    fwd = flops_per_char(cfg.cell, cfg.layers, cfg.hidden, cfg.vocab, cfg.embed_dim)
    res = {
        "bench": "charlm",
        "config": {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "batch": cfg.batch,
                   "seq": cfg.seq_len, "vocab": cfg.vocab, "input": "embedding (folded into layer 0)",
                   "embed_dim": cfg.embed_dim, "threads": threads, "warmup": cfg.warmup,
                   "steps": cfg.steps, "optimizer": "adam", "lr": cfg.lr, "clip": cfg.clip,
                   "seed": cfg.seed},
        "env": {"python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
                "threading_layer": None},
        "blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                 | {"library": os.path.basename(d.get("filepath") or "")} for d in blas_info()],
        "flops_per_char_fwd": fwd,
        "flops_per_char_train": 3 * fwd,
        "import_s": round(import_s, 3),
        "rss_mb_after_import": rss_import,
    }
    model = _build_model(cfg)
    res["params"] = int(model.size)
    if cfg.train:
        res["train"] = _train(cfg, model, fwd)
        res["compile_s"] = round(max(res["train"]["first_step_s"] - res["train"]["step_s_median"], 0.0), 3)
        res["peak_rss_mb_after_train"] = peak_rss_mb()
    if cfg.sample:
        res["sample"] = _sample(cfg, model, fwd)
    try:
        res["env"]["threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run
        pass
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def _build_model(cfg):
    import numpy as np

    from ..lm.model import Model

    return Model(cfg.configs()[0], np.float32).init_weights(np.random.default_rng(cfg.seed))


def _train(cfg, model, fwd) -> dict:
    import numpy as np

    from ..data.batches import StreamBatcher
    from ..optim import Adam, clip_grad_norm

    rng = np.random.default_rng(cfg.seed)
    n_steps = cfg.warmup + cfg.steps
    ids = rng.integers(0, cfg.vocab, cfg.batch * cfg.seq_len * n_steps + cfg.batch + 1).astype(np.int32)
    batcher = StreamBatcher(ids, cfg.batch, cfg.seq_len)
    opt = Adam(model.size, model.dtype)
    state = model.init_state(cfg.batch)
    times, losses, norm = [], [], 0.0
    for step in range(n_steps):
        x, y = batcher.next_batch()
        t0 = time.perf_counter()
        loss, state = model.loss_and_grad(x, y, state)
        norm = clip_grad_norm(model.grad_flat, cfg.clip)
        opt.step(model.flat, model.grad_flat, cfg.lr)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    timed = times[cfg.warmup:] or times
    med = statistics.median(timed)
    chars = cfg.batch * cfg.seq_len
    gflops = chars / med * 3 * fwd / 1e9
    return {"step_s_median": med, "step_s_min": min(timed), "step_s_max": max(timed),
            "chars_per_s": chars / med, "chars_per_step": chars, "first_step_s": times[0],
            "loss_first": losses[0], "loss_last": losses[-1], "grad_norm_last": float(norm),
            "gflops_achieved": round(gflops, 2),
            "fraction_of_peak": round(gflops / cfg.peak_gflops, 4) if cfg.peak_gflops else None,
            "chars_per_s_at_peak": round(cfg.peak_gflops * 1e9 / (3 * fwd), 1)}


def _sample(cfg, model, fwd) -> dict:
    """Batch-1 sampling through Sampler's kernel call, in STREAM_CHUNK pieces like ``charlm sample``
    (never stopping at <eos>: random weights would stop early)."""
    import numpy as np

    from ..data.tokenizer import Tokenizer
    from ..kernels.sampling_rule import no_controls
    from ..lm.sample import STREAM_CHUNK, Sampler

    tok = Tokenizer("char", ["<eos>", "<unk>"] + [chr(0x4E00 + i) for i in range(cfg.vocab - 2)])
    sampler = Sampler(model, tok)
    generate = sampler.compiled_loop().generate
    rng = np.random.default_rng(cfg.seed)
    c = model.config
    out = np.empty(STREAM_CHUNK, np.int64)
    controls = no_controls(len(tok))
    runs, first_s = [], 0.0
    for rep in range(cfg.sample_reps + 1):  # the first run is warm-up (and loads the kernel)
        n = cfg.sample_chars if rep else min(cfg.sample_chars, 200)
        uniforms = rng.random(n)
        state = np.zeros((c.layers, c.states, c.hidden), model.dtype)
        token, done = tok.eos_id, 0
        t0 = time.perf_counter()
        while done < n:
            k = min(STREAM_CHUNK, n - done)
            generate(state, token, uniforms[done:done + k], cfg.temperature, 0, 1.0, tok.eos_id, False, out[:k], 0,
                     controls)
            token = int(out[k - 1])
            done += k
        dt = time.perf_counter() - t0
        if rep:
            runs.append(n / dt)
        else:
            first_s = dt
    med = statistics.median(runs)
    bound = sample_bound(cfg.cell, cfg.layers, cfg.hidden, cfg.vocab, cfg.embed_dim)
    return {"chars_per_s": med, "chars_per_s_runs": [round(r, 1) for r in runs],
            "chars_per_run": cfg.sample_chars, "temperature": cfg.temperature, "first_run_s": first_s,
            "gflops_achieved": round(med * fwd / 1e9, 3), "bound_chars_per_s": round(bound, 1),
            "fraction_of_bound": round(med / bound, 3),
            "numpy_loop_chars_per_s": round(_numpy_loop_rate(cfg, sampler, tok), 1)}


def _numpy_loop_rate(cfg, sampler, tok) -> float:
    """Characters/s of the NumPy loop that serves the first NUMPY_TOKENS tokens of every sample
    (kernels/generate_numpy.py): one run of that many tokens after a short warm-up."""
    import numpy as np

    from ..kernels import generate_numpy
    from ..kernels.sampling_rule import no_controls

    c = sampler.model.config
    n = generate_numpy.NUMPY_TOKENS
    uniforms = np.random.default_rng(cfg.seed).random(n)
    out = np.empty(n, np.int64)
    state = np.zeros((c.layers, c.states, c.hidden), sampler.model.dtype)
    controls = no_controls(len(tok))
    generate_numpy.generate(*sampler._weights(), state, tok.eos_id, uniforms[:8], cfg.temperature, 0, 1.0,
                            tok.eos_id, False, out[:8], 0, controls)
    t0 = time.perf_counter()
    generate_numpy.generate(*sampler._weights(), state, tok.eos_id, uniforms, cfg.temperature, 0, 1.0,
                            tok.eos_id, False, out, 0, controls)
    return n / (time.perf_counter() - t0)


def sample_bound(cell, layers, hidden, vocab, in_dim, steps=2000, reps=5) -> float:
    """Characters/s if a sampling step were only its matrix-vector products: per layer one GEMV
    with the stacked [W_ih | W_hh] (G*H, I+H), then the decoder (V, H), by NumPy's BLAS on one
    batch-1 step (same shapes as the model, first-layer input width in_dim)."""
    import numpy as np

    g = get_cell(cell).gates
    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((g * hidden, (in_dim if l == 0 else hidden) + hidden), dtype=np.float32)
          for l in range(layers)]
    D = rng.standard_normal((vocab, hidden), dtype=np.float32)
    xs = [rng.standard_normal(W.shape[1], dtype=np.float32) for W in Ws]
    outs = [np.empty(W.shape[0], np.float32) for W in Ws]
    h, dout = xs[-1][-hidden:].copy(), np.empty(vocab, np.float32)

    def step():
        for W, x, o in zip(Ws, xs, outs):
            np.dot(W, x, out=o)
        np.dot(D, h, out=dout)

    for _ in range(200):
        step()
    per = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        per.append((time.perf_counter() - t0) / steps)
    return 1.0 / statistics.median(per)


if __name__ == "__main__":  # python -m charlm.bench.speed '{"cell": "lstm", ...}': one JSON line
    cfg = BenchConfig(**json.loads(sys.argv[1])) if len(sys.argv) > 1 else BenchConfig()
    print(json.dumps(measure(cfg)), flush=True)
