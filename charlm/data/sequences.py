"""Where sequences start and end: the <eos> boundary modes, and text cut and encoded by them.

The id stream follows makemore: <eos> starts and ends every sequence, so a list of names becomes
``<eos> e m m a <eos> o l i v i a <eos> ...``. Boundaries (``eos``):

- ``line``: each non-blank line is a sequence; its newline becomes <eos>; blank lines vanish.
- ``paragraph``: a run of blank lines (whitespace-only lines count as blank) separates sequences
  and becomes one <eos>; single newlines stay as characters.
- ``none``: no boundaries; a file is one sequence, kept exactly.
- ``auto``: chosen from the text, see ``resolve_eos``.

``file_segments`` reads a file in chunks and cuts them only where cutting changes nothing (after
a newline in line mode, a blank line in paragraph mode), so the sequences are those of the whole
file read at once, and memory scales with the longest line or paragraph, not with the file.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..config import EOS_MODES
from ..errors import ConfigError
from .text_files import iter_text
from .tokenizer import Tokenizer

SAMPLE_BYTES = 1 << 20    # head of each file that eos="auto" looks at

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
    return np.concatenate([[tokenizer.eos_id], encode_segment(tokenizer, seqs, True)]
                          ).astype(tokenizer.id_dtype)


def file_segments(path, mode: str, errors: str, level: str):
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


def encode_segment(tok: Tokenizer, seqs: list[str], closed: bool) -> np.ndarray:
    """ids of ``seqs``, each followed by <eos> (but the last only when ``closed``)."""
    if not seqs:
        return np.zeros(0, tok.id_dtype)
    if tok.level == "char":
        ids = tok.encode("".join(seqs), dtype=tok.id_dtype)
        ends = np.cumsum([len(s) for s in seqs])  # one id per code point
        return np.insert(ids, ends if closed else ends[:-1], tok.eos_id)
    # word level: the literal token "<eos>" maps to the special, so spell the boundaries out
    return tok.encode(" <eos> ".join(seqs) + (" <eos>" if closed else ""), dtype=tok.id_dtype)


def segment_text(seqs: list[str], level: str) -> str:
    """Text to fit a vocabulary on: the sequences without adding any character (char level)
    or any word (word level)."""
    return ("" if level == "char" else " ").join(seqs)



def sample_heads(paths, errors) -> str:
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

