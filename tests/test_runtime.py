"""Thread limits hold for the duration of a call and are undone after it; importing changes nothing."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from charlm import runtime
from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import build_corpus
from charlm.errors import ConfigError
from charlm.lm.train import StepEvent, Trainer

numba = pytest.importorskip("numba")


def blas_threads() -> int:
    """Threads of the BLAS pools (NumPy's, and SciPy's that the kernels call); -1 if they differ."""
    counts = {d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"}
    return counts.pop() if len(counts) == 1 else -1


@pytest.fixture
def two_threads():
    """Numba at 1 thread and every BLAS pool at 2 before the test (restored after it), so that a
    call which limits them (BLAS 1, Numba 2) and forgot to undo it would be seen."""
    runtime.kernel_threads()  # start Numba's pool and load SciPy's BLAS, as the kernels do
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    with threadpool_limits(limits=2, user_api="blas"):
        yield
    numba.set_num_threads(before)


def test_trainer_restores_blas_and_numba_threads(tmp_path, two_threads):
    path = tmp_path / "c.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    corpus = build_corpus([path], eos="none", val_fraction=0.0)
    trainer = Trainer(corpus, ModelConfig(cell="gru", embed=4, hidden=8, layers=1),
                      TrainConfig(steps=3, seq_len=8, batch_size=2, threads=2), tmp_path / "run")
    assert blas_threads() == 2 and numba.get_num_threads() == 1   # constructing changes nothing
    during = []
    for event in trainer.events():
        if isinstance(event, StepEvent):
            during.append((blas_threads(), numba.get_num_threads()))
    assert during == [(1, 2)] * 3                                         # limited while it runs
    assert blas_threads() == 2 and numba.get_num_threads() == 1   # and as before afterwards


def test_limits_nest_and_are_undone_on_error(two_threads):
    with runtime.thread_limits(2):
        assert blas_threads() == 2 and numba.get_num_threads() == 1   # applied at the first kernel
        assert runtime.kernel_threads() == 2
        assert blas_threads() == 1 and numba.get_num_threads() == 2
        with runtime.thread_limits():                                    # None: the enclosing count
            assert runtime.kernel_threads() == 2
        with pytest.raises(KeyError):
            with runtime.thread_limits(1):
                assert runtime.kernel_threads() == 1 and numba.get_num_threads() == 1
                raise KeyError("boom")
        assert numba.get_num_threads() == 2 and blas_threads() == 1
    assert blas_threads() == 2 and numba.get_num_threads() == 1
    assert runtime.kernel_threads() == 1                                  # outside: Numba's own count
    assert blas_threads() == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_thread_count_is_checked(bad):
    with pytest.raises(ConfigError, match="threads"):
        with runtime.thread_limits(bad):
            pass


def _fresh(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_THREADING_LAYER", "OMP_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_importing_charlm_changes_nothing_process_wide():
    got = _fresh(
        "import json, numpy, numba, scipy.linalg\n"
        "from numba.core import config\n"
        "from threadpoolctl import threadpool_info\n"
        "def blas(): return sorted(d['num_threads'] for d in threadpool_info() if d['user_api'] == 'blas')\n"
        "before = (config.THREADING_LAYER, blas())\n"
        "import charlm, charlm.kernels, charlm.lm.model, charlm.lm.train, charlm.lm.sample, charlm.lm.evaluate, charlm.runtime\n"
        "import charlm.kernels.parallel\n"
        "after = (config.THREADING_LAYER, blas())\n"
        "print(json.dumps({'before': before, 'after': after}))\n")
    assert got["before"] == got["after"] and got["after"][0] == "default"


def test_first_kernel_starts_numba_on_workqueue_and_leaves_the_config_alone():
    got = _fresh(
        "import json, numba\n"
        "from numba.core import config\n"
        "from charlm.runtime import kernel_threads\n"
        "kernel_threads()\n"
        "print(json.dumps({'layer': numba.threading_layer(), 'config': config.THREADING_LAYER}))\n")
    assert got == {"layer": "workqueue", "config": "default"}


@pytest.mark.parametrize("value", ["0", "-2", " 0 "])
def test_a_thread_count_numba_would_reject_is_refused_in_one_line(value, tmp_path, monkeypatch):
    from cli_helpers import invoke

    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    (tmp_path / "c.txt").write_text("hello world\n" * 50)
    result = invoke("train", tmp_path / "c.txt", "--steps", "1", "--run-dir", tmp_path / "r")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "NUMBA_NUM_THREADS" in lines[0] and "--threads" in lines[0]
    assert not (tmp_path / "r").exists()
    assert invoke("--help").exit_code == 0         # help stays available
