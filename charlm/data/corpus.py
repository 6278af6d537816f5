"""The training text as ids: read, cut at <eos>, encoded, with a vocabulary and a validation part.

``build_corpus`` reads UTF-8 files (text_files.py), cuts them into <eos>-separated sequences
(sequences.py says how, and why <eos> both starts and ends each one), fits a vocabulary on the
training part only and holds out a contiguous validation tail. Several files are separate
documents; the last sequence of each ends with <eos>. The result is a ``Corpus``: two id arrays
and the tokenizer. Cutting them into training batches is batches.py's job.

Inputs larger than LARGE_BYTES are split and encoded chunk by chunk into files that come back as
read-only ``np.memmap``s (as they do for any input when ``cache_dir`` is given; id_arrays.py), so
memory stays flat however big the corpus is, and the ids are those of reading the whole file at
once.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, CorpusError
from .id_arrays import IdSink, blocks, copy_ids, count_ids
from .sequences import encode_segment, file_segments, resolve_eos, sample_heads, segment_text
from .text_files import check_path
from .tokenizer import Tokenizer, check_fit_args, count_tokens

LARGE_BYTES = 64 << 20    # bigger inputs are encoded chunk by chunk into memory-mapped files


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: np.ndarray           # (N_train,) ids in tokenizer.id_dtype, read-only (np.memmap if large)
    val: np.ndarray             # (N_val,) ids; empty when there is no validation part
    eos: str                    # resolved boundary mode: line | paragraph | none
    sources: list[str]          # training files, in order
    val_source: str | None = None   # separate validation file, if one was given
    labels: object = None           # labelled lines: a labelled.LabelledLines (each line its label)

    def stats(self) -> dict:
        """Sizes and counts for the CLI to show."""
        tok = self.tokenizer
        out = {"level": tok.level, "eos": self.eos, "vocab_size": len(tok),
               "memmap": isinstance(self.train, np.memmap), "sources": list(self.sources),
               "val_source": self.val_source}
        for name, ids in (("train", self.train), ("val", self.val)):
            eos = count_ids(ids, tok.eos_id)
            out[f"{name}_tokens"] = len(ids)
            out[f"{name}_sequences"] = eos - int(len(ids) > 0 and ids[0] == tok.eos_id)
            out[f"{name}_unknown"] = count_ids(ids, tok.unk_id)  # tokens that became <unk>
        out["tokens"] = out["train_tokens"] + out["val_tokens"]
        out["unknown"] = out["train_unknown"] + out["val_unknown"]
        return out


def build_corpus(paths, *, level="char", eos="auto", val_fraction=0.1, val_file=None,
                 tokenizer=None, split="whitespace", max_vocab=0, min_count=1,
                 cache_dir=None, errors="strict") -> Corpus:
    """Read, encode and split the training text.

    With ``tokenizer=None`` the vocabulary is fitted on the training part only: the text is
    encoded with a provisional vocabulary of every token, the split is made, and the ids are
    remapped to the vocabulary of the training part (val-only tokens become <unk>). A given
    tokenizer (resume, eval) is used as is and its level/split win over the arguments.
    ``val_file`` replaces ``val_fraction``. The validation part is the contiguous tail, cut at
    the <eos> nearest the cut when one lies within a quarter of the validation size (then that
    <eos> ends train and also starts val), else exactly at the cut.
    """
    paths = [check_path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise CorpusError("no training files given")
    val_file = check_path(val_file) if val_file is not None else None
    if tokenizer is not None:
        level, split = tokenizer.level, tokenizer.split
    check_fit_args(level, split, max_vocab, min_count)
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    mode = resolve_eos(sample_heads(paths, errors) if eos == "auto" else "", eos)

    size = sum(os.path.getsize(p) for p in paths + ([val_file] if val_file else []))
    large = size > LARGE_BYTES
    if large:
        def source():
            return (seg for p in paths for seg in file_segments(p, mode, errors, level))
    else:  # small: read once, keep the sequences for both passes
        cached = [seg for p in paths for seg in file_segments(p, mode, errors, level)]
        def source():
            return iter(cached)
    # Large inputs without a cache_dir go to a temp dir (honours TMPDIR) that is removed at
    # once: the open maps keep the unlinked files alive (POSIX).
    workdir = os.fspath(cache_dir) if cache_dir is not None else (
        tempfile.mkdtemp(prefix="charlm-") if large else None)
    try:
        if workdir:
            os.makedirs(workdir, exist_ok=True)
        counts, tok = None, tokenizer
        if tokenizer is None:  # provisional: every token
            counts = count_tokens((segment_text(s, level) for s, _ in source()), level, split)
            tok = Tokenizer.from_counts(counts, level, split=split)
        stream = _encode_stream(tok, source(), IdSink(tok.id_dtype, workdir, "stream"))
        train, val = stream, stream[:0]
        if val_file is None and val_fraction > 0:
            train_end, val_start = _split_point(stream, val_fraction, paths)
            train, val = stream[:train_end], stream[val_start:]
        lut = None
        if tokenizer is None:
            tokenizer, lut = _refit(tok, counts, train, val, split, max_vocab, min_count)
        dtype = tokenizer.id_dtype
        # nothing to remap and no files wanted: train and val are read-only views of the stream
        as_is = workdir is None and lut is None and dtype == stream.dtype
        train = train if as_is else copy_ids(train, lut, IdSink(dtype, workdir, "train"))
        if val_file is not None:
            val_segs = file_segments(val_file, mode, errors, level)
            val = _encode_stream(tokenizer, val_segs, IdSink(dtype, workdir, "val"))
        elif not as_is:
            val = copy_ids(val, lut, IdSink(dtype, workdir, "val"))
        return Corpus(tokenizer, train, val, mode, paths, val_file)
    finally:
        if cache_dir is None and workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir:
            for name in ("stream.ids", "stream.ids.tmp", "train.ids.tmp", "val.ids.tmp"):
                if os.path.exists(os.path.join(workdir, name)):
                    os.remove(os.path.join(workdir, name))



def _encode_stream(tok, segments, sink):
    sink.add(np.array([tok.eos_id]))  # <eos> starts the stream
    for seqs, closed in segments:
        sink.add(encode_segment(tok, seqs, closed))
    return sink.finish()


def _split_point(stream, val_fraction, paths) -> tuple[int, int]:
    """(train_end, val_start): train = stream[:train_end], val = stream[val_start:]."""
    n = len(stream)
    val_len = max(2, round(n * val_fraction))  # one prediction needs two tokens
    if n - val_len < 2:
        raise CorpusError(f"{', '.join(paths)}: only {n} tokens, too few to hold out "
                          f"{val_fraction:g} for validation and still train; add text, "
                          "give a separate validation file or set val_fraction to 0")
    target = n - val_len - 1    # where the <eos> ending the training part would ideally be
    tol = max(1, val_len // 4)
    lo, hi = max(1, target - tol), min(n - 2, target + tol)
    found = np.flatnonzero(np.asarray(stream[lo:hi + 1]) == 0) + lo
    if len(found):
        i = int(found[np.argmin(np.abs(found - target))])
        return i + 1, i         # the boundary <eos> ends train and starts val
    return n - val_len, n - val_len


def _refit(prov: Tokenizer, total, train, val, split, max_vocab, min_count):
    """Vocabulary of the training part, and the lookup table provisional id -> final id (None
    when that is the identity). ``total`` holds the provisional fit's counts over the whole stream.
    At char level every token of the stream is one code point of the counted text, so the
    training part's counts are those minus the validation part's (scanning the usually much
    shorter validation part instead of the training part)."""
    counts = np.zeros(len(prov), np.int64)
    if prov.level == "char":
        counts[2:] = [total[t] for t in prov.tokens[2:]]
        for block in blocks(val):
            counts -= np.bincount(block, minlength=len(prov))
    else:  # word level: the split of " <eos> "-joined text need not match the counted one
        for block in blocks(train):
            counts += np.bincount(block, minlength=len(prov))
    counts[:2] = 0
    final = Tokenizer.from_counts(
        {prov.tokens[j]: int(counts[j]) for j in np.flatnonzero(counts) if j >= 2},
        prov.level, split=split, max_vocab=max_vocab, min_count=min_count)
    if len(final) <= 2 and len(prov) > 2:  # every token became <unk>: nothing left to learn
        raise CorpusError(f"no {prov.level} in the training text occurs at least min_count={min_count} "
                          f"times, so the vocabulary would hold only <eos> and <unk>; lower min_count")
    index = {t: i for i, t in enumerate(final.tokens)}
    lut = np.array([index.get(t, final.unk_id) for t in prov.tokens], dtype=final.id_dtype)
    if len(lut) == len(final) and np.array_equal(lut, np.arange(len(lut))):
        lut = None
    return final, lut

