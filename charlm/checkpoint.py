"""Run directories and checkpoints: safetensors + JSON metadata, atomic writes, strict loading.

A run directory holds
  model.safetensors   best weights so far (by validation loss): what ``sample``/``eval`` load
  last.safetensors    latest weights + optimiser buffers + the whole training position, for an
                      exact resume. One file, so a crash can never pair weights with the wrong
                      optimiser state (DESIGN.md sketched optimizer.safetensors + state.json
                      beside the weights; a single atomic file removes that failure mode).
  metrics.jsonl       one JSON object per logged step / evaluation, for plots

Each .safetensors file is self-describing: its metadata carries ``charlm.format``,
``charlm.config`` (ModelConfig JSON), ``charlm.vocab`` (JSON list of tokens in id order) and
``charlm.tokenizer`` (level and split), so sampling needs no other file. No pickle anywhere:
loading a stranger's file never runs code. The header is parsed and checked (names, dtypes,
shapes against the stored configuration, offsets inside the file) before any tensor memory
is allocated.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .config import ModelConfig, from_dict, to_dict
from .errors import CheckpointError, CharlmError
from .tokenizer import Tokenizer

FORMAT_VERSION = "1"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
METRICS_FILE = "metrics.jsonl"
OPTIM_PREFIX = "optimizer."
_DTYPES = {"F32": np.float32, "F64": np.float64}
_MAX_HEADER = 64 << 20  # a real header is a few KiB; anything huge is hostile or broken


# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one.

    Temporary file in the same directory, fsync, rename over the target, fsync the directory.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temporary files that a killed writer left behind (``.<name>.<random>.tmp``)."""
    for name in (MODEL_FILE, LAST_FILE, METRICS_FILE):
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# saving


def save_checkpoint(path, config: ModelConfig, tokenizer: Tokenizer, tensors: dict[str, np.ndarray],
                    *, extra_tensors: dict[str, np.ndarray] | None = None,
                    metadata: dict[str, object] | None = None) -> None:
    """Atomically write weights (PyTorch names) and metadata to one .safetensors file.

    ``extra_tensors`` (optimiser buffers) are stored under ``optimizer.<name>``; ``metadata``
    values are JSON-encoded under ``charlm.<key>``.
    """
    from safetensors.numpy import save

    meta = {
        "charlm.format": FORMAT_VERSION,
        "charlm.version": __version__,
        "charlm.config": json.dumps(to_dict(config)),
        "charlm.vocab": json.dumps(tokenizer.tokens, ensure_ascii=False),
        "charlm.tokenizer": json.dumps({"level": tokenizer.level, "split": tokenizer.split}),
    }
    for key, value in (metadata or {}).items():
        meta[f"charlm.{key}"] = json.dumps(value)
    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    for name, a in (extra_tensors or {}).items():
        arrays[OPTIM_PREFIX + name] = np.ascontiguousarray(a)
    atomic_write_bytes(Path(path), save(arrays, metadata=meta))


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class Checkpoint:
    """What a checkpoint file holds, validated."""

    path: Path
    config: ModelConfig
    tokenizer: Tokenizer
    tensors: dict[str, np.ndarray]          # PyTorch-named weights
    extra: dict[str, np.ndarray]            # optimiser buffers (last.safetensors only)
    metadata: dict[str, object]             # decoded charlm.* metadata beyond config/vocab

    @property
    def dtype(self):
        return self.tensors["encoder.weight"].dtype

    def build_model(self, dtype=None):
        """A ``Model`` holding these weights (float32 unless asked otherwise)."""
        from .model import Model

        model = Model(self.config, dtype=dtype or self.dtype)
        model.load_state_dict(self.tensors)
        return model


def read_header(path: Path) -> tuple[dict, int]:
    """Parse and sanity-check a safetensors header without reading tensor data.

    Returns (header dict, offset of the data section). Refuses headers or tensors that claim
    more bytes than the file has, so a hostile file cannot make us allocate gigabytes. Sizes
    are computed with Python integers: a crafted shape cannot wrap around int64 to look small.
    """
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
    header = _json_or_none(raw)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header")
    data_start, data_size = 8 + n, size - 8 - n
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if isinstance(dtype, str) and dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name[:60]!r} has dtype {dtype[:20]!r}; charlm "
                                  f"checkpoints hold {' or '.join(_DTYPES)} only")
        nbytes = _tensor_bytes(info, data_size)
        if nbytes is None:
            raise CheckpointError(f"{path}: tensor {name[:60]!r} has an invalid dtype, shape or offset "
                                  f"(truncated or hand-crafted file?)")
        total += nbytes
    if total > data_size:
        raise CheckpointError(f"{path}: tensors claim {total} bytes but the file holds {data_size} "
                              f"(truncated or hand-crafted file?)")
    return header, data_start


def _tensor_bytes(info, data_size: int) -> int | None:
    """Byte size of one header entry if it is well-formed and inside the data section."""
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES or not isinstance(shape, list) \
            or not isinstance(offsets, list) or len(offsets) != 2 or len(shape) > 8:
        return None
    if not all(type(d) is int and d >= 0 for d in shape + offsets):  # no bools, floats, negatives
        return None
    begin, end = offsets
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize  # exact: no int64 wrap-around
    return nbytes if begin <= end <= data_size and end - begin == nbytes else None


def _json_or_none(raw):
    """json.loads, or None for anything that is not valid JSON (including absurd nesting)."""
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError, TypeError, RecursionError):
        return None


def load_checkpoint(path) -> Checkpoint:
    """Load and validate a checkpoint file, or a run directory (its best model)."""
    path = Path(path)
    if path.is_dir():
        path = _pick_file(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    header, data_start = read_header(path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("charlm.format") is None:
        raise CheckpointError(f"{path}: not a charlm checkpoint (no charlm metadata)")
    if meta["charlm.format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {str(meta['charlm.format'])[:20]!r} is not "
                              f"supported by charlm {__version__} (expects {FORMAT_VERSION})")
    try:
        config = from_dict(ModelConfig, _meta_json(meta, "charlm.config")).validate()
        tok_info = _meta_json(meta, "charlm.tokenizer")
        tokenizer = Tokenizer.from_dict({"level": tok_info["level"], "split": tok_info["split"],
                                         "tokens": _meta_json(meta, "charlm.vocab")})
        extra_meta = {k[len("charlm."):]: _meta_json(meta, k) for k in meta
                      if k.startswith("charlm.") and k not in
                      ("charlm.format", "charlm.config", "charlm.vocab", "charlm.tokenizer", "charlm.version")}
    except CharlmError as e:  # names come from the file: keep the message one short line
        raise CheckpointError(f"{path}: bad metadata: {one_line(str(e))}") from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{path}: missing or malformed charlm metadata") from None
    _check_metadata(path, extra_meta)
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(tokenizer)} tokens but the model "
                              f"expects {config.vocab_size}")
    _check_tensors(path, header, config)
    if "start_state" in extra_meta:
        _check_start_state(path, extra_meta["start_state"], config)

    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except Exception as e:  # the library's own parse errors: report, never dump
        raise CheckpointError(f"{path}: unreadable safetensors data ({one_line(str(e))})") from None
    # What the safetensors parser returned must be exactly what we validated (a second parser
    # may read a crafted header, e.g. duplicate keys, differently).
    for name, a in arrays.items():
        info = header.get(name)
        if not isinstance(info, dict) or list(a.shape) != info["shape"] \
                or a.dtype != np.dtype(_DTYPES[info["dtype"]]):
            raise CheckpointError(f"{path}: tensor {name[:60]!r} does not match its header (hand-crafted file?)")
    if set(arrays) != set(header) - {"__metadata__"}:
        raise CheckpointError(f"{path}: tensors do not match the header (hand-crafted file?)")
    tensors = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX)}
    extra = {k[len(OPTIM_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    for name, a in arrays.items():  # optimiser buffers too: NaN there poisons a resumed run
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CheckpointError(f"{path}: tensor {name[:60]!r} contains NaN or infinite values")
    return Checkpoint(path, config, tokenizer, tensors, extra, extra_meta)


def _meta_json(meta: dict, key: str):
    """The JSON value stored under metadata ``key`` (KeyError if absent, ValueError if invalid)."""
    raw = meta[key]
    if not isinstance(raw, str):
        raise ValueError(key)
    try:
        return json.loads(raw)
    except RecursionError:  # absurdly nested: hostile, not a real checkpoint
        raise ValueError(key) from None


# types of the metadata keys charlm itself reads back (None allowed where a value may be unknown)
_META_TYPES = {"train_config": dict, "sources": list, "train_tokens": int, "eos": str, "step": int,
               "best_val_loss": (int, float, type(None)), "val_loss": (int, float, type(None)),
               "optimizer": dict, "schedule": dict, "batcher": dict, "rng": dict, "position": dict,
               "start_state": list}


def _check_metadata(path, meta: dict) -> None:
    for key, want in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], want) or isinstance(meta[key], bool)):
            raise CheckpointError(f"{path}: malformed metadata {key!r} (hand-crafted or corrupted file?)")
    if any(not isinstance(s, str) for s in meta.get("sources", [])):
        raise CheckpointError(f"{path}: malformed metadata 'sources' (hand-crafted or corrupted file?)")
    for key in ("step", "train_tokens"):
        if meta.get(key, 0) < 0:
            raise CheckpointError(f"{path}: malformed metadata {key!r} (hand-crafted or corrupted file?)")


def _check_start_state(path, value, config: ModelConfig) -> None:
    """The sampler's (L, S, H) start state: a nested list of finite numbers of exactly that shape."""
    shape = (config.layers, config.states, config.hidden)
    try:
        ok = np.asarray(value, dtype=np.float64).shape == shape and np.isfinite(value).all()
    except (ValueError, TypeError, OverflowError, RecursionError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: malformed metadata 'start_state' (expected {shape} finite "
                              "numbers; hand-crafted or corrupted file?)")


def _check_tensors(path, header, config: ModelConfig) -> None:
    from .model import parameter_shapes

    found = {k: v for k, v in header.items() if k != "__metadata__" and not k.startswith(OPTIM_PREFIX)}
    # Cheap closed-form checks first, so that an absurd configuration (layers=10**9) is refused
    # before parameter_shapes builds a list of its tensors.
    n_expected = 4 * config.layers + 3  # encoder, 4 per layer, decoder (saved twice when tied)
    if config.layers > len(found):        # (a near miss gets the list of names below instead)
        raise CheckpointError(f"{path}: the stored configuration needs {n_expected} tensors, "
                              f"the file has {len(found)}")
    expected = dict(parameter_shapes(config))
    if config.tie_weights:
        expected["decoder.weight"] = expected["encoder.weight"]
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


def _names(names: list[str]) -> str:
    """A few tensor names for a message (they come from the file: repr keeps them one line)."""
    shown = ", ".join(repr(n[:60]) for n in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _pick_file(run_dir: Path) -> Path:
    for name in (MODEL_FILE, LAST_FILE):
        if (run_dir / name).exists():
            return run_dir / name
    raise CheckpointError(f"{run_dir} holds no checkpoint ({MODEL_FILE} or {LAST_FILE})")


# ---------------------------------------------------------------------------------------------
# metrics log


def append_metrics(run_dir: Path, *records: dict) -> None:
    """Append one JSON line per record in one write, flushed and fsynced (the training loop
    buffers step records and calls this at checkpoints: a crash loses at most those lines)."""
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path, *, up_to_step: int | None = None) -> list[dict]:
    """Metrics records (a torn last line from a crash is skipped)."""
    records = []
    try:
        with open(Path(run_dir) / METRICS_FILE, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and (up_to_step is None or rec.get("step", 0) <= up_to_step):
                    records.append(rec)
    except FileNotFoundError:
        pass
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop records logged after the checkpoint we resume from."""
    records = read_metrics(run_dir, up_to_step=step)
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))
