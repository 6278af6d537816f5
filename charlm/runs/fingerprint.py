"""Content fingerprints: is this the text (and the model) a run was trained on?

A resume must continue on exactly the token streams the run started with; comparing lengths
misses a changed letter, or a letter replaced by one outside the vocabulary (it would quietly
become <unk>). The fingerprint is a BLAKE2b digest of the training and validation id streams
(after tokenization with the run's vocabulary), stored in every checkpoint's metadata.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError
from .find import LAST_FILE, MODEL_FILE, TASK_NAMES, task_of

_BLOCK = 1 << 22   # ids hashed at a time: a memory-mapped corpus is never read whole


def ids_digest(ids) -> str:
    """BLAKE2b (128 bits) of an id array as little-endian uint32, whatever its stored dtype."""
    h = hashlib.blake2b(digest_size=16)
    n = len(ids)
    h.update(n.to_bytes(8, "little"))
    for start in range(0, n, _BLOCK):
        h.update(np.asarray(ids[start:start + _BLOCK]).astype("<u4", copy=False).tobytes())
    return h.hexdigest()


def corpus_fingerprint(corpus) -> dict:
    """``{"train": digest, "val": digest}`` of a Corpus, computed once per corpus object."""
    cached = getattr(corpus, "_fingerprint_cache", None)
    if cached is not None:
        return dict(cached)
    value = {"train": ids_digest(corpus.train), "val": ids_digest(corpus.val)}
    try:
        object.__setattr__(corpus, "_fingerprint_cache", value)
    except (AttributeError, TypeError):  # a corpus without a __dict__: recompute next time
        pass
    return dict(value)


def _metadata(path: Path) -> dict:
    """The charlm metadata of the checkpoint at ``path``, decoded; {} if it is missing or
    unreadable (loading it then reports why)."""
    from .header import json_or_none, read_header

    try:
        meta = read_header(path)[0].get("__metadata__") or {}
    except CheckpointError:
        return {}
    if not isinstance(meta, dict):
        return {}
    return {k[len("charlm."):]: json_or_none(v) for k, v in meta.items()
            if isinstance(k, str) and k.startswith("charlm.") and isinstance(v, str)}


def check_same_corpus(run_dir, corpus) -> None:
    """Refuse (ConfigError) to resume ``run_dir`` on a corpus whose content differs from the one
    recorded in its last checkpoint (older checkpoints: only the length is known)."""
    saved = _metadata(Path(run_dir) / LAST_FILE)
    fingerprint = saved.get("fingerprint")
    if not isinstance(fingerprint, dict):
        if saved.get("train_tokens") not in (None, int(corpus.train.size)):
            raise ConfigError(f"cannot resume {run_dir}: the training text has changed "
                              f"({corpus.train.size} tokens now, {saved.get('train_tokens')} before)")
        return
    now = corpus_fingerprint(corpus)
    changed = [part for part in ("train", "val") if fingerprint.get(part) != now[part]]
    if changed:
        what = ("training and validation texts are not the ones" if len(changed) == 2 else
                f"{'training' if changed == ['train'] else 'validation'} text is not the one")
        raise ConfigError(f"cannot resume {run_dir}: the {what} this run was trained on (the content "
                          "changed); resume with the original text, or start a new run")


def check_same_model(run_dir) -> None:
    """Refuse a ``last.safetensors`` that is not the same run's as the run's best checkpoint
    (``model.safetensors``): another task, cell, size, vocabulary or text copied over it."""
    apart = checkpoints_apart(run_dir)
    if apart:
        raise CheckpointError(f"cannot resume {run_dir}: {LAST_FILE} and {MODEL_FILE} {apart}; was a "
                              "checkpoint copied in from another run?")


def checkpoints_apart(run_dir) -> str | None:
    """How the two checkpoints in ``run_dir`` show that they are not one run's ("are not the same
    model (hidden 8 vs 6)", "were trained on different texts", ...), or None: they agree, or one
    is missing or unreadable (loading it reports that)."""
    files = Path(run_dir) / MODEL_FILE, Path(run_dir) / LAST_FILE
    best, last = _metadata(files[0]), _metadata(files[1])
    if not best or not last:
        return None
    tasks = [task_of(f) for f in files]
    if tasks[0] != tasks[1]:
        return "are checkpoints of different tasks (" + ", ".join(
            f"{f.name}: {TASK_NAMES.get(t, t)}" for f, t in zip(files, tasks)) + ")"
    config, mine = best.get("config"), last.get("config")
    if isinstance(config, dict) and isinstance(mine, dict) and (config != mine or best.get("vocab") != last.get("vocab")):
        diff = ", ".join(f"{k} {config.get(k)!r} vs {mine.get(k)!r}"
                         for k in sorted(set(config) | set(mine)) if config.get(k) != mine.get(k))
        return f"are not the same model ({diff or 'different vocabularies'})"
    texts = best.get("fingerprint"), last.get("fingerprint")
    if all(isinstance(t, dict) for t in texts) and texts[0] != texts[1]:
        return "were trained on different texts"
    return None
