"""Classifier and tagger checkpoints: safetensors with the configuration, vocabulary and label list
in the metadata (``charlm.task``, ``charlm.seq_config``, ``charlm.vocab``, ``charlm.tokenizer``,
``charlm.labels``), written atomically and read back strictly: the header is checked before any
tensor is read, and names and shapes must be exactly those of the stored configuration.

Tensors carry PyTorch's names, so the weights load with ``strict=True`` into nn.Embedding +
nn.LSTM/GRU/RNN(bidirectional=...) + nn.Linear (see ``torch_module`` in the tests).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import from_dict
from ..data.tokenizer import Tokenizer
from ..errors import CharlmError, CheckpointError
from ..fsutil import atomic_write_bytes
from ..runs.find import LAST_FILE, MODEL_FILE, refuse_other_task  # noqa: F401 (LAST_FILE: read by users)
from ..runs.header import COUNT_PREFIX, check_parsed, one_line, read_header
from .config import SeqModelConfig

FORMAT = "1"
STATE_PREFIX = "optimizer."


@dataclass
class SeqCheckpoint:
    path: Path
    config: SeqModelConfig
    tokenizer: Tokenizer
    labels: list
    tensors: dict
    extra: dict           # optimiser buffers (last.safetensors)
    metadata: dict        # everything else stored under charlm.*
    class_lms: object = None   # class_lm.ClassLM, with ``class_lm`` in the configuration
    fusion: object = None      # fusion.Weights the class language models were pooled with

    def build_model(self, dtype=np.float32):
        """The model, pooled with its class language models when it has them (fusion.Pooled)."""
        from .ensemble import build_model

        model = build_model(self.config, dtype)
        model.load_state_dict(self.tensors)
        if self.class_lms is not None:
            from .fusion import Pooled

            return Pooled(model, self.class_lms, self.fusion)
        return model


def save(path, config: SeqModelConfig, tokenizer: Tokenizer, labels: list, tensors: dict, *,
         extra: dict | None = None, metadata: dict | None = None) -> Path:
    meta = {"charlm.format": FORMAT, "charlm.task": config.task,
            "charlm.seq_config": json.dumps(dataclasses.asdict(config)),
            "charlm.vocab": json.dumps(tokenizer.tokens, ensure_ascii=False),
            "charlm.tokenizer": json.dumps({"level": tokenizer.level, "split": tokenizer.split}),
            "charlm.labels": json.dumps(list(labels), ensure_ascii=False)}
    return write(path, meta, tensors, extra, metadata)


def write(path, meta: dict, tensors: dict, extra: dict | None, metadata: dict | None) -> Path:
    """Write ``tensors`` and the optimiser's ``extra`` buffers atomically, with the header's ``meta``
    strings and every ``metadata`` value as JSON under ``charlm.<key>``."""
    from safetensors.numpy import save as save_bytes

    meta = dict(meta)
    for key, value in (metadata or {}).items():
        meta[f"charlm.{key}"] = json.dumps(value)
    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    arrays |= {STATE_PREFIX + name: np.ascontiguousarray(a) for name, a in (extra or {}).items()}
    atomic_write_bytes(Path(path), save_bytes(arrays, metadata=meta))
    return Path(path)


def load(path) -> SeqCheckpoint:
    """A checkpoint file, or a run directory (its best model, else its last)."""
    path = checkpoint_file(path)
    header, _ = read_header(path)
    meta = header.get("__metadata__") or {}
    refuse_other_task(path, meta, ("classify", "tag", "lm"))   # a language model: the message below
    if not isinstance(meta, dict) or "charlm.task" not in meta:
        what = "a language model" if isinstance(meta, dict) and "charlm.config" in meta else "not a charlm model"
        raise CheckpointError(f"{path}: not a classifier or tagger checkpoint ({what})")
    try:
        if meta.get("charlm.format") != FORMAT:
            raise CheckpointError(f"unsupported format {str(meta.get('charlm.format'))[:20]!r}")
        config = from_dict(SeqModelConfig, json.loads(meta["charlm.seq_config"])).validate()
        tok = json.loads(meta["charlm.tokenizer"])
        tokenizer = Tokenizer.from_dict({"level": tok["level"], "split": tok["split"],
                                         "tokens": json.loads(meta["charlm.vocab"])})
        labels = json.loads(meta["charlm.labels"])
        others = {k[len("charlm."):]: json.loads(v) for k, v in meta.items()
                  if k.startswith("charlm.") and k[len("charlm."):] not in
                  ("format", "task", "seq_config", "tokenizer", "vocab", "labels")}
    except CharlmError as e:
        raise CheckpointError(f"{path}: bad metadata: {one_line(str(e))}") from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        raise CheckpointError(f"{path}: missing or malformed charlm metadata") from None
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)
            and len(set(labels)) == len(labels) == config.num_labels):
        raise CheckpointError(f"{path}: the label list does not match the model's {config.num_labels} outputs")
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(tokenizer)} tokens, the model expects {config.vocab_size}")
    from .model import parameter_shapes

    tensors, extra = read_arrays(path, header, config, parameter_shapes)
    tables = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith(COUNT_PREFIX)]}
    class_lms, fusion = _class_lms(path, config, tables, others.get("fusion"))
    return SeqCheckpoint(path, config, tokenizer, labels, tensors, extra, others, class_lms, fusion)


def _class_lms(path, config: SeqModelConfig, tables: dict, weights):
    """(ClassLM, fusion.Weights) a checkpoint stores, or (None, None) for a model without them."""
    from .class_lm import ClassLM
    from .fusion import Weights

    if not config.class_lm:
        if tables:
            raise CheckpointError(f"{path}: class language model tables in a model configured without them")
        return None, None
    try:
        lms = ClassLM.from_arrays(tables, config.class_lm, config.vocab_size, config.num_labels)
        return lms, Weights() if weights is None else Weights.from_dict(weights)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def checkpoint_file(path) -> Path:
    """``path`` itself, or a run directory's best model, else its last checkpoint."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, LAST_FILE):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path} holds no checkpoint ({MODEL_FILE} or {LAST_FILE})")
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def read_arrays(path, header, config, parameter_shapes) -> tuple[dict, dict]:
    """(weights, optimiser buffers) of a checkpoint whose header lists exactly the tensors
    ``parameter_shapes(config)`` names, with those shapes, all finite."""
    from safetensors.numpy import load_file

    _check_shapes(path, header, config, parameter_shapes)
    try:
        arrays = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - the parser's own errors: one line, never a dump
        raise CheckpointError(f"{path}: unreadable safetensors data ({one_line(str(e))})") from None
    check_parsed(path, header, arrays)
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{path}: tensor {name[:60]!r} contains NaN or infinite values")
    tensors = {k: v for k, v in arrays.items() if not k.startswith(STATE_PREFIX)}
    extra = {k[len(STATE_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
    return tensors, extra


def _check_shapes(path, header, config, parameter_shapes) -> None:
    if config.layers > 64 or config.hidden > 1 << 16:
        raise CheckpointError(f"{path}: implausible configuration (layers={config.layers}, hidden={config.hidden})")
    expected = dict(parameter_shapes(config))
    found = {k: v for k, v in header.items()
             if k != "__metadata__" and not k.startswith(STATE_PREFIX) and not k.startswith(COUNT_PREFIX)}
    if set(found) != set(expected):
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise CheckpointError(f"{path}: tensors do not match the stored configuration "
                              f"(missing {missing[:3]}, unexpected {[n[:40] for n in unexpected[:3]]})")
    for name, shape in expected.items():
        if tuple(found[name]["shape"]) != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(found[name]['shape'])}, "
                                  f"the configuration needs {shape}")
