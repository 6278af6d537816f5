"""The layer kernels in two directions over variable lengths: against the serial reference run span by
span (which is checked against PyTorch's packed sequences here), finite differences in float64,
and padding that changes nothing, for every per-layer cell, block split and dtype."""
import numpy as np
import pytest

from charlm.kernels import CELLS
from charlm.kernels.layer import layer_backward, layer_forward
from gradcheck import assert_gradient_matches_finite_diff
from serial_cells import direction_backward, direction_forward

CELL_NAMES = [name for name, c in CELLS.items() if not c.feeds_output]
LENGTHS = np.array([7, 7, 5, 4, 4, 2, 1])


def make_layer(cell, rng, D=2, B=len(LENGTHS), T=7, I=3, H=5, V=6, dtype=np.float64, inputs=1):
    """A layer of D directions; ``inputs`` > 1: x holds that many different inputs side by side,
    each read by D / inputs directions (an ensemble's members stacked)."""
    c = CELLS[cell]
    G, S = c.gates * H, c.states
    return dict(
        x=rng.standard_normal((T, B, inputs * I)), table=rng.standard_normal((D, V, G)) * 0.5, ids=rng.integers(0, V, (T, B)),
        W_ih=rng.uniform(-0.5, 0.5, (D, G, I)), b_ih=rng.uniform(-0.3, 0.3, (D, G)),
        W_hh=rng.uniform(-0.5, 0.5, (D, G, H)), b_hh=rng.uniform(-0.3, 0.3, (D, G)),
        s0=rng.standard_normal((D, S, B, H)) * 0.5, w_out=rng.standard_normal((T, B, D * H)),
        w_final=rng.standard_normal((D, S, B, H)), dtype=dtype)


def run_kernels(cell, m, lengths, nchunks, tb, mode="project"):
    """One layer through layer_forward / layer_backward with loss sum(w_out * out) + sum(w_final *
    final states). Returns out, finals and the gradients (per direction, partial sums added)."""
    c, dt = CELLS[cell], m["dtype"]
    a = {k: np.ascontiguousarray(v, dtype=dt) if k not in ("ids", "dtype") else v for k, v in m.items()}
    T, B, width = a["x"].shape
    D, G, H = a["W_hh"].shape
    I = a["W_ih"].shape[2]  # x may hold M inputs side by side, one per D/M directions
    S, V = c.states, a["table"].shape[1]
    lengths = np.asarray(lengths, np.int64)
    none3, none4 = np.zeros((0, 0, 0), dt), np.zeros((0, 0, 0, 0), dt)
    table = mode == "table"
    x_in, tab = (none3, a["table"]) if table else (a["x"], none3)
    ids = m["ids"].astype(np.int64)
    hs = np.empty((D, T + 1, B, H), dt)
    cache = [np.empty((D,) + shape, dt) for shape in c.cache_shapes(T, B, H).values()]
    out = np.full((T, B, D * H), np.nan, dt)
    layer_forward(c.id, x_in, tab, ids, a["W_ih"], a["b_ih"], a["W_hh"], a["b_hh"], a["s0"], hs, *cache, out, lengths,
                  nchunks, tb)
    rows = np.arange(B)
    finals = np.stack([hs[:, lengths, rows]] + ([cache[1][:, lengths, rows]] if S > 1 else []), axis=1)
    K = D * nchunks
    parts = dict(dW_hh=np.empty((K, G, H), dt), dW_ih=np.empty((K, G, I) if not table else (K, 0, 0), dt),
                 db_hh=np.empty((K, G), dt), db_ih=np.empty((K, G), dt),
                 dtab=np.empty((K, V, G), dt) if table else none3)
    dx = np.full((D, T, B, I), np.nan, dt) if not table else none4
    ds0 = np.empty((D, S, B, H), dt)
    layer_backward(c.id, a["w_out"], a["w_final"], a["W_hh"], hs, *cache, x_in, a["W_ih"], ids if table else
                   np.zeros((0, 0), np.int64), *parts.values(), dx, ds0, none4, lengths, nchunks, tb)
    grads = {name: p.reshape((D, nchunks) + p.shape[1:]).sum(axis=1) for name, p in parts.items()}
    M = width // I  # each input's gradient: its directions' summed, the inputs side by side as in x
    grads.update(ds0=ds0, dx=None if table else
                 dx.reshape((M, D // M) + dx.shape[1:]).sum(axis=1).transpose(1, 2, 0, 3).reshape(T, B, width))
    return out, finals, grads


def run_reference(cell, m, lengths, mode="project"):
    """The same through the serial drivers, one direction and one span at a time."""
    D, G, H = m["W_hh"].shape
    outs, finals, grads = [], [], {k: [] for k in ("dW_hh", "dW_ih", "db_hh", "db_ih", "dtab", "ds0")}
    dx = np.zeros(m["x"].shape)
    for d in range(D):
        x = m["table"][d][m["ids"]] if mode == "table" else m["x"]
        xp = np.ascontiguousarray(x @ (np.eye(G) if mode == "table" else m["W_ih"][d].T) + m["b_ih"][d])
        out, final, caches = direction_forward(cell, xp, m["W_hh"][d], m["b_hh"][d], np.ascontiguousarray(m["s0"][d]),
                                               lengths, reverse=d == 1)
        dxp, dW_hh, db_hh, ds0 = direction_backward(cell, m["w_out"][:, :, d * H:(d + 1) * H], m["w_final"][d],
                                                    m["W_hh"][d], lengths, caches, reverse=d == 1)
        outs.append(out)
        finals.append(final)
        grads["dW_hh"].append(dW_hh)
        grads["db_hh"].append(db_hh)
        grads["db_ih"].append(dxp.sum((0, 1)))
        grads["ds0"].append(ds0)
        if mode == "table":
            dtab = np.zeros_like(m["table"][d])
            np.add.at(dtab, m["ids"].reshape(-1), dxp.reshape(-1, G))
            grads["dtab"].append(dtab)
        else:
            grads["dW_ih"].append(dxp.reshape(-1, G).T @ m["x"].reshape(-1, m["x"].shape[2]))
            dx += dxp @ m["W_ih"][d]
    grads = {k: np.stack(v) for k, v in grads.items() if v}
    grads["dx"] = dx if mode != "table" else None
    return np.concatenate(outs, axis=2), np.stack(finals), grads


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("nchunks, tb", [(1, 7), (2, 2), (3, 3), (7, 1)])
@pytest.mark.parametrize("mode", ["project", "table"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 3e-5)])
def test_two_directions_over_lengths_agree_with_the_serial_reference(cell, nchunks, tb, mode, dtype, tol):
    """Blocks of streams whose lengths differ inside a block and between blocks, blocks of steps that
    end inside a stream, and more blocks than streams run."""
    m = make_layer(cell, np.random.default_rng(11), dtype=dtype)
    out, finals, grads = run_kernels(cell, m, LENGTHS, nchunks, tb, mode)
    m64 = {k: v.astype(dtype).astype(np.float64) if isinstance(v, np.ndarray) and k != "ids" else v
           for k, v in m.items()}
    out_r, finals_r, grads_r = run_reference(cell, m64, LENGTHS, mode)
    np.testing.assert_allclose(out, out_r, rtol=tol, atol=tol, err_msg="out")
    np.testing.assert_allclose(finals, finals_r, rtol=tol, atol=tol, err_msg="finals")
    for name, ref in grads_r.items():
        if ref is not None:
            np.testing.assert_allclose(grads[name], ref, rtol=tol, atol=tol * 10, err_msg=name)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("D, inputs", [(2, 1), (4, 2)])
def test_layer_gradients_match_finite_differences(cell, D, inputs):
    rng = np.random.default_rng(12)
    lengths = np.array([4, 3, 3, 1])
    m = make_layer(cell, rng, D=D, B=4, T=4, I=2, H=3, inputs=inputs)
    out, finals, grads = run_kernels(cell, m, lengths, 2, 2)

    def loss():
        o, f, _ = run_kernels(cell, m, lengths, 2, 2)
        return float(np.sum(m["w_out"] * o) + np.sum(m["w_final"] * f))

    for name, key in (("x", "dx"), ("W_ih", "dW_ih"), ("b_ih", "db_ih"), ("W_hh", "dW_hh"), ("b_hh", "db_hh"),
                      ("s0", "ds0")):
        assert_gradient_matches_finite_diff(loss, m[name], grads[key], name=f"{cell}/{name}")


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("D, inputs", [(2, 1), (6, 3)])
def test_padding_never_changes_outputs_or_gradients(cell, D, inputs):
    rng = np.random.default_rng(13)
    m = make_layer(cell, rng, D=D, inputs=inputs)
    pad = np.arange(7)[:, None] >= LENGTHS[None, :]
    out, finals, grads = run_kernels(cell, m, LENGTHS, 2, 3)
    assert np.all(out[pad] == 0) and np.all(grads["dx"][pad] == 0)
    junk = dict(m)
    junk["x"] = np.where(pad[:, :, None], 1e3, m["x"])
    junk["w_out"] = np.where(pad[:, :, None], np.nan, m["w_out"])
    junk["ids"] = np.where(pad, 0, m["ids"])
    out2, finals2, grads2 = run_kernels(cell, junk, LENGTHS, 2, 3)
    np.testing.assert_array_equal(out2, out)
    np.testing.assert_array_equal(finals2, finals)
    for name in grads:
        np.testing.assert_array_equal(grads2[name], grads[name], err_msg=name)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_serial_reference_matches_torch_packed_sequences(cell):
    """The reference itself: one bidirectional layer against PyTorch's on a packed batch."""
    from test_bidir import torch_packed

    m = make_layer(cell, np.random.default_rng(14))
    m["s0"][...] = 0  # PyTorch's packed default
    params = {}
    for d, sfx in enumerate(("", "_reverse")):
        for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"):
            key = {"weight_ih": "W_ih", "bias_ih": "b_ih", "weight_hh": "W_hh", "bias_hh": "b_hh"}[name]
            params[f"rnn.{name}_l0{sfx}"] = m[key][d]
    out_t, finals_t, grads_t, dx_t = torch_packed(cell, params, m["x"], LENGTHS, 1, 2, m["w_out"], m["w_final"])
    out, finals, grads = run_reference(cell, m, LENGTHS)
    np.testing.assert_allclose(out, out_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(finals, finals_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grads["dx"], dx_t, rtol=1e-10, atol=1e-12)
    for d, sfx in enumerate(("", "_reverse")):
        for name, key in (("weight_ih", "dW_ih"), ("bias_ih", "db_ih"), ("weight_hh", "dW_hh"), ("bias_hh", "db_hh")):
            np.testing.assert_allclose(grads[key][d], grads_t[f"rnn.{name}_l0{sfx}"], rtol=1e-10, atol=1e-12,
                                       err_msg=name + sfx)
