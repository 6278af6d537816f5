"""The generation loops: one sampling rule for both, one compiled loop on one thread or two.

(The loops against a naive reference, their state convention and the NumPy/compiled agreement on
a float32 model are in test_kernels.py; the rule's robustness to extreme logits in
test_robustness.py.)
"""
import importlib
import subprocess
import sys

import numpy as np
import pytest

import charlm.runtime as rt
from charlm.kernels import CELLS
from charlm.kernels.sampling_rule import no_controls, sample_id

G = importlib.import_module("charlm.kernels.generate")  # the module (the package's ``generate`` is the function)

RULE_CASES = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.8), (0.9, 7, 0.6), (2.0, 40, 0.95),
              (0.0, 0, 1.0), (1.0, 1, 1.0), (1.0, 0, 1e-9), (1e-6, 0, 1.0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampling_rule_compiled_and_uncompiled_draw_the_same_ids(dtype):
    """The NumPy loop calls sample_id as written and the compiled loop its njit compilation: the
    same id for every logits vector, option and uniform, ties and extremes included."""
    rng = np.random.default_rng(5)
    V = 40
    logits_cases = [rng.standard_normal(V) * s for s in (0.1, 1.0, 4.0, 30.0)]
    logits_cases.append(np.round(rng.standard_normal(V)))          # many exact ties
    logits_cases.append(np.r_[np.full(V - 3, -np.inf), 1.0, 2.0, 2.0])
    logits_cases.append(np.r_[rng.standard_normal(V - 2), np.inf, np.inf])
    logits_cases.append(np.r_[rng.standard_normal(V - 1), np.nan])
    uniforms = np.r_[rng.random(60), 0.0, np.nextafter(1.0, 0.0)]
    compiled, plain = np.empty(V), np.empty(V)
    for logits in logits_cases:
        logits = logits.astype(dtype)
        for temperature, top_k, top_p in RULE_CASES:
            a = [int(G.draw(logits, u, temperature, top_k, top_p, compiled)) for u in uniforms]
            b = [int(sample_id(logits, u, temperature, top_k, top_p, plain)) for u in uniforms]
            assert a == b, (logits, temperature, top_k, top_p)
            assert all(0 <= i < V for i in a)


def test_sampling_rule_and_numpy_loop_do_not_import_numba():
    code = ("import sys\nimport charlm.kernels.generate_numpy, charlm.kernels.sampling_rule\n"
            "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _model(cell, dtype, rng, L=2, H=12, V=9):
    c = CELLS[cell]
    g = c.gates * H
    table0, b_dec = rng.standard_normal((V, g)).astype(dtype), rng.standard_normal(V).astype(dtype)
    W_ih, W_hh = ((rng.standard_normal((n, g, H)) * 0.4).astype(dtype) for n in (L - 1, L))
    b_ih, b_hh = (rng.standard_normal((n, g)).astype(dtype) for n in (L - 1, L))
    W_dec = rng.standard_normal((V, H)).astype(dtype)
    state0 = rng.standard_normal((L, c.states, H)).astype(dtype)
    return (c.id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec), state0


def _two_threads():
    """2, or skip: the split loop's threads must run at once (never with NUMBA_DISABLE_JIT)."""
    import numba

    nt = min(rt.kernel_threads(), 2)
    if nt < 2 or numba.config.DISABLE_JIT:
        pytest.skip("needs two compiled threads")
    return nt


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_generation_equals_one_thread(cell, dtype):
    """The loop on two threads (each owning half of every layer's units) gives the one-thread loop's
    ids and state, bit for bit."""
    nt = _two_threads()
    weights, state0 = _model(cell, dtype, np.random.default_rng(11))
    uniforms = np.random.default_rng(12).random(40)
    for temperature, top_k, top_p, stop in [(1.0, 0, 1.0, False), (0.8, 3, 0.9, True), (0.0, 0, 1.0, True)]:
        a, b = np.full(40, -1), np.full(40, -1)
        sa, sb = state0.copy(), state0.copy()
        na = G.generate(*weights, sa, 2, uniforms, temperature, top_k, top_p, 4, stop, a, 0, no_controls(9))
        nb = G.generate_split(weights[0], *G.split_weights(*weights[:6], nt), *weights[6:], sb, 2, uniforms,
                              temperature, top_k, top_p, 4, stop, b, 0, no_controls(9), nt)
        assert na == nb and a.tolist() == b.tolist()
        np.testing.assert_array_equal(sa, sb)  # the carried state too: chained calls stay identical


def test_compiled_loop_keeps_its_thread_copies_and_chains(monkeypatch):
    """CompiledLoop splits a large model once and keeps the copies itself: two models side by side
    each get their own, and chained calls equal one long call on one thread."""
    nt = _two_threads()
    monkeypatch.setattr(G, "SPLIT_MIN_BYTES", 0)  # these tiny models count as large
    rng = np.random.default_rng(13)
    (w1, s1), (w2, s2) = _model("lstm", np.float32, rng), _model("gru", np.float32, rng)
    uniforms = rng.random(30)
    for weights, state0 in ((w1, s1), (w2, s2)):
        loop = G.CompiledLoop(*weights)
        assert G.split_threads(weights[0], weights[2], weights[4]) == nt
        one, s_one = np.full(30, -1), state0.copy()
        none = no_controls(9)
        G.generate(*weights, s_one, 1, uniforms, 1.0, 0, 1.0, 0, False, one, 0, none)
        out, state = np.full(30, -1), state0.copy()
        loop.generate(state, 1, uniforms[:10], 1.0, 0, 1.0, 0, False, out, 0, none)
        copies = loop._split[nt]
        loop.generate(state, int(out[9]), uniforms[10:], 1.0, 0, 1.0, 0, False, out, 10, none)
        assert loop._split[nt] is copies  # made once per model
        assert out.tolist() == one.tolist()
        np.testing.assert_array_equal(state, s_one)


def test_jordan_never_splits(monkeypatch):
    monkeypatch.setattr(G, "SPLIT_MIN_BYTES", 0)
    jordan = CELLS["jordan"]
    assert jordan.feeds_output and jordan.id not in G.SPLIT_CELLS
    assert G.split_threads(jordan.id, np.zeros((1, 4, 4)), np.zeros((2, 4, 9))) == 1


# The ids the loop drew for these models and uniforms before it was compiled per cell (the id chain
# and a parallel loop): the port must draw the very same ones, on one thread and on two.
_BEFORE = {"rnn": [7, 0, 1, 7, 1, 2, 1, 4, 1, 1, 1, 0, 1, 1, 1, 2, 1, 0, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
           "gru": [3, 3, 2, 3, 3, 6, 3, 3, 2, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
           "lstm": [0, 0, 0, 3, 2, 8, 7, 4, 0, 3, 3, 0, 2, 0, 0, 3, 1, 0, 1, 7, 1, 0, 0, 3, 3, 2, 5, 3, 3, 3]}


@pytest.mark.parametrize("cell", sorted(_BEFORE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_loop_draws_the_ids_it_drew_before_it_was_compiled_per_cell(cell, dtype):
    weights, state0 = _model(cell, dtype, np.random.default_rng(21))
    uniforms = np.random.default_rng(22).random(30)
    runs = [("one", None)] + ([("split", _two_threads())] if rt.kernel_threads() >= 2 else [])
    for _, nt in runs:
        out, state = np.full(30, -1), state0.copy()
        G.advance(*weights, state, np.array([1, 3, 5]), np.empty(9, dtype))  # a prime first
        if nt is None:
            n = G.generate(*weights, state, 5, uniforms, 0.9, 0, 1.0, 4, False, out, 0, no_controls(9))
        else:
            n = G.generate_split(weights[0], *G.split_weights(*weights[:6], nt), *weights[6:], state, 5, uniforms,
                                 0.9, 0, 1.0, 4, False, out, 0, no_controls(9), nt)
        assert out[:n].tolist() == _BEFORE[cell]


def test_no_split_within_a_thread_that_runs_its_blocks_alone(monkeypatch):
    """The split loop's threads wait for each other: never split where run_blocks would run them
    one after the other (on_this_thread)."""
    from charlm.kernels.blocks import on_this_thread

    nt = _two_threads()
    monkeypatch.setattr(G, "SPLIT_MIN_BYTES", 0)
    weights, _ = _model("gru", np.float32, np.random.default_rng(1))
    assert G.split_threads(weights[0], weights[2], weights[4]) == nt
    with on_this_thread():
        assert G.split_threads(weights[0], weights[2], weights[4]) == 1


# Sampling a GRU in a fresh process on the given Numba cache: prints the charlm kernels it compiled.
_SAMPLE = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from compiled_names import compiled_names
from test_generate import G, _model, no_controls
weights, state = _model("gru", np.float32, np.random.default_rng(0))
with compiled_names() as compiled:
    G.advance(*weights, state, np.array([1, 2]), np.empty(9, np.float32))
    G.generate(*weights, state, 2, np.random.default_rng(1).random(5), 1.0, 0, 1.0, 0, False, np.zeros(5, np.int64),
               0, no_controls(9))
print(json.dumps(sorted(set(n for n in compiled if n.startswith("charlm")))))
"""


def test_sampling_compiles_its_own_cell_only_and_the_next_process_loads_it(tmp_path):
    import json
    import os

    def fresh():
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
        done = subprocess.run([sys.executable, "-c", _SAMPLE, os.path.dirname(__file__)], capture_output=True,
                              text=True, env=env, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = fresh()
    assert "charlm.kernels.generate._tokens_gru" in first and "charlm.kernels.gru.gru_step" in first
    others = [n for n in first if n.endswith(("_step", "_feed")) and "gru" not in n or ".dispatch." in n]
    assert not others   # no other cell's step, no id chain, no Jordan path
    assert fresh() == []
