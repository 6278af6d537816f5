"""Encoder-decoder checkpoints: safetensors with the tensors under the model's PyTorch names and the
configuration, both vocabularies and both levels in the metadata (``charlm.task`` = "seq2seq",
``charlm.seq2seq_config``, ``charlm.source_vocab``, ``charlm.target_vocab``, ``charlm.levels``),
written atomically and read back strictly (seqtask/store.py's writer and checks)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import from_dict
from ..errors import CharlmError, CheckpointError
from ..runs.find import refuse_other_task
from ..runs.header import one_line, read_header
from ..seqtask.store import checkpoint_file, read_arrays, write
from .config import LEVELS, Seq2SeqConfig
from .data import SOURCE_SPECIALS, TARGET_SPECIALS, Vocab

FORMAT = "1"
TASK = "seq2seq"
_OWN = ("format", "task", "seq2seq_config", "source_vocab", "target_vocab", "levels")


@dataclass
class Seq2SeqCheckpoint:
    path: Path
    config: Seq2SeqConfig
    source: Vocab
    target: Vocab
    levels: dict          # {"source": "char" | "word", "target": ...}
    tensors: dict         # the weights; the optimiser's buffers (last.safetensors) in ``extra``
    extra: dict
    metadata: dict        # everything else stored under charlm.*

    def build_model(self, dtype=np.float32):
        from .model import Seq2SeqModel

        return Seq2SeqModel(self.config, dtype).loaded(self.tensors)


def save(path, config: Seq2SeqConfig, source: Vocab, target: Vocab, levels: dict, tensors: dict, *,
         extra: dict | None = None, metadata: dict | None = None) -> Path:
    meta = {"charlm.format": FORMAT, "charlm.task": TASK,
            "charlm.seq2seq_config": json.dumps(dataclasses.asdict(config)),
            "charlm.source_vocab": json.dumps(list(source.tokens), ensure_ascii=False),
            "charlm.target_vocab": json.dumps(list(target.tokens), ensure_ascii=False),
            "charlm.levels": json.dumps(levels)}
    return write(path, meta, tensors, extra, metadata)


def load(path) -> Seq2SeqCheckpoint:
    """A checkpoint file, or a run directory (its best model, else its last)."""
    from .model import parameter_shapes

    path = checkpoint_file(path)
    header, _ = read_header(path)
    meta = header.get("__metadata__") or {}
    refuse_other_task(path, meta, (TASK,))
    if not isinstance(meta, dict) or meta.get("charlm.task") != TASK:
        raise CheckpointError(f"{path}: not an encoder-decoder checkpoint")
    try:
        if meta.get("charlm.format") != FORMAT:
            raise CheckpointError(f"unsupported format {str(meta.get('charlm.format'))[:20]!r}")
        config = from_dict(Seq2SeqConfig, json.loads(meta["charlm.seq2seq_config"])).validate()
        source, target = (Vocab(tuple(json.loads(meta[f"charlm.{k}_vocab"]))) for k in ("source", "target"))
        levels = json.loads(meta["charlm.levels"])
        others = {k[len("charlm."):]: json.loads(v) for k, v in meta.items()
                  if k.startswith("charlm.") and k[len("charlm."):] not in _OWN}
    except CharlmError as e:
        raise CheckpointError(f"{path}: bad metadata: {one_line(str(e))}") from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        raise CheckpointError(f"{path}: missing or malformed charlm metadata") from None
    for vocab, specials, size in ((source, SOURCE_SPECIALS, config.src_vocab), (target, TARGET_SPECIALS, config.tgt_vocab)):
        if not (all(isinstance(t, str) for t in vocab.tokens) and len(set(vocab.tokens)) == len(vocab) == size
                and vocab.tokens[:len(specials)] == specials):
            raise CheckpointError(f"{path}: a vocabulary does not match the model's sizes")
    if not (isinstance(levels, dict) and all(levels.get(k) in LEVELS for k in ("source", "target"))):
        raise CheckpointError(f"{path}: malformed levels in the metadata")
    tensors, extra = read_arrays(path, header, config, parameter_shapes)
    return Seq2SeqCheckpoint(path, config, source, target, levels, tensors, extra, others)
