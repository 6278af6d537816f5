"""Validation of a safetensors file before any tensor memory is allocated.

The header is parsed and checked (names, dtypes, shapes against the stored configuration,
offsets inside the file), and charlm's own metadata is type-checked, so a truncated, corrupted
or hostile file is refused in one line instead of making the loader allocate gigabytes or fail
deep inside. ``checkpoint.load_checkpoint`` calls these in order.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import CheckpointError
from ..fsutil import not_a_regular_file

OPTIM_PREFIX = "optimizer."
DTYPES = {"F32": np.float32, "F64": np.float64}
# integer tables, allowed under this prefix only: a classifier's class language models (n-gram keys and
# counts, seqtask/class_lm.py); every weight stays a float
COUNT_PREFIX = "class_lm."
COUNT_DTYPES = {"I64": np.int64, "U64": np.uint64}
_MAX_HEADER = 64 << 20  # a real header is a few KiB; anything huge is hostile or broken


def read_header(path: Path) -> tuple[dict, int]:
    """Parse and sanity-check a safetensors header without reading tensor data.

    Returns (header dict, offset of the data section). Refuses headers or tensors that claim
    more bytes than the file has, so a hostile file cannot make us allocate gigabytes. Sizes
    are computed with Python integers: a crafted shape cannot wrap around int64 to look small.
    """
    problem = not_a_regular_file(path)
    if problem:  # opening a FIFO would block forever; a device could be endless
        raise CheckpointError(f"{path}: {problem}, not a checkpoint file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise CheckpointError(f"{path}: truncated or not a safetensors file "
                                      f"(header claims {n} bytes, file has {size})")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    header = json_or_none(raw)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header")
    data_start, data_size = 8 + n, size - 8 - n
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype") if isinstance(info, dict) else None
        allowed = dtypes_of(name)
        if isinstance(dtype, str) and dtype not in allowed:
            raise CheckpointError(f"{path}: tensor {name[:60]!r} has dtype {dtype[:20]!r}; charlm "
                                  f"checkpoints hold {' or '.join(DTYPES)} only"
                                  + (f" ({' or '.join(COUNT_DTYPES)} in {COUNT_PREFIX}* tables)"
                                     if name.startswith(COUNT_PREFIX) else ""))
        nbytes = _tensor_bytes(info, data_size, allowed)
        if nbytes is None:
            raise CheckpointError(f"{path}: tensor {name[:60]!r} has an invalid dtype, shape or offset "
                                  f"(truncated or hand-crafted file?)")
        total += nbytes
    if total > data_size:
        raise CheckpointError(f"{path}: tensors claim {total} bytes but the file holds {data_size} "
                              f"(truncated or hand-crafted file?)")
    return header, data_start


def dtypes_of(name: str) -> dict:
    """The dtypes a tensor of this name may have."""
    return DTYPES | COUNT_DTYPES if name.startswith(COUNT_PREFIX) else DTYPES


def _tensor_bytes(info, data_size: int, dtypes: dict) -> int | None:
    """Byte size of one header entry if it is well-formed and inside the data section."""
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in dtypes or not isinstance(shape, list) \
            or not isinstance(offsets, list) or len(offsets) != 2 or len(shape) > 8:
        return None
    if not all(type(d) is int and d >= 0 for d in shape + offsets):  # no bools, floats, negatives
        return None
    begin, end = offsets
    nbytes = math.prod(shape) * np.dtype(dtypes[dtype]).itemsize  # exact: no int64 wrap-around
    return nbytes if begin <= end <= data_size and end - begin == nbytes else None


def json_or_none(raw):
    """json.loads, or None for anything that is not valid JSON (including absurd nesting)."""
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError, TypeError, RecursionError):
        return None


# types of the metadata keys charlm itself reads back (None allowed where a value may be unknown)
_META_TYPES = {"train_config": dict, "sources": list, "train_tokens": int, "eos": str, "step": int,
               "best_val_loss": (int, float, type(None)), "val_loss": (int, float, type(None)),
               "optimizer": dict, "schedule": dict, "batcher": dict, "rng": dict, "position": dict,
               "start_state": list, "fingerprint": dict, "init_from": dict}


def check_metadata(path, meta: dict) -> None:
    for key, want in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], want) or isinstance(meta[key], bool)):
            raise CheckpointError(f"{path}: malformed metadata {key!r} (hand-crafted or corrupted file?)")
    if any(not isinstance(s, str) for s in meta.get("sources", [])):
        raise CheckpointError(f"{path}: malformed metadata 'sources' (hand-crafted or corrupted file?)")
    for key in ("step", "train_tokens"):
        if meta.get(key, 0) < 0:
            raise CheckpointError(f"{path}: malformed metadata {key!r} (hand-crafted or corrupted file?)")


def check_start_state(path, value, config: ModelConfig) -> None:
    """The sampler's (L, S, H) start state: a nested list of finite numbers of exactly that shape."""
    shape = (config.layers, config.states, config.hidden)
    try:
        ok = np.asarray(value, dtype=np.float64).shape == shape and np.isfinite(value).all()
    except (ValueError, TypeError, OverflowError, RecursionError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: malformed metadata 'start_state' (expected {shape} finite "
                              "numbers; hand-crafted or corrupted file?)")


def model_tensors(header) -> dict:
    """The header's entries of model weights (not metadata, not optimiser buffers)."""
    return {k: v for k, v in header.items() if k != "__metadata__" and not k.startswith(OPTIM_PREFIX)}


def check_tensors(path, header, expected: dict) -> None:
    """The header's model tensors are exactly ``expected`` (name -> shape), all of one dtype."""
    found = model_tensors(header)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + (
            [f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{path}: tensors do not match the stored configuration: {'; '.join(parts)}")
    dtypes = {found[name]["dtype"] for name in expected}
    if len(dtypes) != 1:
        raise CheckpointError(f"{path}: mixed tensor dtypes {sorted(dtypes)}")
    for name, shape in expected.items():
        if tuple(found[name]["shape"]) != tuple(shape):
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(found[name]['shape'])}, "
                                  f"the configuration needs {tuple(shape)}")


def check_parsed(path, header: dict, arrays: dict) -> None:
    """What the safetensors parser returned must be exactly the tensors the validated ``header``
    describes: a second parser may read a crafted header (duplicate keys, say) differently."""
    for name, a in arrays.items():
        info = header.get(name)
        if not isinstance(info, dict) or list(a.shape) != info["shape"] \
                or a.dtype != np.dtype(dtypes_of(name)[info["dtype"]]):
            raise CheckpointError(f"{path}: tensor {name[:60]!r} does not match its header (hand-crafted file?)")
    if set(arrays) != set(header) - {"__metadata__"}:
        raise CheckpointError(f"{path}: tensors do not match the header (hand-crafted file?)")


def _names(names: list[str]) -> str:
    """A few tensor names for a message (they come from the file: repr keeps them one line)."""
    shown = ", ".join(repr(n[:60]) for n in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
