"""Text for the inspectors: files encoded the way a checkpoint's model reads them."""
from __future__ import annotations

import numpy as np


def encode_for(checkpoint, paths, *, max_tokens: int | None = None, errors: str = "strict"):
    """(ids, eos mode): ``paths`` encoded with the checkpoint's vocabulary and the sequence
    boundaries it was trained with (as ``charlm eval`` does), cut to ``max_tokens``."""
    from ..data.corpus import build_corpus

    meta = checkpoint.metadata
    eos = meta.get("eos") or (meta.get("train_config") or {}).get("eos", "auto")
    corpus = build_corpus(list(paths), level=checkpoint.tokenizer.level, eos=eos, val_fraction=0.0,
                          tokenizer=checkpoint.tokenizer, errors=errors)
    ids = corpus.train if max_tokens is None else corpus.train[:max_tokens]
    return np.asarray(ids), corpus.eos


def training_sources(checkpoint) -> list[str]:
    """The text files a checkpoint was trained on (those that still exist)."""
    from pathlib import Path

    return [p for p in checkpoint.metadata.get("sources", []) if Path(p).is_file()]
