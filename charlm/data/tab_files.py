"""Tab-separated inputs: ``text<TAB>label`` lines (classification, labelled language models) and
the tab-split lines every such reader shares (``source<TAB>target`` for seq2seq).

A problem in a file is one ``CorpusError`` naming the file and the line.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorpusError
from .text_files import display_name, read_text, text_lines

HEADER_NAMES = {"label", "labels", "class", "category", "target", "tag", "language", "lang", "y"}


@dataclass(frozen=True)
class Example:
    tokens: object      # str (classify) or list[str] (tag)
    label: object       # str (classify) or list[str] (tag)


def read_tsv(path, *, header: str = "auto") -> list[Example]:
    """``text<TAB>label`` per line (the label is after the last tab; blank lines are skipped).
    header: "yes", "no" or "auto" (the first line is a header when its label is a column name
    such as ``label`` or ``class`` and appears on no other line)."""
    rows = []
    for number, line in tab_lines(path, "text<TAB>label"):
        text, label = line.rsplit("\t", 1)
        label = label.strip()
        if not label:
            raise CorpusError(f"{display_name(path)}:{number}: empty label")
        rows.append((number, text, label))
    if rows and _is_header(rows, header):
        rows = rows[1:]
    if not rows:
        raise CorpusError(f"{display_name(path)}: no examples")
    return [Example(text, label) for _, text, label in rows]


def tab_lines(path, expected: str):
    """(line number, line) of every non-blank line of ``path``; a line without a tab is one
    CorpusError naming it and the ``expected`` shape."""
    for number, line in enumerate(text_lines(read_text(path)), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise CorpusError(f"{display_name(path)}:{number}: expected {expected}, found no tab")
        yield number, line


def _is_header(rows, header: str) -> bool:
    if header in ("yes", "no"):
        return header == "yes"
    first = rows[0][2]
    return first.lower() in HEADER_NAMES and all(label != first for _, _, label in rows[1:])
