"""The GEMM register tile of every instruction set (kernels/tile.py) against np.dot: each tile built
in this process, and the tile Numba's target selects in a fresh process compiled for AVX2 only or
for a generic x86-64, on an empty cache."""
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from charlm.bench.isa import avx2_features, host_features
from charlm.kernels import tile as T

SHAPES = [(1, 1, 1), (5, 1, 17), (7, 5, 3), (9, 37, 65), (13, 3, 31), (25, 64, 48), (32, 19, 100)]
TILES = sorted({T.choose(64, True), T.choose(32, True), T.choose(32, False), T.choose(16, True),
                T.choose(16, False)})


def check(kernels, dtype, shapes=SHAPES):
    """matmul_packed (both packings, strided rows, nothing written outside C) and matmul_rec
    against a float64 product; rows not a multiple of MR, a partial last panel, K = 1."""
    from charlm.runtime import kernel_threads

    kernel_threads()  # SciPy's BLAS loaded: matmul_rec takes it for fewer rows than half a tile
    MR = kernels.MR
    for M, K, N in shapes:
        rng = np.random.default_rng(M * 1000 + K * 10 + N)
        A = rng.standard_normal((M, K + 5)).astype(dtype)[:, 2:2 + K]  # row stride K + 5
        W = rng.standard_normal((K, N)).astype(dtype)
        ref = A.astype(np.float64) @ W.astype(np.float64)
        tol = 1e-5 * K if dtype == np.float32 else 1e-12 * K
        for transposed in (True, False):
            P = kernels.pack_panels(np.ascontiguousarray(W.T) if transposed else W, transposed)
            NR = kernels.panel_width(W)
            assert P.shape == (-(-N // NR), K, NR)
            C_big = np.full((M, N + 3), np.nan, dtype)
            C = C_big[:, 1:1 + N]
            kernels.matmul_packed(A, P, C, np.empty((MR, NR), dtype))
            np.testing.assert_allclose(C, ref, rtol=tol, atol=tol, err_msg=f"{M}x{K}x{N} transposed={transposed}")
            assert np.isnan(C_big[:, 0]).all() and np.isnan(C_big[:, N + 1:]).all()
            C2 = np.empty((M, N), dtype)
            kernels.matmul_rec(A, P, np.ascontiguousarray(W.T) if transposed else W, transposed, C2,
                               np.empty((MR, NR), dtype))
            np.testing.assert_allclose(C2, ref, rtol=tol, atol=tol)


def test_the_tile_follows_the_vector_registers():
    assert T.choose(64, True)[1:] == (64, 8, 2, True)    # AVX-512: 16 of 32 zmm registers
    assert T.choose(32, True)[1:] == (32, 4, 3, True)    # AVX2: 12 of 16 ymm registers
    assert T.choose(32, False)[:4] == ("avx", 32, 4, 2) and not T.choose(32, False).fma
    assert T.choose(16, False)[1:] == (16, 4, 2, False)
    assert T.TILE == T.choose(*T.target_isa()) and T.MR == T.TILE.rows
    assert T.PANEL_BYTES == T.TILE.vector_bytes * T.TILE.vectors


@pytest.mark.skipif(T.numba.config.DISABLE_JIT, reason="the tiles are compiled code")
@pytest.mark.parametrize("tile", TILES, ids=lambda t: f"{t.name}-{t.rows}x{t.vectors}-{'fma' if t.fma else 'mul'}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_tile_matches_numpy(tile, dtype):
    kernels = T.build(tile)
    assert kernels.panel_width(np.zeros(1, dtype)) * np.dtype(dtype).itemsize == tile.vector_bytes * tile.vectors
    check(kernels, dtype)


CHILD = """
import json, numpy as np, sys
sys.path.insert(0, {tests!r})
from test_tile import check
from charlm.kernels import tile
check(tile, np.float32)
check(tile, np.float64)
print(json.dumps(tile.TILE._asdict()))
"""


def _child(env_extra, tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), **env_extra)
    env.pop("NUMBA_DISABLE_JIT", None)
    code = CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compiled_for_avx2_only_the_avx2_tile_is_chosen_and_right(tmp_path):
    """What ``charlm bench --isa avx2`` compiles: haswell with the host's features minus AVX-512."""
    features = host_features()
    if not (features.get("avx2") and features.get("fma")):
        pytest.skip("this CPU cannot run AVX2 + FMA code")
    chosen = _child({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": avx2_features(features)}, tmp_path)
    assert (chosen["name"], chosen["vector_bytes"], chosen["rows"], chosen["vectors"], chosen["fma"]) == (
        "avx2", 32, 4, 3, True)


def test_compiled_for_a_generic_x86_64_the_plain_tile_is_chosen_and_right(tmp_path):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    chosen = _child({"NUMBA_CPU_NAME": "generic"}, tmp_path)   # SSE2, no FMA instruction
    assert (chosen["name"], chosen["vector_bytes"], chosen["fma"]) == ("plain", 16, False)


def test_avx2_features_turn_every_avx512_feature_off():
    s = avx2_features({"avx2": True, "fma": True, "avx512f": True, "avx512vl": True, "evex512": True,
                       "amx-tile": True, "sse2": True, "avxvnni": False})
    assert s.split(",") == ["-amx-tile", "+avx2", "-avx512f", "-avx512vl", "-avxvnni", "-evex512", "+fma", "+sse2"]
