"""The host's float32 FMA limit: cores x FMA units x SIMD lanes x 2 FLOPs x clock, and how each was found.

- cores: the CPUs this process may run on (``os.sched_getaffinity``), divided by the hardware
  threads per core when /proc/cpuinfo says (``siblings`` / ``cpu cores``), at most the threads the
  measurement uses: a run on 2 threads is held to the limit of 2 cores;
- SIMD lanes of float32: 16 with ``avx512f`` among /proc/cpuinfo's flags, 8 with ``avx2`` or
  ``avx``, else 4 (SSE); 8 when the measurement is restricted to AVX2 (``charlm bench --isa avx2``,
  bench/isa.py) or NUMBA_CPU_FEATURES turns AVX-512 off (``-avx512f``): the limit of the
  instruction set the kernels are compiled for, not of the host;
- FMA units per core: not visible to software, so an assumption, printed with the limit: 2 by
  default (two 512-bit FMA pipes: Intel server cores since Skylake-SP, AMD Zen 5; client parts
  with AVX-512 and Zen 4 have the equivalent of one, where the real limit is half the figure);
  ``charlm bench --fma-units`` changes it;
- 2 FLOPs per lane per FMA (a multiply and an add);
- clock: /proc/cpuinfo's ``cpu MHz`` (the highest over the CPUs; on a virtual machine the nominal
  clock), else cpufreq's maximum; ``--clock-ghz`` overrides it. Turbo and AVX-512 clock offsets
  are not modelled.
"""
from __future__ import annotations

import os
import resource

FMA_UNITS = 2   # assumed FMA units per core (module docstring)


def fma_limit(threads: int, fma_units: int = FMA_UNITS, clock_ghz: float = 0.0, cpuinfo: str | None = None,
              cpus: int | None = None, isa: str = "native") -> dict:
    """The limit in GFLOP/s and the factors it is made of, each with where it came from
    (``cpuinfo``: /proc/cpuinfo's text, ``cpus``: the CPUs usable, both read from the host unless
    given; ``isa``: "avx2" holds the lanes to AVX2's)."""
    info = _read(cpuinfo)
    flags = set(_first(info, "flags").split())
    if isa == "avx2" or "-avx512f" in os.environ.get("NUMBA_CPU_FEATURES", ""):
        flags.discard("avx512f")
    logical = cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    siblings, per_core = _int(_first(info, "siblings")), _int(_first(info, "cpu cores"))
    smt = siblings // per_core if siblings and per_core and siblings >= per_core else 1
    cores = max(1, min(threads or logical, logical // smt))
    lanes, isa = (16, "avx512f") if "avx512f" in flags else (8, "avx2") if "avx2" in flags else \
        (8, "avx") if "avx" in flags else (4, "sse")
    clock_src = "given"
    if not clock_ghz:
        clock_ghz, clock_src = _clock(info)
    gflops = cores * fma_units * lanes * 2 * clock_ghz
    return {"gflops": round(gflops, 1), "cores": cores, "fma_units": fma_units, "lanes": lanes, "isa": isa,
            "clock_ghz": round(clock_ghz, 3), "clock_source": clock_src, "smt": smt,
            "fma": "fma" in flags or "avx512f" in flags}


def describe(limit: dict) -> str:
    """One line: the product and where each factor came from."""
    return (f"FMA limit {limit['gflops']:,.0f} GFLOP/s = {limit['cores']} cores x {limit['fma_units']} FMA units "
            f"(assumed; --fma-units) x {limit['lanes']} float32 lanes ({limit['isa']}) x 2 x "
            f"{limit['clock_ghz']:.2f} GHz ({limit['clock_source']})")


def _read(text: str | None) -> list[tuple[str, str]]:
    if text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
    pairs = []
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def _first(info, key: str) -> str:
    return next((v for k, v in info if k == key), "")


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _clock(info) -> tuple[float, str]:
    mhz = [float(v) for k, v in info if k == "cpu MHz" and v.replace(".", "", 1).isdigit()]
    if mhz:
        return max(mhz) / 1000.0, "cpu MHz in /proc/cpuinfo"
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read().strip()) / 1e6, "cpufreq maximum"
    except (OSError, ValueError):
        return 0.0, "unknown: give --clock-ghz"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
