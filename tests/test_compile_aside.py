"""The helper process that compiles a training step's backward kernels into Numba's cache
(kernels/compile_aside.py): the run compiles none of them itself, its results are the same bit for
bit, a helper that fails costs nothing but time, and no helper outlives its run."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charlm.kernels import CELLS
from charlm.kernels.compile_aside import _job, step_jobs

# A small GRU's warm-up (a training step's loss and gradients, then the evaluation's NLL) in a fresh
# process on the given Numba cache, the helper started as LmTask.warm_up starts it; prints one JSON
# line: the results' bytes (hex), the kernels this process compiled, the helper's pid.
_RUN = """
import hashlib, json, os, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from compiled_names import compiled_names
from charlm.config import ModelConfig
from charlm.kernels import compile_aside
from charlm.lm.model import Model

mode = sys.argv[1]
if mode == "fail":   # a helper that dies at once
    compile_aside._COMMAND = [sys.executable, "-c", "import sys; sys.exit(3)"]
model = Model(ModelConfig(cell=sys.argv[2], vocab_size=11, embed=5, hidden=8, layers=2), np.float32)
model.init_weights(np.random.default_rng(0))
helper = compile_aside.start(compile_aside.step_jobs(model.cell, model.dtype))
pid = helper.process.pid if helper else None
if mode == "orphan":   # the helper is told; then this process is killed by the test
    print(json.dumps({"helper": pid}), flush=True)
    time.sleep(600)
rng = np.random.default_rng(1)
x, y = rng.integers(0, 11, (6, 4)), rng.integers(0, 11, (6, 4))
with compiled_names() as compiled:
    loss, state = model.loss_and_grad(x, y, model.init_state(4))
    nll, _ = model.token_nll(x, y, model.init_state(4))
digest = hashlib.sha256(np.float64(loss).tobytes() + state.tobytes() + model.grad_flat.tobytes() + nll.tobytes())
print(json.dumps({"digest": digest.hexdigest(), "compiled": compiled, "helper": pid}))
"""

_ASIDE = {f"charlm.kernels.parallel.{name}" for name in ("_tn_block", "_add_partials", "_rows_block", "_sum_block")}
_ASIDE.add("charlm.kernels.layer._backward_block_rnn")


def _fresh(cache_dir, mode, cell="rnn", **popen):
    """The warm-up in a fresh process on Numba cache ``cache_dir`` (None: the usual one, warm)."""
    env = dict(os.environ) if cache_dir is None else dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env.pop("CHARLM_COMPILE_ASIDE", None)
    if mode == "off":
        env["CHARLM_COMPILE_ASIDE"] = "0"
    return subprocess.Popen([sys.executable, "-c", _RUN, mode, cell, os.path.dirname(__file__)], stdout=subprocess.PIPE, text=True, env=env,
                            **popen)


def _result(process):
    out, _ = process.communicate()
    assert process.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def _gone(pid) -> bool:
    """The process has ended (and is not a zombie of ours: it is never our child here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_job_names_the_kernel_and_types_of_the_call(cell):
    jobs = step_jobs(CELLS[cell], np.float32)
    assert [j[0] for j in jobs] == ["parallel"] * 3 + ["layer_backward", "parallel"]
    for spec in jobs:
        kernel, sig = _job(spec)
        assert len(sig) == kernel.py_func.__code__.co_argcount
    for spec in (["loss", "float32", "_grad_block"], ["loss", "float64", "_rows_block"]):  # jobs a run may give
        kernel, sig = _job(spec)
        assert len(sig) == kernel.py_func.__code__.co_argcount
    assert "layer_backward" not in [j[0] for j in step_jobs(CELLS["jordan"], np.float32)]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The warm-up on an empty cache with a helper that dies at once: everything compiled in the
    run's process, as without a helper (one cold compilation serves both tests: it is the suite's
    costliest fixture)."""
    return _result(_fresh(tmp_path_factory.mktemp("alone"), "fail"))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_run_loads_what_the_helper_compiled_with_the_same_results_and_the_helper_is_gone(tmp_path, alone):
    with_helper = _result(_fresh(tmp_path / "a", "on"))
    assert with_helper["helper"] is not None
    assert not _ASIDE & set(with_helper["compiled"])   # all loaded from the helper's cache entries
    assert _ASIDE <= set(alone["compiled"])
    assert with_helper["digest"] == alone["digest"]    # bit for bit
    assert _gone(with_helper["helper"])
    again = _result(_fresh(tmp_path / "a", "on"))      # a warm cache: no helper, nothing compiled
    assert again["helper"] is None and not again["compiled"]
    assert again["digest"] == alone["digest"]


def test_a_helper_that_fails_costs_only_time(alone):
    assert alone["helper"] is not None            # it was started, died at once ...
    assert _ASIDE <= set(alone["compiled"])       # ... and its kernels were compiled here instead,
    off = _result(_fresh(None, "off"))
    assert off["helper"] is None and off["digest"] == alone["digest"]   # as without a helper, bit for bit


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_helper_stops_when_its_run_is_killed(tmp_path):
    run = _fresh(tmp_path, "orphan")
    pid = json.loads(run.stdout.readline())["helper"]
    assert pid is not None and not _gone(pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    for _ in range(300):   # it looks for its parent every 0.2 s
        if _gone(pid):
            break
        time.sleep(0.1)
    assert _gone(pid)


# A run waiting for a helper that never answers; SIGTERM ends it (its handler raises, as the CLI's does).
_WAITING = """
import signal, sys
from charlm.kernels import CELLS, compile_aside
def stop(signum, frame):
    raise SystemExit(3)
signal.signal(signal.SIGTERM, stop)
compile_aside._COMMAND = [sys.executable, "-c", "import time; time.sleep(600)"]
helper = compile_aside.start(compile_aside.step_jobs(CELLS["gru"], "float32"))
print(helper.process.pid, flush=True)
helper.wait(0)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_run_waiting_for_its_helper_still_stops_on_a_signal_and_ends_the_helper(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("CHARLM_COMPILE_ASIDE", None)
    run = subprocess.Popen([sys.executable, "-c", _WAITING], stdout=subprocess.PIPE, text=True, env=env)
    pid = int(run.stdout.readline())
    run.send_signal(signal.SIGTERM)   # whichever thread receives it, the waiting one handles it
    assert run.wait(timeout=120) == 3
    assert _gone(pid)                 # ended and reaped on the way out
