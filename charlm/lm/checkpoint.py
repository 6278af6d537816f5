"""Run directories and checkpoints: safetensors + JSON metadata, atomic writes, strict loading.

A run directory holds
  model.safetensors   best weights so far (by validation loss): what ``sample``/``eval`` load
  last.safetensors    latest weights + optimiser buffers + the whole training position, for an
                      exact resume. One file, so a crash can never pair weights with the wrong
                      optimiser state (separate optimiser and state files beside the weights
                      would allow it; a single atomic file removes that failure mode).
  metrics.jsonl       one JSON object per logged step / evaluation, for plots

Each .safetensors file is self-describing: its metadata carries ``charlm.format``,
``charlm.config`` (ModelConfig JSON), ``charlm.vocab`` (JSON list of tokens in id order) and
``charlm.tokenizer`` (level and split), so sampling needs no other file. No pickle anywhere:
loading a stranger's file never runs code. The header is parsed and checked before any tensor
memory is allocated (runs/header.py); the metrics log is runs/metrics.py; atomic writes and
directory resolution are fsutil.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import ModelConfig, from_dict, to_dict
from ..data.tokenizer import Tokenizer
from ..errors import CharlmError, CheckpointError
from ..fsutil import atomic_write_bytes, atomic_write_text, remove_temp_files  # noqa: F401 (re-exported)
from ..runs.find import LAST_FILE, MODEL_FILE, refuse_other_task  # noqa: F401 (the names a checkpoint user reads)
from ..runs.header import (
    OPTIM_PREFIX,
    check_metadata,
    check_parsed,
    check_start_state,
    check_tensors,
    model_tensors,
    one_line,
    read_header,
)
from ..runs.metrics import METRICS_FILE, append_metrics, read_metrics, truncate_metrics  # noqa: F401

FORMAT_VERSION = "1"


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temporary files that a killed writer left behind (``.<name>.<random>.tmp``)."""
    remove_temp_files(run_dir, (MODEL_FILE, LAST_FILE, METRICS_FILE))


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
    refuse_other_task(path, meta, ("lm",))
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
    check_metadata(path, extra_meta)
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(tokenizer)} tokens but the model "
                              f"expects {config.vocab_size}")
    names = extra_meta.get("labels", [])   # a labelled model's label vocabulary (lm/labels.py)
    if not (isinstance(names, list) and len(names) == config.labels and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: malformed metadata 'labels' (expected the model's {config.labels} "
                              "label names; hand-crafted or corrupted file?)")
    found = model_tensors(header)
    # A cheap closed-form check first, so that an absurd configuration (layers=10**9) is refused
    # before parameter_shapes builds a list of its tensors.
    if config.layers > len(found):        # (a near miss gets the list of names instead)
        raise CheckpointError(f"{path}: the stored configuration needs {4 * config.layers + 3} tensors, "
                              f"the file has {len(found)}")  # encoder, 4 per layer, decoder
    check_tensors(path, header, expected_tensors(config))
    if "start_state" in extra_meta:
        check_start_state(path, extra_meta["start_state"], config)

    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except Exception as e:  # the library's own parse errors: report, never dump
        raise CheckpointError(f"{path}: unreadable safetensors data ({one_line(str(e))})") from None
    check_parsed(path, header, arrays)
    tensors = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX)}
    extra = {k[len(OPTIM_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    for name, a in arrays.items():  # optimiser buffers too: NaN there poisons a resumed run
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CheckpointError(f"{path}: tensor {name[:60]!r} contains NaN or infinite values")
    return Checkpoint(path, config, tokenizer, tensors, extra, extra_meta)


def expected_tensors(config: ModelConfig) -> dict:
    """Name -> shape of every tensor a model of ``config`` stores (the decoder too when tied)."""
    from .model import parameter_shapes

    expected = dict(parameter_shapes(config))
    if config.tie_weights:
        expected["decoder.weight"] = expected["encoder.weight"]
    return expected


def _meta_json(meta: dict, key: str):
    """The JSON value stored under metadata ``key`` (KeyError if absent, ValueError if invalid)."""
    raw = meta[key]
    if not isinstance(raw, str):
        raise ValueError(key)
    try:
        return json.loads(raw)
    except RecursionError:  # absurdly nested: hostile, not a real checkpoint
        raise ValueError(key) from None


def _pick_file(run_dir: Path) -> Path:
    for name in (MODEL_FILE, LAST_FILE):
        if (run_dir / name).exists():
            return run_dir / name
    raise CheckpointError(f"{run_dir} holds no checkpoint ({MODEL_FILE} or {LAST_FILE})")
