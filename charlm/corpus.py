"""Read text, cut it into <eos>-separated sequences, encode, split train/val, and batch it.

The id stream follows makemore: <eos> starts and ends every sequence, so a list of names becomes
``<eos> e m m a <eos> o l i v i a <eos> ...``. Several files are separate documents; the last
sequence of each ends with <eos>. Sequence boundaries (``eos``):

- ``line``: each non-blank line is a sequence; its newline becomes <eos>; blank lines vanish.
- ``paragraph``: a run of blank lines (whitespace-only lines count as blank) separates sequences
  and becomes one <eos>; single newlines stay as characters.
- ``none``: no boundaries; a file is one sequence, kept exactly.
- ``auto``: chosen from the text, see ``resolve_eos``.

Files are read in chunks of CHUNK_BYTES. Inputs larger than LARGE_BYTES are also split and
encoded chunk by chunk into files that come back as read-only ``np.memmap``s (as they do for
any input when ``cache_dir`` is given), so memory stays flat however big the corpus is. Chunks
are cut only where cutting changes nothing (after a newline in line mode, a blank line in
paragraph mode), so the result is identical to reading the whole file at once; memory then
scales with the longest single line or paragraph, not with the file.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from .config import EOS_MODES
from .errors import ConfigError, CorpusError
from .tokenizer import Tokenizer, check_fit_args, count_tokens

LARGE_BYTES = 64 << 20    # bigger inputs are encoded chunk by chunk into memory-mapped files
CHUNK_BYTES = 8 << 20     # bytes read, decoded, split and encoded at a time
SAMPLE_BYTES = 1 << 20    # head of each file that eos="auto" looks at
_BLOCK = 1 << 22          # ids processed at a time when scanning (possibly mapped) id arrays
_BOM = b"\xef\xbb\xbf"

# -- reading ---------------------------------------------------------------------------------


def check_path(path) -> str:
    """The path as a string, or CorpusError if it is missing or a directory."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CorpusError(f"{path}: is a directory, not a text file")
    return path


def read_text(path, *, errors: str = "strict") -> str:
    """The whole text of a UTF-8 file: BOM stripped, CRLF and lone CR turned into LF.

    Invalid UTF-8 raises CorpusError naming the byte offset of the first bad byte
    (``errors="replace"`` substitutes U+FFFD instead); see ``iter_text`` for the other checks.
    """
    return "".join(iter_text(path, errors=errors))


def iter_text(path, *, errors: str = "strict", chunk_bytes: int = 0):
    """Yield the normalised text of ``path`` in pieces of about ``chunk_bytes`` bytes.

    No multi-byte character and no CRLF is ever split between pieces. Refuses (CorpusError)
    missing, unreadable, empty and whitespace-only files, and files that look binary or UTF-16/32.
    """
    path = check_path(path)
    if errors not in ("strict", "replace"):
        raise ConfigError(f"errors must be 'strict' or 'replace', got {errors!r}")
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CorpusError(f"{path}: cannot be read ({e.strerror or e})") from None
    with f:
        head = f.read(8192)
        _sniff(path, head)
        offset = 3 if head.startswith(_BOM) else 0  # absolute byte offset of `data[0]`
        f.seek(offset)
        start, carry, cr, seen = offset, b"", False, False
        while True:
            block = f.read(chunk_bytes)
            eof = not block
            data = carry + block
            cut = len(data) if eof else _utf8_boundary(data)
            data, carry = data[:cut], data[cut:]
            try:
                text = data.decode("utf-8", errors)
            except UnicodeDecodeError as e:
                raise CorpusError(
                    f"{path}: invalid UTF-8 at byte offset {offset + e.start} "
                    f"(byte 0x{data[e.start]:02x}); convert the file to UTF-8 "
                    "or read it with errors='replace'") from None
            offset += len(data)
            if cr:
                text = "\r" + text
            cr = not eof and text.endswith("\r")  # hold a final CR back: an LF may follow
            if cr:
                text = text[:-1]
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if text:
                seen = seen or not text.isspace()
                yield text
            if eof:
                break
    if not seen:
        raise CorpusError(f"{path}: {'contains only whitespace' if offset > start else 'is empty'}")


def _sniff(path: str, head: bytes):
    """Refuse UTF-16/32 and binary files up front with a message that says so."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise CorpusError(f"{path}: looks like UTF-32 text (byte-order mark); convert it to UTF-8")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CorpusError(f"{path}: looks like UTF-16 text (byte-order mark); convert it to UTF-8")
    nul = head.count(0)
    bad = head.decode("utf-8", "replace").count("\ufffd")
    if nul * 100 > len(head) or (bad >= 8 and bad * 4 > len(head)):  # latin-1 text: a few %
        raise CorpusError(f"{path}: looks like binary or UTF-16/UTF-32 data, not UTF-8 text "
                          f"({nul} NUL and {bad} invalid bytes in the first {len(head)})")


def _utf8_boundary(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    n = len(data)
    for k in range(1, min(4, n) + 1):
        b = data[n - k]
        if b < 0x80:            # ASCII: whatever follows it is complete (or invalid anyway)
            return n
        if b >= 0xC0:           # lead byte of a k-byte tail: complete if it needs <= k bytes
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n - k if need > k else n
    return n                    # only continuation bytes: invalid, let the decoder say where


# -- sequences -------------------------------------------------------------------------------

_BLANK_RUN = re.compile(r"\n(?:[^\S\n]*\n)+")       # end of a line, then one or more blank lines
_LEADING_BLANK = re.compile(r"\A(?:[^\S\n]*\n)+")
_TRAILING_BLANK = re.compile(r"(?:\n[^\S\n]*)+\Z")


def split_sequences(text: str, mode: str) -> list[str]:
    """The sequences of ``text`` (without boundaries) for a resolved mode (line|paragraph|none)."""
    if mode == "line":
        return [s for s in text.split("\n") if s and not s.isspace()]
    if mode == "paragraph":
        pieces = _BLANK_RUN.split(text)
        # only the first and last piece can carry blank lines at their outer edge
        pieces[0] = _LEADING_BLANK.sub("", pieces[0])
        pieces[-1] = _TRAILING_BLANK.sub("", pieces[-1])
        return [p for p in pieces if p and not p.isspace()]
    if mode == "none":
        return [text] if text and not text.isspace() else []
    raise ConfigError(f"eos must be one of line, paragraph, none here; got {mode!r}")


def resolve_eos(text: str, mode: str = "auto") -> str:
    """``mode`` itself, or for "auto" the mode that fits ``text`` (its first ~1M characters):

    1. fewer than 2 non-blank lines                                      -> none
    2. blank-line runs split the text into blocks of <= 50 lines on average -> paragraph
       (Shakespeare, prose with blank lines between paragraphs, poems with stanzas)
    3. lines look hard-wrapped: >= 60% of lines have 3+ spaces and are at least 3/4 as long
       as the 90th-percentile line, which is <= 120 characters          -> none
    4. otherwise (names, one sentence per line)                           -> line
    """
    if mode not in EOS_MODES:
        raise ConfigError(f"eos must be one of {', '.join(EOS_MODES)}; got {mode!r}")
    if mode != "auto":
        return mode
    if len(text) > SAMPLE_BYTES:
        text = text[: text.rfind("\n", 0, SAMPLE_BYTES) + 1 or SAMPLE_BYTES]
    lengths, spaced, runs, blank_before, started = [], [], 0, False, False
    for line in text.split("\n"):
        if line and not line.isspace():
            runs += blank_before and started
            started, blank_before = True, False
            lengths.append(len(line))
            spaced.append(line.count(" ") >= 3)
        else:
            blank_before = True
    n = len(lengths)
    if n < 2:
        return "none"
    if runs and n <= 50 * (runs + 1):
        return "paragraph"
    lengths = np.array(lengths)
    p90 = np.percentile(lengths, 90)
    wrapped = p90 <= 120 and np.mean((lengths >= 0.75 * p90) & np.array(spaced)) >= 0.6
    return "none" if wrapped else "line"


def to_sequences_stream(text: str, mode: str, tokenizer: Tokenizer) -> np.ndarray:
    """(N,) ids (tokenizer.id_dtype) of ``text`` as one document: <eos> seq <eos> seq ... <eos>."""
    seqs = split_sequences(text, resolve_eos(text, mode))
    return np.concatenate([[tokenizer.eos_id], _encode_segment(tokenizer, seqs, True)]
                          ).astype(tokenizer.id_dtype)


def _segments(path, mode: str, errors: str, level: str):
    """Yield (sequences, closed) for one file read in chunks. Every sequence is followed by
    <eos> except, when not ``closed``, the last one, which continues in the next segment.
    Chunks are joined until they can be cut where cutting changes nothing: after a newline
    (line), a blank line (paragraph), anywhere (none, char level), after a space (none, word)."""
    pending: list[str] = []
    for text in iter_text(path, errors=errors):
        cut = _safe_cut(text, pending, mode, level)
        if cut <= 0:
            pending.append(text)
            continue
        pending.append(text[:cut])
        piece = "".join(pending)
        pending = [text[cut:]] if cut < len(text) else []
        yield ([piece], False) if mode == "none" else (split_sequences(piece, mode), True)
    rest = "".join(pending)
    yield ([rest], True) if mode == "none" else (split_sequences(rest, mode), True)


def _safe_cut(text: str, pending: list[str], mode: str, level: str) -> int:
    """Where ``text`` (which follows ``pending``) can be cut, or 0 if nowhere."""
    if mode == "none":
        return len(text) if level == "char" else max(map(text.rfind, " \n\t")) + 1
    sep = "\n" if mode == "line" else "\n\n"
    i = text.rfind(sep)
    if i >= 0:
        return i + len(sep)
    straddles = sep == "\n\n" and text[0] == "\n" and pending and pending[-1][-1] == "\n"
    return 1 if straddles else 0


def _encode_segment(tok: Tokenizer, seqs: list[str], closed: bool) -> np.ndarray:
    """ids of ``seqs``, each followed by <eos> (but the last only when ``closed``)."""
    if not seqs:
        return np.zeros(0, tok.id_dtype)
    if tok.level == "char":
        ids = tok.encode("".join(seqs), dtype=tok.id_dtype)
        ends = np.cumsum([len(s) for s in seqs])  # one id per code point
        return np.insert(ids, ends if closed else ends[:-1], tok.eos_id)
    # word level: the literal token "<eos>" maps to the special, so spell the boundaries out
    return tok.encode(" <eos> ".join(seqs) + (" <eos>" if closed else ""), dtype=tok.id_dtype)


def _segment_text(seqs: list[str], level: str) -> str:
    """Text to fit a vocabulary on: the sequences without adding any character (char level)
    or any word (word level)."""
    return ("" if level == "char" else " ").join(seqs)


# -- corpus ----------------------------------------------------------------------------------


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: np.ndarray           # (N_train,) ids in tokenizer.id_dtype, read-only (np.memmap if large)
    val: np.ndarray             # (N_val,) ids; empty when there is no validation part
    eos: str                    # resolved boundary mode: line | paragraph | none
    sources: list[str]          # training files, in order
    val_source: str | None = None   # separate validation file, if one was given

    def stats(self) -> dict:
        """Sizes and counts for the CLI to show."""
        tok = self.tokenizer
        out = {"level": tok.level, "eos": self.eos, "vocab_size": len(tok),
               "memmap": isinstance(self.train, np.memmap), "sources": list(self.sources),
               "val_source": self.val_source}
        for name, ids in (("train", self.train), ("val", self.val)):
            eos = _count(ids, tok.eos_id)
            out[f"{name}_tokens"] = len(ids)
            out[f"{name}_sequences"] = eos - int(len(ids) > 0 and ids[0] == tok.eos_id)
            out[f"{name}_unknown"] = _count(ids, tok.unk_id)  # tokens that became <unk>
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
    mode = resolve_eos(_sample(paths, errors) if eos == "auto" else "", eos)

    size = sum(os.path.getsize(p) for p in paths + ([val_file] if val_file else []))
    large = size > LARGE_BYTES
    if large:
        def source():
            return (seg for p in paths for seg in _segments(p, mode, errors, level))
    else:  # small: read once, keep the sequences for both passes
        cached = [seg for p in paths for seg in _segments(p, mode, errors, level)]
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
            counts = count_tokens((_segment_text(s, level) for s, _ in source()), level, split)
            tok = Tokenizer.from_counts(counts, level, split=split)
        stream = _encode_stream(tok, source(), _Sink(tok.id_dtype, workdir, "stream"))
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
        train = train if as_is else _copy(train, lut, _Sink(dtype, workdir, "train"))
        if val_file is not None:
            val_segs = _segments(val_file, mode, errors, level)
            val = _encode_stream(tokenizer, val_segs, _Sink(dtype, workdir, "val"))
        elif not as_is:
            val = _copy(val, lut, _Sink(dtype, workdir, "val"))
        return Corpus(tokenizer, train, val, mode, paths, val_file)
    finally:
        if cache_dir is None and workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir:
            for name in ("stream.ids", "stream.ids.tmp", "train.ids.tmp", "val.ids.tmp"):
                if os.path.exists(os.path.join(workdir, name)):
                    os.remove(os.path.join(workdir, name))


def _sample(paths, errors) -> str:
    """The first ~SAMPLE_BYTES of every file, cut at a line end, for resolve_eos."""
    heads = []
    for p in paths:
        chunks = iter_text(p, errors=errors, chunk_bytes=SAMPLE_BYTES)
        head = next(chunks)
        chunks.close()
        if os.path.getsize(p) > SAMPLE_BYTES and "\n" in head:
            head = head[: head.rfind("\n") + 1]
        heads.append(head if head.endswith("\n") else head + "\n")
    return "".join(heads)


def _encode_stream(tok, segments, sink):
    sink.add(np.array([tok.eos_id]))  # <eos> starts the stream
    for seqs, closed in segments:
        sink.add(_encode_segment(tok, seqs, closed))
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
        for block in _blocks(val):
            counts -= np.bincount(block, minlength=len(prov))
    else:  # word level: the split of " <eos> "-joined text need not match the counted one
        for block in _blocks(train):
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


def _copy(src, lut, sink):
    for block in _blocks(src):
        sink.add(lut[block] if lut is not None else block)
    return sink.finish()


def _blocks(ids):
    for start in range(0, len(ids), _BLOCK):
        yield np.asarray(ids[start:start + _BLOCK])


def _count(ids, value) -> int:
    return sum(int(np.count_nonzero(block == value)) for block in _blocks(ids))


class _Sink:
    """Collects id arrays in memory, or appends them to ``workdir/name.ids`` and maps that."""

    def __init__(self, dtype, workdir=None, name=""):
        self.dtype, self.parts, self.n = np.dtype(dtype), [], 0
        self.path = os.path.join(workdir, name + ".ids") if workdir else None
        try:
            self.file = open(self.path + ".tmp", "wb") if self.path else None
        except OSError as e:
            raise CorpusError(f"cannot write {self.path}: {e.strerror or e}") from None

    def add(self, ids):
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        self.n += len(ids)
        if self.file:
            self.file.write(ids.data)
        else:
            self.parts.append(ids)

    def finish(self) -> np.ndarray:
        if self.file is None:
            ids = np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)
            ids.flags.writeable = False
            return ids
        self.file.close()
        # replace, never overwrite: a map of an older file in the same cache stays valid
        os.replace(self.path + ".tmp", self.path)
        if self.n == 0:  # an empty file cannot be mapped
            return np.zeros(0, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n,))
