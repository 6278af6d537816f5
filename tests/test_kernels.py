"""Kernel tests: naive reference, finite differences, PyTorch, chunking, loss, generation, activations.

Sizes are tiny on purpose (Numba compilation dominates). Where float32 matters the hidden size is 37
so that both the vectorised body and the scalar remainder of the pointwise loops run.
"""
import functools
import math

import numpy as np
import pytest
from gradcheck import assert_gradient_matches_finite_diff
from numba import njit
from reference import REFERENCES, step_reference
from serial_cells import SERIAL

from charlm.kernels import CELL_IDS, CELLS, cross_entropy_grad, cross_entropy_rows, generate_numpy, get_cell
from charlm.kernels.activations import SIGMOID_F32_MAX_ERR, TANH_F32_MAX_ERR, sigmoid_act, tanh_act
from charlm.kernels.generate import advance, generate
from charlm.kernels.sampling_rule import no_controls

CELL_NAMES = [name for name, c in CELLS.items() if not c.feeds_output]  # per-layer cells


def make_inputs(cell, T, B, H, rng, dtype=np.float64):
    G, S = CELLS[cell].gates, CELLS[cell].states
    xp = rng.standard_normal((T, B, G * H))
    W_hh = rng.standard_normal((G * H, H)) * 0.6
    b_hh = rng.standard_normal(G * H) * 0.3
    s0 = rng.standard_normal((S, B, H)) * 0.5
    return [a.astype(dtype) for a in (xp, W_hh, b_hh, s0)]


def rel_err(a, b):
    return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / np.abs(b).max()


# 1. forward against the naive per-gate reference

@pytest.mark.parametrize("cell", CELL_NAMES)
def test_forward_matches_reference(cell):
    rng = np.random.default_rng(1)
    xp, W_hh, b_hh, s0 = make_inputs(cell, 5, 3, 37, rng)
    hs_ref, sT_ref = REFERENCES[cell](xp, W_hh, b_hh, s0)
    hs, sT, _ = SERIAL[cell].forward(xp, W_hh, b_hh, s0)
    np.testing.assert_allclose(hs, hs_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sT, sT_ref, rtol=0, atol=1e-12)
    args32 = [a.astype(np.float32) for a in (xp, W_hh, b_hh, s0)]
    hs32, sT32, _ = SERIAL[cell].forward(*args32)
    assert hs32.dtype == np.float32
    np.testing.assert_allclose(hs32, hs_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sT32, sT_ref, rtol=0, atol=1e-5)


# 2. every gradient against central finite differences (float64)

@pytest.mark.parametrize("cell", CELL_NAMES)
def test_gradcheck(cell):
    rng = np.random.default_rng(2)
    T, B, H = 4, 3, 4
    xp, W_hh, b_hh, s0 = inputs = make_inputs(cell, T, B, H, rng)
    w_out = rng.standard_normal((T, B, H))
    w_s = rng.standard_normal((CELLS[cell].states, B, H))
    fwd, bwd = SERIAL[cell].forward, SERIAL[cell].backward

    def loss():
        hs, sT, _ = fwd(xp, W_hh, b_hh, s0)
        return float(np.sum(w_out * hs[1:]) + np.sum(w_s * sT))

    hs, sT, cache = fwd(xp, W_hh, b_hh, s0)
    grads = bwd(w_out, w_s, W_hh, hs, cache)  # dL/dh_t = w_out, dL/dsT = w_s
    for name, x, g in zip(("xp", "W_hh", "b_hh", "s0"), inputs, grads):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert_gradient_matches_finite_diff(loss, x, g, name=name)


# 3. PyTorch on identical weights: outputs, final states, every gradient

def torch_run(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh, w_out, w_h, w_c):
    torch = pytest.importorskip("torch")
    T, B, I = x.shape
    H = W_hh.shape[1]
    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    module = getattr(torch.nn, CELLS[cell].torch_module)(I, H, dtype=dtype)  # the twin the table names
    with torch.no_grad():
        for name, value in (("weight_ih_l0", W_ih), ("weight_hh_l0", W_hh),
                            ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
            getattr(module, name).copy_(torch.from_numpy(value))
    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if cell == "lstm":
        out, (hT, cT) = module(tx, (th0, tc0))
        loss = (out * torch.from_numpy(w_out)).sum() + (hT[0] * torch.from_numpy(w_h)).sum() \
            + (cT[0] * torch.from_numpy(w_c)).sum()
        sT = np.stack([hT[0].detach().numpy(), cT[0].detach().numpy()])
    else:
        out, hT = module(tx, th0)
        loss = (out * torch.from_numpy(w_out)).sum() + (hT[0] * torch.from_numpy(w_h)).sum()
        sT = hT.detach().numpy()
    loss.backward()
    grads = {"x": tx.grad, "h0": th0.grad, "c0": tc0.grad, "W_hh": module.weight_hh_l0.grad,
             "b_hh": module.bias_hh_l0.grad, "W_ih": module.weight_ih_l0.grad,
             "b_ih": module.bias_ih_l0.grad}
    grads = {k: (v.numpy() if v is not None else None) for k, v in grads.items()}
    return out.detach().numpy(), sT, grads


def compare_with_torch(cell, dtype, seed=3, T=5, B=3, I=4, H=37):
    rng = np.random.default_rng(seed)
    G, S = CELLS[cell].gates, CELLS[cell].states
    x = rng.standard_normal((T, B, I))
    W_ih = rng.uniform(-0.5, 0.5, (G * H, I))
    W_hh = rng.uniform(-0.3, 0.3, (G * H, H))
    b_ih, b_hh = rng.uniform(-0.3, 0.3, G * H), rng.uniform(-0.3, 0.3, G * H)
    h0, c0 = rng.standard_normal((1, B, H)) * 0.5, rng.standard_normal((1, B, H)) * 0.5
    w_out, w_h, w_c = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    x, W_ih, W_hh, b_ih, b_hh, h0, c0, w_out, w_h, w_c = (
        a.astype(dtype) for a in (x, W_ih, W_hh, b_ih, b_hh, h0, c0, w_out, w_h, w_c))
    out_t, sT_t, g_t = torch_run(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh, w_out, w_h, w_c)

    xp = (x.reshape(T * B, I) @ W_ih.T + b_ih).reshape(T, B, G * H)  # the caller's big GEMM
    s0 = np.concatenate([h0, c0])[:S].copy()
    dsT = np.stack([w_h, w_c])[:S].copy()
    c = SERIAL[cell]
    hs, sT, cache = c.forward(xp, W_hh, b_hh, s0)
    dxp, dW_hh, db_hh, ds0 = c.backward(w_out, dsT, W_hh, hs, cache)
    dxp2 = dxp.reshape(T * B, G * H)
    errs = {
        "out": rel_err(hs[1:], out_t), "sT": rel_err(sT, sT_t),
        "dW_hh": rel_err(dW_hh, g_t["W_hh"]), "db_hh": rel_err(db_hh, g_t["b_hh"]),
        "dh0": rel_err(ds0[0], g_t["h0"][0]),
        "dx": rel_err((dxp2 @ W_ih).reshape(T, B, I), g_t["x"]),
        "dW_ih": rel_err(dxp2.T @ x.reshape(T * B, I), g_t["W_ih"]),
        "db_ih": rel_err(dxp2.sum(0), g_t["b_ih"]),
    }
    if cell == "lstm":
        errs["dc0"] = rel_err(ds0[1], g_t["c0"][0])
    return errs


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_matches_torch(cell, dtype, tol):
    errs = compare_with_torch(cell, dtype)
    assert max(errs.values()) < tol, errs


# 4. truncated BPTT: chunks with the state carried equal one long run (and chain back exactly)

@pytest.mark.parametrize("cell", CELL_NAMES)
def test_chunked_equals_long_run(cell):
    rng = np.random.default_rng(4)
    xp, W_hh, b_hh, s0 = make_inputs(cell, 6, 2, 5, rng)
    c = SERIAL[cell]
    hs, sT, cache = c.forward(xp, W_hh, b_hh, s0)
    hs_a, sT_a, cache_a = c.forward(np.ascontiguousarray(xp[:3]), W_hh, b_hh, s0)
    hs_b, sT_b, cache_b = c.forward(np.ascontiguousarray(xp[3:]), W_hh, b_hh, sT_a)
    np.testing.assert_allclose(np.concatenate([hs_a, hs_b[1:]]), hs, rtol=0, atol=1e-14)
    np.testing.assert_allclose(sT_b, sT, rtol=0, atol=1e-14)
    # Backward through the chunks, passing ds0 of the later one as dsT of the earlier one.
    dh_out = rng.standard_normal((6, 2, 5))
    dsT = rng.standard_normal(sT.shape)
    dxp, dW, db, ds0 = c.backward(dh_out, dsT, W_hh, hs, cache)
    dxp_b, dW_b, db_b, ds_mid = c.backward(dh_out[3:].copy(), dsT, W_hh, hs_b, cache_b)
    dxp_a, dW_a, db_a, ds0_a = c.backward(dh_out[:3].copy(), ds_mid, W_hh, hs_a, cache_a)
    np.testing.assert_allclose(np.concatenate([dxp_a, dxp_b]), dxp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dW_a + dW_b, dW, rtol=0, atol=1e-12)
    np.testing.assert_allclose(db_a + db_b, db, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds0_a, ds0, rtol=0, atol=1e-12)


def test_adapters_reject_mixed_dtypes_and_unknown_cells():
    xp, W_hh, b_hh, s0 = make_inputs("rnn", 2, 2, 3, np.random.default_rng(0))
    with pytest.raises(TypeError):
        SERIAL["rnn"].forward(xp, W_hh.astype(np.float32), b_hh, s0)
    with pytest.raises(ValueError):
        SERIAL["rnn"].forward(xp, np.asfortranarray(W_hh), b_hh, s0)
    with pytest.raises(ValueError):
        get_cell("transformer")


# 5. fused softmax + NLL

def ce_reference(logits, targets):
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    nll = lse - z[np.arange(len(z)), targets]
    probs = np.exp(z - lse[:, None])
    probs[np.arange(len(z)), targets] -= 1.0
    return nll, probs


@pytest.mark.parametrize("target_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_matches_numpy(dtype, target_dtype):
    rng = np.random.default_rng(5)
    N, V = 7, 11
    logits = (rng.standard_normal((N, V)) * 3).astype(dtype)
    targets = rng.integers(0, V, N).astype(target_dtype)
    nll_ref, grad_ref = ce_reference(logits, targets)
    nll_rows = np.empty(N)
    before = logits.copy()
    cross_entropy_rows(logits, targets, nll_rows)
    np.testing.assert_array_equal(logits, before)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(nll_rows, nll_ref, rtol=tol)
    scale = 1.0 / N
    total = cross_entropy_grad(logits, targets, scale)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, nll_ref.sum(), rtol=tol)
    np.testing.assert_allclose(logits, scale * grad_ref, rtol=0, atol=tol)


def test_cross_entropy_gradcheck():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((5, 9)) * 2
    targets = rng.integers(0, 9, 5)
    scale = 0.37
    grad = logits.copy()
    cross_entropy_grad(grad, targets, scale)

    def loss():
        return scale * cross_entropy_grad(logits.copy(), targets, 1.0)

    assert_gradient_matches_finite_diff(loss, logits, grad, name="logits")


def test_cross_entropy_matches_torch_and_survives_huge_logits():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((6, 13)) * 4
    logits[0, 3], logits[1, :] = 1e4, -1e4
    logits[2, ::2] = 1e4
    targets = rng.integers(0, 13, 6)
    t = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(t, torch.from_numpy(targets), reduction="mean")
    loss.backward()
    grad = logits.copy()
    total = cross_entropy_grad(grad, targets, 1.0 / 6)
    assert np.isfinite(total) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(total / 6, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=0, atol=1e-14)
    with pytest.raises(IndexError):
        cross_entropy_grad(logits.copy(), np.full(6, 13), 1.0)


# 6. generation against a NumPy step loop

def make_model(cell, rng, L=2, V=7, E=5, H=4):
    G = CELLS[cell].gates
    enc = rng.standard_normal((V, E))
    W_ih0, b_ih0 = rng.standard_normal((G * H, E)) * 0.8, rng.standard_normal(G * H) * 0.3
    m = {
        "table0": enc @ W_ih0.T + b_ih0,  # the folded embedding the caller passes
        "W_ih": rng.standard_normal((L - 1, G * H, H)) * 0.8,
        "b_ih": rng.standard_normal((L - 1, G * H)) * 0.3,
        "W_hh": rng.standard_normal((L, G * H, H)) * 0.8,
        "b_hh": rng.standard_normal((L, G * H)) * 0.3,
        "W_dec": rng.standard_normal((V, H)) * 2.0,
        "b_dec": rng.standard_normal(V) * 0.5,
    }
    state = rng.standard_normal((L, CELLS[cell].states, H)) * 0.5
    return m, state, (enc, W_ih0, b_ih0)


def reference_step(cell, raw, m, state, token):
    enc, W_ih0, b_ih0 = raw
    x = enc[token] @ W_ih0.T + b_ih0
    new = []
    for l in range(state.shape[0]):
        s = step_reference(cell, x, m["W_hh"][l], m["b_hh"][l], state[l])
        new.append(s)
        if l + 1 < state.shape[0]:
            x = m["W_ih"][l] @ s[0] + m["b_ih"][l]
    return np.stack(new), m["W_dec"] @ new[-1][0] + m["b_dec"]


def reference_sample(logits, u, temperature, top_k, top_p):
    if temperature == 0:
        return int(np.argmax(logits))
    p = np.exp((logits - logits.max()) / temperature)
    order = np.argsort(-p, kind="stable")
    keep = top_k if 0 < top_k < len(p) else len(p)
    if top_p < 1:
        c = np.cumsum(p[order[:keep]])
        keep = int(np.searchsorted(c, top_p * c[-1], side="left")) + 1
    q = np.zeros_like(p)
    q[order[:keep]] = p[order[:keep]]
    cdf = np.cumsum(q)
    return int(np.searchsorted(cdf, u * cdf[-1], side="right"))


def reference_generate(cell, raw, m, state, token, uniforms, temperature, top_k, top_p):
    out = []
    for u in uniforms:
        state, logits = reference_step(cell, raw, m, state, token)
        token = reference_sample(logits, u, temperature, top_k, top_p)
        out.append(token)
    return out, state


def run_generate(cell, m, state, token, uniforms, temperature=1.0, top_k=0, top_p=1.0, eos_id=0,
                 stop_at_eos=False, loop=generate, controls=None):
    out = np.full(len(uniforms), -1, np.int64)
    controls = no_controls(m["W_dec"].shape[0]) if controls is None else controls
    n = loop(CELL_IDS[cell], m["table0"], m["W_ih"], m["b_ih"], m["W_hh"], m["b_hh"],
             m["W_dec"], m["b_dec"], state, token, uniforms, temperature, top_k, top_p,
             eos_id, stop_at_eos, out, 0, controls)
    return out[:n]


# Both generation loops: the compiled one and the NumPy one that serves the start of each sample.
LOOPS = [(cell, "kernel") for cell in CELL_NAMES] + [(cell, "numpy") for cell in CELL_NAMES if cell != "jordan"]


def loops(name):
    return (generate, advance) if name == "kernel" else (generate_numpy.generate, generate_numpy.advance)


@pytest.mark.parametrize("cell, loop", LOOPS)
def test_generate_matches_reference(cell, loop):
    run_generate = functools.partial(globals()["run_generate"], loop=loops(loop)[0])
    rng = np.random.default_rng(8)
    m, state0, raw = make_model(cell, rng)
    uniforms = rng.random(20)
    for temperature, top_k, top_p in [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.8, 3, 1.0), (1.3, 0, 0.7),
                                      (1.0, 4, 0.9)]:
        state = state0.copy()
        out = run_generate(cell, m, state, 0, uniforms, temperature, top_k, top_p)
        ref, ref_state = reference_generate(cell, raw, m, state0, 0, uniforms, temperature, top_k, top_p)
        assert out.tolist() == ref, (temperature, top_k, top_p)
        # the state has consumed token 0 and all generated ids but the last
        np.testing.assert_allclose(state, ref_state, rtol=0, atol=1e-12)
        if temperature > 0:  # the same uniforms give the same text
            assert run_generate(cell, m, state0.copy(), 0, uniforms, temperature, top_k, top_p).tolist() == ref
    # top_k = 1 is greedy whatever the temperature and uniforms
    greedy = run_generate(cell, m, state0.copy(), 0, uniforms, 0.0)
    assert run_generate(cell, m, state0.copy(), 0, uniforms, 1.0, top_k=1).tolist() == greedy.tolist()
    # float32 weights follow the float64 reference greedily
    m32 = {k: v.astype(np.float32) for k, v in m.items()}
    greedy32 = run_generate(cell, m32, state0.astype(np.float32), 0, uniforms, 0.0)
    assert greedy32.tolist() == greedy.tolist()


@pytest.mark.parametrize("cell, loop", LOOPS)
def test_generate_eos_and_carried_state(cell, loop):
    run_generate = functools.partial(globals()["run_generate"], loop=loops(loop)[0])
    rng = np.random.default_rng(9)
    m, state0, raw = make_model(cell, rng)
    uniforms = rng.random(16)
    full_state = state0.copy()
    full = run_generate(cell, m, full_state, 0, uniforms)
    # two calls, the second fed the last id of the first, equal one call
    state = state0.copy()
    first = run_generate(cell, m, state, 0, uniforms[:6])
    second = run_generate(cell, m, state, int(first[-1]), uniforms[6:])
    assert first.tolist() + second.tolist() == full.tolist()
    np.testing.assert_array_equal(state, full_state)
    # stop at the first occurrence of some id: it is written and counted
    j = next((j for j in range(3, len(full)) if full[j] not in full[:j]), 0)
    stopped = run_generate(cell, m, state0.copy(), 0, uniforms, eos_id=int(full[j]), stop_at_eos=True)
    assert stopped.tolist() == full[:j + 1].tolist()
    assert run_generate(cell, m, state0.copy(), 0, uniforms, eos_id=int(full[j])).tolist() == full.tolist()


@pytest.mark.parametrize("cell, loop", LOOPS)
def test_advance_conditions_on_prime(cell, loop):
    advance = loops(loop)[1]  # noqa: F811
    rng = np.random.default_rng(10)
    m, state0, raw = make_model(cell, rng)
    prime = np.array([0, 3, 5, 1, 6], np.int32)
    state = state0.copy()
    logits = np.zeros(m["W_dec"].shape[0])
    advance(CELL_IDS[cell], m["table0"], m["W_ih"], m["b_ih"], m["W_hh"], m["b_hh"], m["W_dec"],
            m["b_dec"], state, prime, logits)
    ref_state = state0
    for token in prime:
        ref_state, ref_logits = reference_step(cell, raw, m, ref_state, token)
    np.testing.assert_allclose(state, ref_state, rtol=0, atol=1e-12)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_numpy_loop_agrees_with_the_kernel_in_float32(cell):
    """Sampler switches from the NumPy loop to the kernel after NUMPY_TOKENS tokens: on a float32
    model with a realistic vocabulary the two give the same ids and nearly the same state."""
    rng = np.random.default_rng(11)
    m, state0, _ = make_model(cell, rng, L=2, V=65, E=16, H=48)
    m = {k: (v * 0.3).astype(np.float32) for k, v in m.items()}
    uniforms = rng.random(300)
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.2, 0, 0.9)]:
        s_kernel, s_numpy = state0.astype(np.float32), state0.astype(np.float32)
        a = run_generate(cell, m, s_kernel, 0, uniforms, temperature, top_k, top_p)
        b = run_generate(cell, m, s_numpy, 0, uniforms, temperature, top_k, top_p, loop=generate_numpy.generate)
        assert a.tolist() == b.tolist()
        np.testing.assert_allclose(s_numpy, s_kernel, rtol=0, atol=2e-5)


# 7. the fast float32 activations and the exact float64 ones

@njit(error_model="numpy")
def _apply(x, t, s):
    for i in range(x.shape[0]):
        t[i] = tanh_act(x[i])
        s[i] = sigmoid_act(x[i])


def test_activations():
    x = np.concatenate([np.linspace(-20, 20, 400_001), [0.0, 1e-30, -1e-8, 7.905, -7.906]])
    t32, s32 = np.empty(len(x), np.float32), np.empty(len(x), np.float32)
    _apply(x.astype(np.float32), t32, s32)
    x32 = x.astype(np.float32).astype(np.float64)
    assert np.abs(t32 - np.tanh(x32)).max() < TANH_F32_MAX_ERR
    assert np.abs(s32 - 1 / (1 + np.exp(-x32))).max() < SIGMOID_F32_MAX_ERR
    assert np.all(np.abs(t32) <= 1) and np.all((s32 >= 0) & (s32 <= 1))
    assert np.array_equal(np.sign(t32), np.sign(x32))  # odd, and exactly 0 at 0
    t64, s64 = np.empty(len(x)), np.empty(len(x))
    _apply(x, t64, s64)
    # float64 is libm's tanh/exp itself, the same functions Python's math module calls
    sub = slice(None, None, 7)
    np.testing.assert_array_equal(t64[sub], np.frompyfunc(math.tanh, 1, 1)(x[sub]).astype(float))
    np.testing.assert_array_equal(s64[sub], [1 / (1 + math.exp(-v)) for v in x[sub]])
    # the pure-Python fallback (NUMBA_DISABLE_JIT=1) computes the same function
    np.testing.assert_allclose([tanh_act(np.float32(v)) for v in x[::9973]], t32[::9973], atol=1e-7)
    np.testing.assert_allclose([sigmoid_act(np.float32(v)) for v in x[::9973]], s32[::9973], atol=1e-7)


# 8. the register-tile micro-kernel (kernels/tile.py) against np.dot

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (7, 5, 3), (8, 13, 33), (9, 37, 65), (17, 3, 31), (3, 64, 16)])
def test_matmul_packed_matches_numpy(M, K, N, dtype):
    """Rows that are not a multiple of the tile's MR, columns that leave a partial panel, K = 1,
    both packing layouts (W given as (N, K) for the forward's h @ W^T, as (K, N) for the backward),
    and operands whose rows are strided views of larger arrays (as a thread's block of streams is)."""
    from charlm.kernels.tile import MR, PANEL_BYTES, matmul_packed, pack_panels

    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    A_big = rng.standard_normal((M, K + 5)).astype(dtype)
    A = A_big[:, 2:2 + K]                                    # row stride K + 5, unit column stride
    W = rng.standard_normal((K, N)).astype(dtype)
    ref = A.astype(np.float64) @ W.astype(np.float64)
    tol = 1e-5 * K if dtype == np.float32 else 1e-12 * K
    for transposed in (True, False):
        P = pack_panels(np.ascontiguousarray(W.T) if transposed else W, transposed)
        assert P.shape[2] * P.dtype.itemsize == PANEL_BYTES and P.shape[0] * P.shape[2] >= N  # the tile's vectors
        C_big = np.full((M, N + 3), np.nan, dtype)
        C = C_big[:, 1:1 + N]
        matmul_packed(A, P, C, np.empty((MR, P.shape[2]), dtype))
        np.testing.assert_allclose(C, ref, rtol=tol, atol=tol, err_msg=f"transposed={transposed}")
        assert np.isnan(C_big[:, 0]).all() and np.isnan(C_big[:, N + 1:]).all()  # nothing written outside C


# 9. the cell table: reading it loads no Numba, and every row's kernel file has what the row promises

def test_reading_the_cell_table_imports_no_numba():
    import subprocess
    import sys

    code = ("import sys, charlm.config, charlm.kernels as k\n"
            "assert [c.gates for c in k.CELLS.values()] and charlm.config.ModelConfig(cell='gru').states == 1\n"
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", list(CELLS))
def test_every_row_names_its_kernels(name):
    cell = CELLS[name]
    assert CELL_IDS[name] == cell.id and sorted(CELL_IDS.values()) == list(range(len(CELLS)))
    assert len(cell.gate_order) == cell.gates and (cell.states == 2) == ("cs" in cell.cache)
    entries = (["forward", "backward", "feed", "stack_forward", "stack_backward", "stack_state_grads"]
               if cell.feeds_output else ["step", "step_backward", "state_grads"])
    for entry in entries:
        fn = f"{name}_{entry}" if not entry.startswith("stack") else entry
        assert callable(getattr(cell.kernels, fn)), fn


def test_the_losses_exp_is_within_two_ulp_of_numpys_on_the_whole_range():
    """The vectorisable exp of the softmax (kernels/loss.py) against np.exp over [-708, 0]."""
    from charlm.kernels.loss import _exp_nonpos

    row = -np.concatenate([np.linspace(0, 708, 200_001), np.random.default_rng(0).uniform(0, 708, 100_000)])
    e, bits = np.empty(row.size), np.empty(row.size, np.int64)
    _exp_nonpos(row, 0.0, e, bits)
    exact = np.exp(row)
    assert np.max(np.abs(e - exact) / np.spacing(exact)) <= 2.0
