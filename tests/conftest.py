"""Suite-wide settings, applied before any test module imports Numba."""
import os

# Tests call the parallel kernels directly, outside charlm.runtime.thread_limits, so the first
# parallel region may start Numba's pool before charlm could choose its layer. Pin the layer
# charlm uses (workqueue: runtime.py says why) so every test file sees the same one, alone or in
# the whole suite. tests/test_runtime.py checks charlm's own choice in fresh processes without it.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Runs, caches and crash logs go to tmp_path; the working directory is tmp_path. Command-line
    test files use it for every test (``pytestmark = pytest.mark.usefixtures("isolated")``)."""
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
