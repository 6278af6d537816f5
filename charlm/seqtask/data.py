"""Readers of labelled sequences: TSV for classification, CoNLL for tagging, and the restore-
spaces tagging task derived from any plain text.

Every reader returns ``Example``s: ``tokens`` is the text (classify: a string, tokenized later at
the model's level) or the list of tokens (tag), ``label`` a string (classify) or one tag per
token (tag). A problem in a file is one ``CorpusError`` naming the file and the line.
"""
from __future__ import annotations

import re

from ..data.tab_files import HEADER_NAMES, Example, read_tsv, tab_lines  # noqa: F401  (this module's readers)
from ..data.text_files import display_name, read_text, text_lines
from ..errors import CorpusError

SPACE_NEXT, NO_SPACE = "S", "-"     # restore-spaces tags: a space follows this character, or not
_WHITESPACE = re.compile(r"\s+")


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
