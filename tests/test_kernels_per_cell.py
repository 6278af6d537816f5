"""The layer kernels built per cell (kernels/per_cell.py): each cell's copy calls its own step only, a
run compiles no other cell's code, and a second process finds every copy in Numba's cache."""
import json
import os
import subprocess
import sys

import pytest

from charlm.kernels import CELLS
from charlm.kernels.layer import _kernels, layer_forward
from charlm.kernels.per_cell import per_layer_cell

PER_LAYER = [c for c in CELLS.values() if not c.feeds_output]


@pytest.mark.parametrize("cell", PER_LAYER, ids=lambda c: c.name)
def test_each_cells_copy_is_bound_to_its_own_step_and_named_after_it(cell):
    built = _kernels(cell.id)
    assert set(built) == {"_forward_block", "_backward_block"}
    for name, kernel in built.items():
        names = kernel.py_func.__globals__
        assert kernel.py_func.__qualname__ == f"{name}_{cell.name}"  # its own entries in Numba's cache
        assert names["cell_step"] is getattr(cell.kernels, f"{cell.name}_step")
        assert names["cell_step_backward"] is getattr(cell.kernels, f"{cell.name}_step_backward")
        assert names["APART"] == cell.input_apart
    assert _kernels(cell.id) is built  # built once per process


def test_an_id_that_is_no_per_layer_cell_is_refused():
    for bad in (CELLS["jordan"].id, 99, -1):
        with pytest.raises(ValueError, match="no per-layer cell"):
            per_layer_cell(bad)
    with pytest.raises(ValueError, match="no per-layer cell"):
        layer_forward(99, *([None] * 16))


# A float64 layer forward and backward in a fresh process on the given Numba cache; prints the
# kernels it compiled (qualified names) as one JSON line.
_RUN = """
import json, sys
import numpy as np
from numba.core import event
compiled = []
class Names(event.Listener):
    def on_start(self, e):
        compiled.append(e.data["dispatcher"].py_func.__qualname__)
    def on_end(self, e):
        pass
sys.path.insert(0, sys.argv[1])
from test_bench import _serial_and_parallel
with event.install_listener("numba:compile", Names()):
    _serial_and_parallel("rnn", 2, 2, "project", np.float64, np.random.default_rng(0))
print(json.dumps(compiled))
"""


def _compiled_in_fresh_process(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", _RUN, os.path.dirname(__file__)], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_run_compiles_its_own_cell_only_and_the_next_process_loads_it(tmp_path):
    first = _compiled_in_fresh_process(tmp_path)
    layer = [n for n in first if n.startswith(("_forward_block", "_backward_block"))]
    assert sorted(layer) == ["_backward_block_rnn", "_forward_block_rnn"]
    steps = [n for n in first if n.endswith(("_step", "_step_backward"))]
    assert steps and all(n.startswith("rnn_") for n in steps)  # no other cell's step compiled
    again = _compiled_in_fresh_process(tmp_path)
    assert not [n for n in again if n in layer or n in steps]  # all found in the cache


def test_blocks_stay_on_the_calling_thread_within_on_this_thread():
    """run_blocks hands blocks to other threads, except inside on_this_thread (per thread)."""
    import threading

    import numba

    from charlm.kernels.blocks import on_this_thread, run_blocks

    def where(n):
        seen = []
        run_blocks(lambda k: (seen.append(threading.get_ident()), __import__("time").sleep(0.01)), n)
        return set(seen)

    with on_this_thread():
        assert where(4) == {threading.get_ident()}
    if numba.get_num_threads() > 1:
        assert len(where(4)) > 1
