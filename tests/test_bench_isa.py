"""``charlm bench --isa avx2``: each side's child is restricted to AVX2 (charlm through Numba's target
and its own cache, PyTorch through its dispatch variables), the FMA limit counts AVX2's lanes and
the table says which instruction set each side ran. The children are stand-ins: nothing is timed."""
import json
import sys

import pytest
from click.testing import CliRunner

from charlm.bench import compare as C
from charlm.bench import host, isa
from charlm.cli import main

HOST = {"avx2": True, "fma": True, "avx512f": True, "avx512bw": True, "sse4.2": True}
CPUINFO = "processor\t: 0\nflags\t\t: sse2 avx avx2 fma avx512f\ncpu MHz\t\t: 2000.000\n"


def _fake_sides(monkeypatch, seen):
    def charlm_side(cfg, python=sys.executable, env=None):
        seen["charlm"] = env
        return {"train": {"chars_per_s": 200.0, "gflops_achieved": 1.0, "fraction_of_peak": 0.01},
                "peak_rss_mb": 10.0, "blas": [{"internal_api": "openblas", "architecture": "Haswell"}],
                "compiled_for": {"cpu": "haswell", "isa": "avx2", "tile": "4x24", "features_given": True}}

    def torch_side(cfg, python=sys.executable, env=None):
        seen["torch"] = env
        return {"train": {"chars_per_s": 100.0}, "peak_rss_mb": 20.0, "env": {"cpu_capability": "AVX2"}}

    monkeypatch.setattr(C, "measure_isolated", charlm_side)
    monkeypatch.setattr(C, "run_torch", torch_side)
    monkeypatch.setattr(C, "check_torch_python", lambda python: None)


def test_isa_avx2_restricts_both_sides_and_says_so(monkeypatch, tmp_path):
    seen = {}
    _fake_sides(monkeypatch, seen)
    monkeypatch.setattr(isa, "host_features", lambda: dict(HOST))
    monkeypatch.setattr(C, "_cpu_flags", lambda: {"avx2", "avx512f"})
    read = host._read
    monkeypatch.setattr(host, "_read", lambda text: read(CPUINFO))  # an AVX-512 host, whatever runs the test
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")  # the table's cells unwrapped
    result = CliRunner().invoke(main, ["bench", "-c", "b", "--isa", "avx2", "--compare", "torch", "--no-sample",
                                       "--clock-ghz", "2"])
    assert result.exit_code == 0, result.output
    env = seen["charlm"]
    assert env["NUMBA_CPU_NAME"] == "haswell" and env["NUMBA_CACHE_DIR"] == str(tmp_path / "numba-avx2")
    assert set(env["NUMBA_CPU_FEATURES"].split(",")) == {"+avx2", "+fma", "-avx512f", "-avx512bw", "+sse4.2"}
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    assert seen["torch"]["ATEN_CPU_CAPABILITY"] == "avx2" and seen["torch"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    res = json.loads(result.stdout.strip().splitlines()[-1])
    assert res["isa"] == "avx2" and res["ratio"]["train"] == 2.0
    assert "avx2 (haswell, tile 4x24)" in result.stderr and "AVX2" in result.stderr
    assert "8 float32 lanes (avx2)" in result.stderr
    assert "warning" not in result.stderr  # OpenBLAS's Haswell kernel is the best AVX2 has


def test_native_runs_each_side_in_the_hosts_own_environment(monkeypatch):
    seen = {}
    _fake_sides(monkeypatch, seen)
    result = CliRunner().invoke(main, ["bench", "-c", "b", "--compare", "torch", "--no-sample"])
    assert result.exit_code == 0, result.output
    assert seen == {"charlm": None, "torch": None}


def test_a_cpu_without_avx2_is_refused_in_one_line(monkeypatch):
    seen = {}
    _fake_sides(monkeypatch, seen)
    monkeypatch.setattr(isa, "host_features", lambda: {"avx": True, "sse4.2": True})
    result = CliRunner().invoke(main, ["bench", "-c", "b", "--isa", "avx2"])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "AVX2" in lines[0] and not seen


def test_isa_is_refused_with_first_run(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc\n")
    result = CliRunner().invoke(main, ["bench", "--first-run", str(text), "--isa", "avx2"])
    assert result.exit_code == 2 and "--isa" in result.stderr


def test_the_limit_follows_the_instruction_set():
    assert host.fma_limit(1, cpuinfo=CPUINFO, cpus=1)["lanes"] == 16
    avx2 = host.fma_limit(1, cpuinfo=CPUINFO, cpus=1, isa="avx2")
    assert (avx2["lanes"], avx2["isa"]) == (8, "avx2")
    assert avx2["gflops"] == pytest.approx(1 * 2 * 8 * 2 * 2.0)


def test_this_process_says_what_it_was_compiled_for():
    from charlm.kernels.tile import MR, PANEL_BYTES, TILE

    rec = isa.compiled_for()
    assert rec["isa"] == TILE.name and rec["tile"] == f"{MR}x{PANEL_BYTES // 4}"
    assert isa.describe(rec).startswith(TILE.name + " (")
