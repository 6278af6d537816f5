"""Freed memory kept in the process once an encoder-decoder is built, so that its passes' large arrays reuse pages."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 64 << 20    # allocations below it come from the heap
TRIM_THRESHOLD = 1 << 30     # free bytes at the heap's top before it is given back
_state: dict = {}


def keep_freed_memory() -> bool:
    """Have glibc serve allocations below 64 MB from the heap and give its free top back to the
    system only past 1 GB; True when it took both (glibc only: elsewhere nothing changes). Why: a
    training step allocates and frees tens of megabytes of arrays, and by default glibc maps the
    largest ones afresh and returns them (and the heap's free top) at each free, so that every
    step faulted in thousands of new zeroed pages, about a seventh of its processor time at the
    default shapes. The process's footprint stays at its peak, which the steps reach anyway.
    Process-wide, and applied once."""
    if "applied" not in _state:
        _state["applied"] = sys.platform.startswith("linux") and _mallopt()
    return _state["applied"]


def _mallopt() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
