"""charlm bench, and every fast path against its serial twin. No timing assertions, ever."""
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.bench import compare as C
from charlm.bench import speed as B
from charlm.kernels import get_cell
from charlm.kernels.embedding import scatter_add_rows
from charlm.kernels.layer import layer_backward, layer_forward
from charlm.kernels.loss import (
    cross_entropy_grad,
    cross_entropy_grad_par,
    cross_entropy_rows,
    cross_entropy_rows_par,
)
from charlm.kernels.parallel import matmul_rows, matmul_rows_bias, matmul_tn, sum_blocks
from serial_cells import SERIAL

TINY = B.BenchConfig(cell="lstm", layers=1, hidden=8, batch=4, seq_len=8, vocab=10, threads=2, warmup=1,
                     steps=2, sample_chars=40, sample_reps=1)
CHUNKS = [1, 2, 3]  # 3 > the 2 threads of CI machines: blocks need not match threads


# 1. the batch-parallel cell kernels equal the serial ones

def _serial_and_parallel(cell, nchunks, tb, mode, dtype, rng, T=5, B_=7, H=6, V=9, I=4):
    """Run one layer both ways. mode "table": layer 0's folded table read by token id (and the
    scatter of its gradient); mode "project": an input x_in (T, B, I) projected inside the kernel
    (and dL/dx_in written in place over dh_out's buffer when I == H)."""
    c = get_cell(cell)
    G, S = c.gates * H, c.states
    I = H if mode == "inplace" else I
    table = rng.standard_normal((V, G)).astype(dtype)
    ids = rng.integers(0, V, (T, B_)).astype(np.int64)
    x_in = rng.standard_normal((T, B_, I)).astype(dtype)
    W_ih = (rng.standard_normal((G, I)) * 0.5).astype(dtype)
    b_ih, b_hh = (rng.standard_normal(G).astype(dtype) * 0.3 for _ in range(2))
    W_hh = (rng.standard_normal((G, H)) * 0.5).astype(dtype)
    s0 = (rng.standard_normal((S, B_, H)) * 0.5).astype(dtype)
    dh_out = rng.standard_normal((T, B_, H)).astype(dtype)
    dsT = rng.standard_normal((S, B_, H)).astype(dtype)
    # serial twin: the reference drivers (tests/serial_cells.py) on xp computed in NumPy
    xp = np.ascontiguousarray((table[ids] if mode == "table" else x_in @ W_ih.T) + b_ih)
    hs, sT, cache = SERIAL[cell].forward(xp, W_hh, b_hh, s0)
    dxp, dW, db, ds0 = SERIAL[cell].backward(dh_out, dsT, W_hh, hs, cache)
    serial = dict(hs=hs, cache=cache, dW=dW, db=db, ds0=ds0, db_ih=dxp.sum((0, 1)))
    if mode == "table":
        dtable = np.zeros((V, G), dtype)
        scatter_add_rows(dtable, ids.reshape(-1), dxp.reshape(-1, G))
        serial["dtable"] = dtable
    else:
        serial["dW_ih"] = dxp.reshape(-1, G).T @ x_in.reshape(-1, I)
        serial["dx"] = dxp @ W_ih
    # parallel: whole layer, projection or gather inside, weight gradients per block of tb steps
    none3 = np.zeros((0, 0, 0), dtype)
    k_x_in, k_table = (none3, table[None]) if mode == "table" else (x_in, none3)
    k_ids = ids if mode == "table" else np.zeros((0, 0), np.int64)
    p_hs = np.empty((T + 1, B_, H), dtype)
    p_ds0 = np.empty((S, B_, H), dtype)
    p_db, p_dbx = np.empty((nchunks, G), dtype), np.empty((nchunks, G), dtype)
    p_dtab = np.empty((nchunks, V, G), dtype) if mode == "table" else none3
    p_dW = np.empty((nchunks, G, H), dtype)
    p_dW_ih = np.empty((nchunks, G, I), dtype) if mode != "table" else np.empty((nchunks, 0, 0), dtype)
    d_out = dh_out.copy()
    p_dx = d_out if mode == "inplace" else np.empty((T, B_, I), dtype) if mode == "project" else none3
    p_cache = {name: np.empty(shape, dtype) for name, shape in c.cache_shapes(T, B_, H).items()}
    cache_args = tuple(a[None] for a in p_cache.values())  # gates, cs, hn of the one direction
    lengths = np.full(B_, T, np.int64)
    layer_forward(c.id, k_x_in, k_table, ids, W_ih[None], b_ih[None], W_hh[None], b_hh[None], s0[None], p_hs[None],
                  *cache_args, none3, lengths, nchunks, tb)
    layer_backward(c.id, d_out, dsT[None], W_hh[None], p_hs[None], *cache_args, k_x_in, W_ih[None], k_ids, p_dW,
                   p_dW_ih, p_db, p_dbx, p_dtab, p_dx[None], p_ds0[None], np.zeros((0, 0, 0, 0), dtype), lengths,
                   nchunks, tb)
    p_cache = tuple(p_cache[name] for name in c.cache)
    parallel = dict(hs=p_hs, cache=p_cache, dW=p_dW.sum(0), db=p_db.sum(0), ds0=p_ds0, db_ih=p_dbx.sum(0))
    if mode == "table":
        parallel["dtable"] = np.empty((V, G), dtype)
        sum_blocks(p_dtab, parallel["dtable"])
    else:
        parallel["dW_ih"] = np.empty((G, I), dtype)
        sum_blocks(p_dW_ih, parallel["dW_ih"])
        parallel["dx"] = p_dx
    return serial, parallel


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("nchunks", CHUNKS)
@pytest.mark.parametrize("mode", ["table", "project", "inplace"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_parallel_cell_kernels_agree_with_serial(cell, nchunks, mode, dtype, tol):
    # tb = nchunks: blocks of 1, 2 and 3 steps over T = 5 (so the last block is partial)
    serial, parallel = _serial_and_parallel(cell, nchunks, nchunks, mode, dtype, np.random.default_rng(3))
    assert serial.keys() == parallel.keys()
    for key in serial:
        if key == "cache":
            for a, b in zip(serial[key], parallel[key]):
                np.testing.assert_allclose(b, a, rtol=tol, atol=tol, err_msg=key)
            continue
        np.testing.assert_allclose(parallel[key], serial[key], rtol=tol, atol=tol, err_msg=key)


# 2. the split GEMMs, reductions and the loss equal their NumPy / serial twins

@pytest.mark.parametrize("nchunks", CHUNKS)
def test_parallel_matmuls_agree_with_numpy(nchunks):
    rng = np.random.default_rng(4)
    A, W, b = rng.standard_normal((11, 5)), rng.standard_normal((7, 5)), rng.standard_normal(7)
    out = np.empty((11, 7))
    matmul_rows(A, W.T, out, nchunks)  # a transposed (F-contiguous) weight, as the model passes it
    np.testing.assert_allclose(out, A @ W.T, rtol=1e-13)
    matmul_rows_bias(A, W.T, b, out, nchunks)
    np.testing.assert_allclose(out, A @ W.T + b, rtol=1e-13)
    C = rng.standard_normal((11, 4))
    tn = np.empty((5, 4))
    matmul_tn(A, C, tn, np.empty((max(nchunks - 1, 0), 5, 4)), nchunks)
    np.testing.assert_allclose(tn, A.T @ C, rtol=1e-12)
    parts = rng.standard_normal((nchunks, 6, 3))
    total = np.empty((6, 3))
    sum_blocks(parts, total)
    np.testing.assert_allclose(total, parts.sum(0), rtol=1e-13)


@pytest.mark.parametrize("nchunks", CHUNKS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parallel_loss_agrees_with_serial(nchunks, dtype):
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((13, 9)) * 3).astype(dtype)
    targets = rng.integers(0, 9, 13)
    a, b = logits.copy(), logits.copy()
    total = cross_entropy_grad(a, targets, 1 / 13)
    db = np.empty(9, dtype)
    total_par = cross_entropy_grad_par(b, targets, 1 / 13, db, nchunks)
    assert total_par == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, a.sum(0), rtol=1e-5, atol=1e-6)
    nll, nll_par = np.empty(13), np.empty(13)
    cross_entropy_rows(logits, targets, nll)
    cross_entropy_rows_par(logits, targets, nll_par, nchunks)
    np.testing.assert_allclose(nll_par, nll, rtol=1e-12)
    with pytest.raises(IndexError):
        cross_entropy_grad_par(logits.copy(), np.full(13, 9), 1.0, db, nchunks)


# 3. the model: any number of blocks gives the same loss, gradients and state

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("V", [5, 40])  # folded table (V <= T*B) and gathered embeddings
def test_model_is_the_same_for_any_thread_count(cell, V, monkeypatch):
    import charlm.runtime as rt
    from charlm.config import ModelConfig
    from charlm.lm.model import Model

    cfg = ModelConfig(cell=cell, vocab_size=V, embed=6, hidden=7, layers=2)
    model = Model(cfg, np.float64).init_weights(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (5, 4)), rng.integers(0, V, (5, 4))
    state = model.init_state(4) + 0.1
    results = []
    for n in CHUNKS:
        monkeypatch.setattr(rt, "_chunks", n)
        loss, new_state = model.loss_and_grad(x, y, state)
        nll, _ = model.token_nll(x, y, state)
        results.append((loss, new_state.copy(), model.grad_flat.copy(), nll))
    for loss, new_state, grad, nll in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-12)
        np.testing.assert_allclose(new_state, results[0][1], rtol=1e-12)
        np.testing.assert_allclose(grad, results[0][2], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(nll, results[0][3], rtol=1e-12)


# 4. charlm bench: the documented fields, one JSON line per configuration, the comparison

TRAIN_FIELDS = {"chars_per_s", "step_s_median", "step_s_min", "step_s_max", "chars_per_step", "gflops_achieved",
                "fraction_of_peak", "loss_first", "loss_last", "first_step_s"}
SAMPLE_FIELDS = {"chars_per_s", "chars_per_s_runs", "chars_per_run", "gflops_achieved", "bound_chars_per_s",
                 "fraction_of_bound"}


def test_measure_emits_the_documented_fields():
    res = B.measure(TINY)
    assert {"peak_rss_mb", "flops_per_char_fwd", "flops_per_char_train", "compile_s", "blas", "train", "sample",
            "config", "params"} <= set(res)
    assert TRAIN_FIELDS <= set(res["train"]) and SAMPLE_FIELDS <= set(res["sample"])
    assert res["train"]["chars_per_step"] == TINY.batch * TINY.seq_len
    assert res["train"]["chars_per_s"] > 0 and res["sample"]["chars_per_s"] > 0 and res["peak_rss_mb"] > 0
    assert res["flops_per_char_fwd"] == 2 * 4 * 8 * (10 + 8) + 2 * 8 * 10  # torch_baseline's count, one-hot width
    assert res["blas"] and all("architecture" in d for d in res["blas"])
    json.dumps(res)


def _fake_baseline(tmp_path):
    """A stand-in for torch_baseline.py: same flags, same JSON shape, no torch."""
    script = tmp_path / "fake_baseline.py"
    script.write_text(
        "import json, sys\n"
        "assert '--cell' in sys.argv and '--seq' in sys.argv and '--threads' in sys.argv\n"
        "print(json.dumps({'bench': 'torch_baseline', 'train': {'chars_per_s': 100.0},\n"
        "                  'sample': {'chars_per_s': 10.0}, 'sample_mkldnn_off': {'chars_per_s': 20.0},\n"
        "                  'peak_rss_mb': 1000.0, 'env': {'cpu_capability': 'AVX512'}}))\n")
    return script


def test_cli_bench_custom_config_with_comparison(tmp_path):
    from charlm.cli import main

    args = ["bench", "--cell", "gru", "--layers", "1", "--hidden", "8", "--batch", "4", "--seq-len", "8",
            "--vocab", "10", "--steps", "1", "--warmup", "0", "--sample-chars", "20", "--threads", "1",
            "--compare-torch", "--torch-baseline", str(_fake_baseline(tmp_path)), "--repeat", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["config"]["cell"] == "gru" and res["config"]["threads"] == 1
    assert res["torch"]["sample_chars_per_s"] == 20.0  # PyTorch's faster sampling path is the one compared
    # ratios are rounded to 3 decimals: on a loaded machine the tiny model's ratio can be below 1
    assert res["ratio"]["train"] == pytest.approx(res["train"]["chars_per_s"] / 100.0, rel=1e-3, abs=5e-4)
    assert len(res["train"]["chars_per_s_repeats"]) == 2
    assert "PyTorch" in result.stderr and "ratio" in result.stderr


def test_cli_bench_rejects_bad_combinations(tmp_path):
    from charlm.cli import main

    result = CliRunner().invoke(main, ["bench", "-c", "a", "--hidden", "8"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["bench", "--compare-torch", "--torch-baseline", str(tmp_path / "none.py")])
    assert result.exit_code == 2 and "baseline" in result.stderr


def test_blas_warning_names_a_slow_kernel(monkeypatch):
    monkeypatch.setattr(C, "_cpu_flags", lambda: {"avx2", "avx512f"})
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    msg = C.blas_warning([{"internal_api": "openblas", "architecture": "Haswell"}])
    assert "Haswell" in msg and "AVX-512" in msg and "OPENBLAS_CORETYPE" in msg
    assert C.blas_warning([{"internal_api": "openblas", "architecture": "SkylakeX"}]) is None
    monkeypatch.setattr(C, "_cpu_flags", lambda: {"avx2"})
    assert C.blas_warning([{"internal_api": "openblas", "architecture": "Haswell"}]) is None


def test_median_result_and_ratios():
    runs = [{"train": {"chars_per_s": v}, "sample": {"chars_per_s": 2 * v}, "peak_rss_mb": 10.0 + v}
            for v in (3.0, 1.0, 2.0)]
    med = C.median_result(runs)
    assert med["train"]["chars_per_s"] == 2.0 and med["sample"]["chars_per_s"] == 4.0
    assert med["peak_rss_mb"] == 12.0
    torch = {"train": {"chars_per_s": 1.0}, "sample": {"chars_per_s": 1.0}, "sample_mkldnn_off": {"chars_per_s": 2.0},
             "peak_rss_mb": 24.0}
    assert C.ratios(med, torch) == {"train": 2.0, "sample": 2.0, "peak_rss": 0.5}


def test_standard_configurations_and_their_flop_count():
    assert [(c.cell, c.layers, c.hidden, c.batch, c.seq_len, c.vocab) for c in B.STANDARD.values()] == [
        ("lstm", 1, 128, 32, 64, 65), ("lstm", 2, 256, 64, 128, 65), ("lstm", 2, 512, 64, 128, 65),
        ("gru", 2, 512, 64, 128, 65), ("rnn", 1, 512, 64, 128, 65)]
    # per character: each layer's input and recurrent products (2 FLOPs per weight), then the decoder;
    # the gate count comes from the cell table
    H, V, E = 8, 5, 3
    assert B.flops_per_char("gru", 2, H, V, E) == 2 * 3 * H * (E + H) + 2 * 3 * H * (H + H) + 2 * H * V
    assert B.flops_per_char("lstm", 1, H, V, E) == 2 * 4 * H * (E + H) + 2 * H * V
    assert B.flops_per_char("rnn", 1, H, V, E) == 2 * H * (E + H) + 2 * H * V


# 5. the fused optimiser passes equal the NumPy ones

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_adam_and_norm_equal_numpy(dtype):
    from charlm import optim

    n = optim._FUSED_MIN + 7  # large enough for the fused path
    rng = np.random.default_rng(12)
    p0 = rng.standard_normal(n).astype(dtype)
    fused, ref = optim.Adam(n, dtype), optim.Adam(n, dtype)
    ref._tmp = np.empty(n, dtype)
    pa, pb = p0.copy(), p0.copy()
    for t in range(5):
        g = rng.standard_normal(n).astype(dtype)
        fused.step(pa, g.copy(), 1e-2)
        ref.t += 1
        ref._update_numpy(pb, g.copy(), 1e-2)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(pa, pb, rtol=tol, atol=tol)
    for key in ("m", "v"):
        np.testing.assert_allclose(fused.state[key], ref.state[key], rtol=tol, atol=tol)
    g = rng.standard_normal(n).astype(dtype)
    assert optim._sum_squares(g) == pytest.approx(float(np.sum(g.astype(np.float64) ** 2)), rel=1e-12)
    before = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    assert optim.clip_grad_norm(g, 1.0) == pytest.approx(before, rel=1e-12)
    assert float(np.linalg.norm(g.astype(np.float64))) == pytest.approx(1.0, rel=1e-5)
