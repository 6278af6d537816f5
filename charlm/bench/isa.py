"""Benchmarks for a smaller instruction set than the host's: what a CPU without AVX-512 would see.

``charlm bench --isa avx2`` measures each side in a child process whose environment restricts it
to AVX2 + FMA (``child_env``):
- charlm: Numba compiles for ``haswell`` with the host's own features minus every AVX-512 one
  (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES; the GEMM tile follows, kernels/tile.py), into a Numba
  cache of its own (a cache dir beside charlm's downloads: the host's cache is neither read nor
  filled), and OpenBLAS runs its Haswell kernels (OPENBLAS_CORETYPE);
- PyTorch: ATen's AVX2 kernels (ATEN_CPU_CAPABILITY), oneDNN up to AVX2 (ONEDNN_MAX_CPU_ISA),
  MKL up to AVX2 (MKL_ENABLE_INSTRUCTIONS), OpenBLAS as above.
Clock, cores and caches stay the host's: the figure is this machine's without AVX-512, not a
laptop's.
"""
from __future__ import annotations

import os

from ..errors import CharlmError

ISAS = ("native", "avx2")
# LLVM's features that need AVX-512 registers or encodings (AMX tiles come with AVX-512 CPUs only)
_WIDE = ("avx512", "avx10", "evex512", "amx")

TORCH_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
              "OPENBLAS_CORETYPE": "Haswell"}


def avx2_features(host: dict[str, bool]) -> str:
    """LLVM's feature string for the host's features (name -> present) with AVX-512 turned off."""
    return ",".join(("+" if on and not name.startswith(_WIDE) else "-") + name for name, on in sorted(host.items()))


def host_features() -> dict[str, bool]:
    import llvmlite.binding as ll

    try:
        return dict(ll.get_host_cpu_features())
    except RuntimeError:  # LLVM cannot read them here: no AVX2 to claim
        return {}


def child_env(isa: str, side: str, features: dict[str, bool] | None = None, cache_dir=None) -> dict | None:
    """The environment of a measuring child for ``side`` ("charlm" or "torch") restricted to ``isa``,
    or None for the host's own (``native``). Refuses a host that cannot run AVX2 + FMA code."""
    if isa == "native":
        return None
    features = host_features() if features is None else features
    if not (features.get("avx2") and features.get("fma")):
        raise CharlmError("--isa avx2 needs a CPU with AVX2 and FMA; this one has not both")
    if side == "torch":
        return dict(os.environ) | TORCH_AVX2
    if cache_dir is None:
        from ..fsutil import resolve_cache_dir

        cache_dir = resolve_cache_dir() / "numba-avx2"
    return dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=avx2_features(features),
                NUMBA_CACHE_DIR=os.fspath(cache_dir), OPENBLAS_CORETYPE="Haswell")


def compiled_for() -> dict:
    """What this process's kernels are compiled for: the CPU name Numba gives LLVM and the GEMM tile."""
    import llvmlite.binding as ll
    from numba.core import config

    from ..kernels.tile import MR, PANEL_BYTES, TILE

    return {"cpu": config.CPU_NAME or ll.get_host_cpu_name(), "isa": TILE.name,
            "tile": f"{MR}x{PANEL_BYTES // 4}", "features_given": config.CPU_FEATURES is not None}


def describe(record: dict | None) -> str:
    """One cell: e.g. "avx2 (haswell, tile 6x16)"."""
    if not record:
        return "-"
    return f"{record['isa']} ({record['cpu']}, tile {record['tile']})"
