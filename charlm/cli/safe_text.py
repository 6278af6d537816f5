"""Text from files made safe for a terminal: control characters shown, never obeyed.

A vocabulary, checkpoint metadata, a file name or a text being scored may hold ``ESC`` sequences
that retitle the window, clear the screen or forge lines, and bidirectional overrides that make
a line read differently from what it holds. rich removes only a few control characters, so
every string that comes from a file goes through ``printable`` (one line) or ``printable_text``
(newlines and tabs kept) before it is rendered. The escapes are visible and unambiguous
(``\\x1b``, ``\\u202e``); ``--json`` output stays exact and never goes through here.
"""
from __future__ import annotations

import re

# DEL and the C1 controls, line/paragraph separators, and the bidirectional formatting marks
_OTHER = r"\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ONE_LINE = re.compile(rf"[\x00-\x1f{_OTHER}]")                   # every C0 control
_MULTI_LINE = re.compile(rf"[\x00-\x08\x0b-\x1f{_OTHER}]")         # all but \t and \n


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text) -> str:
    """``text`` on one line with every control character escaped visibly (``\\n`` too)."""
    return _ONE_LINE.sub(_escape, str(text))


def printable_text(text) -> str:
    """``text`` with control characters escaped, keeping newlines and tabs (samples, scored text)."""
    return _MULTI_LINE.sub(_escape, str(text))
