"""Compiling the kernels a run will call before it calls them: on every core at once, in worker processes.

Numba compiles a kernel the first time it is called with new argument types, one after another
under one global lock, so on an empty cache (a fresh install, a new Numba, another CPU) a run's
first step waits for every kernel's compilation on one core. ``precompile(recipe, ...)`` first
finds the (kernel, signature) pairs the recipe will call, without running anything compiled: it
runs the recipe's Python with every charlm kernel replaced by a stub that records its argument
types (Numba's own ``typeof``) and returns 0.0. The pairs neither compiled in this process nor in
the on-disk cache are then compiled by ``workers`` processes side by side, the most expensive
first, each to the least loaded worker; each writes Numba's cache, and the caller, running the
recipe for real, loads what they wrote. Compiling in other processes also keeps the compiler's
memory out of the caller's peak RSS. A recipe cut short under stubs (its Python used a kernel's
result) still precompiles what it recorded; the real run compiles anything left, as before.
With a warm cache the dry run costs milliseconds and no worker starts.

Recipes are named (``RECIPES``) so that a worker can rebuild the same list of pairs: each builds
tiny models of the run's cell and dtype and takes the code paths of the real run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

# Compile costs relative to each other (CPU seconds of a first run, callees included), for
# balancing the workers; any other kernel counts 0.5.
COSTS = {"layer_backward": 21.0, "layer_forward": 20.0, "cross_entropy_grad_par": 5.0, "matmul_tn": 1.8,
         "cross_entropy_rows_par": 1.4, "matmul_rows_bias": 1.4, "matmul_rows": 0.9, "sum_blocks": 0.7}


def lm_recipe(cell: str, dtype: str) -> None:
    """What a language model's training run calls first: a step and an evaluation, with the
    embeddings gathered (V > T*B) and through the folded table (V <= T*B), and the fused Adam and
    clipping passes of a model past optim._FUSED_MIN parameters."""
    from ..config import ModelConfig
    from ..lm.model import Model
    from ..optim import _FUSED_MIN, Adam, clip_grad_norm

    rng = np.random.default_rng(0)
    model = Model(ModelConfig(cell=cell, vocab_size=8, embed=4, hidden=4, layers=2), np.dtype(dtype))
    model.init_weights(rng)
    for T, B in ((2, 2), (4, 4)):
        x = np.zeros((T, B), np.int64)
        model.loss_and_grad(x, x, model.init_state(B), rng)
        model.token_nll(x, x, model.init_state(B))
    flat = np.zeros(_FUSED_MIN, np.dtype(dtype))
    clip_grad_norm(flat, 1.0)
    Adam(_FUSED_MIN, np.dtype(dtype)).step(flat, flat.copy(), 1e-3)


RECIPES = {"lm": lm_recipe}


def plan(recipe: str, *args) -> list:
    """The (dispatcher, signature) pairs ``RECIPES[recipe](*args)`` calls, in first-call order,
    found by running it under stubs (module docstring)."""
    import importlib
    import pkgutil

    from numba.core.dispatcher import Dispatcher

    for info in pkgutil.iter_modules(sys.modules[__package__].__path__):
        importlib.import_module(f"{__package__}.{info.name}")  # every kernel module, so that every kernel is stubbed
    pairs, seen, stubs, patched = [], set(), {}, []

    def stub_for(disp):
        def stub(*a, **kw):
            sig = tuple(disp.typeof_pyval(v) for v in a)
            if not kw and (id(disp), sig) not in seen:
                seen.add((id(disp), sig))
                pairs.append((disp, sig))
            return 0.0
        return stub

    for name, module in list(sys.modules.items()):
        if name == "charlm" or name.startswith("charlm."):
            for attr, value in list(vars(module).items()):
                if isinstance(value, Dispatcher):
                    stub = stubs.setdefault(id(value), stub_for(value))
                    patched.append((module, attr, value))
                    setattr(module, attr, stub)
    try:
        with np.errstate(all="ignore"):
            RECIPES[recipe](*args)
    except Exception:  # noqa: BLE001  (a recipe cut short under stubs: keep what it recorded)
        pass
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)
    return pairs


def missing(pairs) -> list[int]:
    """Indices of the pairs neither compiled in this process nor in Numba's on-disk cache."""
    out = []
    for i, (disp, sig) in enumerate(pairs):
        if sig in disp.overloads:
            continue
        try:
            cache = disp._cache
            if type(cache).__name__ == "NullCache":  # not cached on disk: a worker's work would be lost
                continue
            key = cache._index_key(sig, disp.targetctx.codegen())
            if key in cache._cache_file._load_index():
                continue
        except Exception:  # noqa: BLE001  (Numba's internals moved: leave compiling to the run)
            continue
        out.append(i)
    return out


def cost(disp) -> float:
    return COSTS.get(getattr(disp.py_func, "__name__", ""), 0.5)


def shares(costs: list[float], workers: int) -> list[list[int]]:
    """Indices of ``costs`` split into ``workers`` lists: the largest first, each to the least
    loaded list (the longest-processing-time rule); empty lists dropped."""
    loads, out = [0.0] * workers, [[] for _ in range(workers)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = loads.index(min(loads))
        loads[w] += costs[i]
        out[w].append(i)
    return [s for s in out if s]


def precompile(recipe: str, *args, workers: int | None = None) -> int:
    """Compile what ``recipe`` will call and the cache lacks, in worker processes side by side
    (``workers``: the CPUs this process may use); returns how many pairs they compiled. Nothing
    missing, or one CPU: returns 0 at once, and the run compiles as it always did."""
    workers = workers or len(os.sched_getaffinity(0))
    pairs = plan(recipe, *args)
    todo = missing(pairs)
    if not todo or workers < 2:
        return 0
    parts = shares([cost(pairs[i][0]) for i in todo], workers)
    procs = [subprocess.Popen([sys.executable, "-m", "charlm.kernels.warm",
                               json.dumps({"recipe": recipe, "args": list(args), "compile": [todo[j] for j in part]})],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for part in parts]
    for proc in procs:
        proc.wait()
    return len(todo)


def _worker(spec: dict) -> None:
    """In a worker: rebuild the plan and compile its share (Numba writes each to its cache)."""
    from ..runtime import kernel_threads

    kernel_threads()  # the threading layer a run would choose, before any parallel kernel compiles
    pairs = plan(spec["recipe"], *spec["args"])
    for i in spec["compile"]:
        if i < len(pairs):
            disp, sig = pairs[i]
            disp.compile(sig)


if __name__ == "__main__":  # python -m charlm.kernels.warm '{"recipe": ..., "args": [...], "compile": [...]}'
    _worker(json.loads(sys.argv[1]))
