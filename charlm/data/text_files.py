"""Reading UTF-8 text files: refuse what is not text with one clear line, normalise the rest.

``iter_text`` yields a file's text in pieces of about CHUNK_BYTES bytes, never splitting a
multi-byte character or a CRLF between pieces: the byte-order mark is stripped, CRLF and lone CR
become LF, invalid UTF-8 is named by its byte offset, and missing, empty, whitespace-only, binary
and UTF-16/32 files are refused (CorpusError). ``read_text`` joins the pieces.
"""
from __future__ import annotations

import contextlib
import os
import sys

from ..errors import ConfigError, CorpusError
from ..fsutil import not_a_regular_file

CHUNK_BYTES = 8 << 20     # bytes read and decoded at a time
_BOM = b"\xef\xbb\xbf"
STDIN = "-"              # the name of standard input wherever a file is read
_STDIN_TEXT: dict = {}    # standard input's text, read once (keyed by the stream: tests swap it)


def check_path(path, *, stdin: bool = True) -> str:
    """The path as a string, or CorpusError if it is missing, a directory or not a regular file.
    ``-`` (standard input) passes: it is read once, as a stream."""
    path = os.fspath(path)
    if path == STDIN:
        return path
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CorpusError(f"{path}: is a directory, not a text file")
    problem = not_a_regular_file(path)  # a FIFO would block the read forever, /dev/zero never end
    if problem:
        hint = "save the text to a file first" + (", or give - to read standard input" if stdin else "")
        raise CorpusError(f"{path}: {problem}, not a regular text file ({hint})")
    return path


def check_file(path) -> str:
    """``check_path`` for inputs that must be read again later (training data: a resume re-reads
    it and checks its content), which standard input cannot be."""
    if os.fspath(path) == STDIN:
        raise CorpusError("-: training data must be a file (a run reads it again to resume), not standard input")
    path = check_path(path, stdin=False)
    return path


def display_name(path) -> str:
    """How messages name an input: its path, or "standard input" for ``-``."""
    return "standard input" if os.fspath(path) == STDIN else os.fspath(path)


def read_text(path, *, errors: str = "strict") -> str:
    """The whole text of a UTF-8 file (``-``: standard input): BOM stripped, CRLF and lone CR
    turned into LF.

    Invalid UTF-8 raises CorpusError naming the byte offset of the first bad byte
    (``errors="replace"`` substitutes U+FFFD instead); see ``iter_text`` for the other checks.
    """
    return "".join(iter_text(path, errors=errors))


def text_lines(text: str) -> list[str]:
    """The lines of normalised text, split at LF only: ``str.splitlines`` would also split at
    U+2028, U+0085, form feeds and other separators inside a line, and line numbers in messages
    would then point at the wrong line."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _open(path: str):
    if path == STDIN:
        return contextlib.nullcontext(sys.stdin.buffer)  # not closed: it is not ours
    try:
        return open(path, "rb")
    except OSError as e:
        raise CorpusError(f"{path}: cannot be read ({e.strerror or e})") from None


def iter_text(path, *, errors: str = "strict", chunk_bytes: int = 0):
    """Yield the normalised text of ``path`` (``-``: standard input) in pieces of about
    ``chunk_bytes`` bytes.

    No multi-byte character and no CRLF is ever split between pieces. Refuses (CorpusError)
    missing, unreadable, empty and whitespace-only files, and files that look binary or UTF-16/32.
    Standard input is read once and kept: a reader that reads its input twice (a sniff, then the
    real pass) sees the same text the second time.
    """
    path = check_path(path)
    if errors not in ("strict", "replace"):
        raise ConfigError(f"errors must be 'strict' or 'replace', got {errors!r}")
    if path != STDIN:
        yield from _stream(path, errors, chunk_bytes)
    else:
        if (errors, sys.stdin) not in _STDIN_TEXT:
            _STDIN_TEXT[(errors, sys.stdin)] = "".join(_stream(path, errors, chunk_bytes))
        yield _STDIN_TEXT[(errors, sys.stdin)]


def _stream(path: str, errors: str, chunk_bytes: int):
    name = display_name(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    with _open(path) as f:
        head = f.read(8192)
        _sniff(name, head)
        offset = 3 if head.startswith(_BOM) else 0  # absolute byte offset of `data[0]`
        start, carry, cr, seen = offset, b"", False, False
        blocks = _blocks(f, head[offset:], chunk_bytes)
        while True:
            block = next(blocks)
            eof = not block
            data = carry + block
            cut = len(data) if eof else _utf8_boundary(data)
            data, carry = data[:cut], data[cut:]
            try:
                text = data.decode("utf-8", errors)
            except UnicodeDecodeError as e:
                raise CorpusError(
                    f"{name}: invalid UTF-8 at byte offset {offset + e.start} "
                    f"(byte 0x{data[e.start]:02x}); convert the file to UTF-8, e.g. "
                    "iconv -f latin1 -t utf-8") from None
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
        raise CorpusError(f"{name}: {'contains only whitespace' if offset > start else 'is empty'}")


def _blocks(f, head: bytes, size: int):
    """The bytes of ``f`` in blocks of ``size``, starting with ``head`` (already read: a pipe
    cannot seek back to it); an empty block at the end."""
    while head:
        yield head[:size]
        head = head[size:]
    while block := f.read(size):
        yield block
    yield b""


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



def iter_lines(path):
    """Yield (line number from 1, text, problem) for each line of ``path`` (``-``: standard input),
    read as it arrives, not whole: the text without its line break (a final CR of a CRLF dropped,
    the byte-order mark of the first line stripped), or None and one line saying why the line is
    not valid UTF-8. A bad line is reported on its own; the lines after it are read as usual."""
    path = check_path(path)
    with _open(path) as f:
        for number, raw in enumerate(f, 1):
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield number, None, (f"line {number}: invalid UTF-8 at byte {e.start + 1} of the line "
                                     f"(byte 0x{raw[e.start]:02x})")
