"""The layer kernels with one input per group of directions (an ensemble's members stacked as D =
members x directions, each reading its own columns of x): against the serial reference run group
by group (finite differences and padding: test_layer_directions.py, with ``inputs``)."""
import numpy as np
import pytest

from test_layer_directions import CELL_NAMES, LENGTHS, make_layer, run_kernels, run_reference


def group(m, g, M):
    """Group g's own layer: its input's columns and its directions' weights, states and weights of the loss."""
    D, _, H = m["W_hh"].shape
    per, I = D // M, m["W_ih"].shape[2]
    one = {k: v[g * per:(g + 1) * per] for k, v in m.items() if k in ("W_ih", "b_ih", "W_hh", "b_hh", "s0", "w_final",
                                                                        "table")}
    one.update(x=m["x"][:, :, g * I:(g + 1) * I], w_out=m["w_out"][:, :, g * per * H:(g + 1) * per * H],
               ids=m["ids"], dtype=m["dtype"])
    return one


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("M, per", [(3, 2), (4, 1), (2, 2)])
@pytest.mark.parametrize("nchunks, tb", [(1, 7), (2, 2), (3, 3)])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 3e-5)])
def test_per_group_inputs_agree_with_each_group_alone(cell, M, per, nchunks, tb, dtype, tol):
    """Every group's outputs, final states and gradients are those of its layer run alone through the
    serial reference; and those of the same kernels run on that group alone, bit for bit (a block's
    arithmetic does not depend on the blocks beside it)."""
    m = make_layer(cell, np.random.default_rng(21), D=M * per, dtype=dtype, inputs=M)
    out, finals, grads = run_kernels(cell, m, LENGTHS, nchunks, tb)
    D, _, H = m["W_hh"].shape
    I = m["W_ih"].shape[2]
    for g in range(M):
        one = group(m, g, M)
        cols, dirs = slice(g * per * H, (g + 1) * per * H), slice(g * per, (g + 1) * per)
        o, f, gr = run_kernels(cell, one, LENGTHS, nchunks, tb)
        np.testing.assert_array_equal(out[:, :, cols], o)
        np.testing.assert_array_equal(finals[dirs], f)
        np.testing.assert_array_equal(grads["dx"][:, :, g * I:(g + 1) * I], gr["dx"])
        for name in ("dW_hh", "dW_ih", "db_hh", "db_ih", "ds0"):
            np.testing.assert_array_equal(grads[name][dirs], gr[name], err_msg=name)
        one64 = {k: v.astype(dtype).astype(np.float64) if isinstance(v, np.ndarray) and k != "ids" else v
                 for k, v in one.items()}
        o_r, f_r, gr_r = run_reference(cell, one64, LENGTHS)
        np.testing.assert_allclose(o, o_r, rtol=tol, atol=tol, err_msg="out")
        np.testing.assert_allclose(f, f_r, rtol=tol, atol=tol, err_msg="finals")
        for name, ref in gr_r.items():
            if ref is not None:
                np.testing.assert_allclose(gr[name], ref, rtol=tol, atol=tol * 10, err_msg=name)


def test_an_input_that_is_not_one_per_group_is_refused():
    m = make_layer("lstm", np.random.default_rng(24), D=6, inputs=3)
    m["x"] = m["x"][:, :, :7]  # 7 columns: not a whole number of 3-wide inputs
    with pytest.raises(ValueError, match="whole number of inputs"):
        run_kernels("lstm", m, LENGTHS, 1, 7)
