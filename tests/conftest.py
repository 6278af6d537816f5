"""Suite-wide settings, applied before any test module imports Numba."""
import os

# Tests call the parallel kernels directly, outside charlm.runtime.thread_limits, so the first
# parallel region may start Numba's pool before charlm could choose its layer. Pin the layer
# charlm uses (workqueue: runtime.py says why) so every test file sees the same one, alone or in
# the whole suite. tests/test_runtime.py checks charlm's own choice in fresh processes without it.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
