"""Readers of labelled sequences: TSV for classification, CoNLL for tagging, and the restore-
spaces tagging task derived from any plain text.

Every reader returns ``Example``s: ``tokens`` is the text (classify: a string, tokenized later at
the model's level) or the list of tokens (tag), ``label`` a string (classify) or one tag per
token (tag). A problem in a file is one ``CorpusError`` naming the file and the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..data.text_files import display_name, read_text, text_lines
from ..errors import CorpusError

SPACE_NEXT, NO_SPACE = "S", "-"     # restore-spaces tags: a space follows this character, or not
HEADER_NAMES = {"label", "labels", "class", "category", "target", "tag", "language", "lang", "y"}
_WHITESPACE = re.compile(r"\s+")


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


def read_conll(path) -> list[Example]:
    """One ``token<TAB or spaces>tag`` per line (the token first, the tag last; other columns are
    ignored), a blank line between sequences; ``-DOCSTART-`` lines are skipped."""
    examples, tokens, tags = [], [], []
    for number, line in enumerate(text_lines(read_text(path)) + [""], 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                examples.append(Example(tokens, tags))
                tokens, tags = [], []
            continue
        if len(fields) < 2:
            raise CorpusError(f"{display_name(path)}:{number}: expected a token and its tag, found one field")
        tokens.append(fields[0])
        tags.append(fields[-1])
    if not examples:
        raise CorpusError(f"{display_name(path)}: no sequences")
    return examples


def restore_spaces_examples(text: str, max_chars: int = 200) -> list[Example]:
    """The restore-spaces task from plain text: each line (whitespace runs made one space, long
    lines cut at a space into pieces of at most ``max_chars`` characters) becomes its characters
    without the spaces, tagged ``S`` where a space followed the character, else ``-``."""
    examples = []
    for line in text_lines(text):
        words = _WHITESPACE.sub(" ", line).strip().split(" ")
        piece, size = [], 0
        for word in words + [None]:
            if word is None or (piece and size + len(word) > max_chars):
                if piece:
                    examples.append(_spaces_example(piece))
                piece, size = [], 0
            if word:
                piece.append(word)
                size += len(word)
    return examples


def _spaces_example(words: list[str]) -> Example:
    chars, tags = [], []
    for i, word in enumerate(words):
        chars.extend(word)
        tags.extend([NO_SPACE] * (len(word) - 1) + [SPACE_NEXT if i < len(words) - 1 else NO_SPACE])
    return Example(chars, tags)


def spaces_to_text(chars, tags) -> str:
    """Characters with a space inserted after each one tagged ``S``: the restored text."""
    return "".join(c + (" " if t == SPACE_NEXT else "") for c, t in zip(chars, tags)).rstrip(" ")


def read_restore_spaces(path, max_chars: int = 200) -> list[Example]:
    examples = restore_spaces_examples(read_text(path), max_chars)
    if not examples:
        raise CorpusError(f"{display_name(path)}: no text to derive the restore-spaces task from")
    return examples
