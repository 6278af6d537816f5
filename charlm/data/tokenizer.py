"""Char and word vocabularies: the two specials, encode/decode, and the JSON form.

Ids 0 and 1 are ``<eos>`` and ``<unk>`` at both levels. ``<eos>`` both starts and ends every
sequence (makemore's convention, see sequences.py); ``<unk>`` stands for anything the vocabulary
does not know.

- char level: the vocabulary is the specials, then the characters sorted by code point
  (makemore's ``sorted(set(text))``). The strings "<eos>" and "<unk>" inside a text are just
  five ordinary characters each: a char model never sees them as one token.
- word level: tokens are the pieces between whitespace (``split="whitespace"``) or runs of word
  characters and single punctuation marks (``split="words"``), ordered by (-count, token). A
  line break is a token of its own (``NEWLINE``), so a poem keeps its lines; a vocabulary without
  it (fitted on text that had none inside its sequences, or saved before line breaks were
  tokens) drops line breaks when encoding, as it always did. The literal token text "<eos>" /
  "<unk>" maps to the special, so a corpus can mark its own boundaries. Decoding joins tokens with
  single spaces, none next to a line break (other layout whitespace is not kept).

``max_vocab`` counts the two specials: ``max_vocab=10000`` gives exactly V = 10000 (what sets
the size of the model), and at either level rarer tokens beyond it become ``<unk>``.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Iterable

import numpy as np

from ..errors import ConfigError, VocabError

EOS, UNK = "<eos>", "<unk>"
LEVELS = ("char", "word")
SPLITS = ("whitespace", "words")
FORMAT, VERSION = "charlm-tokenizer", 1
_KEYS = ("format", "version", "level", "split", "tokens")
NEWLINE = "\n"   # the word-level token of a line break
# "words": the specials first so "<eos>" is one token, then \w runs, then single punctuation marks
_WORDS = re.compile(r"<eos>|<unk>|\n|\w+|[^\w\s]")
_PIECES = re.compile(r"\n|[^\s]+")   # "whitespace": what str.split() gives, and each line break


def split_words(text: str, split: str) -> list[str]:
    """Word-level tokens of ``text`` for the given split rule, each line break a NEWLINE token."""
    return (_PIECES if split == "whitespace" else _WORDS).findall(text)


def code_points(text: str) -> np.ndarray:
    """(N,) code points of ``text``: uint8 for ASCII (the common fast case), else uint32.

    ``surrogatepass`` keeps lone surrogates (which click can hand us from a badly encoded argv)
    as their own code points, so they come out as unknown characters instead of a crash.
    """
    if text.isascii():  # O(1) in CPython
        return np.frombuffer(text.encode("ascii"), np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


def byte_counts(b: np.ndarray) -> np.ndarray:
    """(256,) counts of each value in a contiguous uint8 array. Counted two bytes at a time: one
    65,536-bin bincount over half as many elements, folded back, beats a plain bincount (which
    widens every byte to a 64-bit index first)."""
    n = b.size // 2 * 2
    pairs = np.bincount(b[:n].view(np.uint16), minlength=1 << 16).reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)  # one byte of each pair, then the other
    if b.size % 2:
        counts[b[-1]] += 1
    return counts


def count_tokens(texts: Iterable[str], level: str, split: str = "whitespace") -> Counter:
    """Token -> count over all ``texts`` (specials excluded), the input of ``from_counts``."""
    counts: Counter = Counter()
    for text in texts:
        if level == "char":
            cps = code_points(text)
            bins = byte_counts(cps) if cps.dtype == np.uint8 else np.bincount(cps)  # <= 0x110000 bins
            nonzero = np.flatnonzero(bins)
            counts.update({chr(c): int(bins[c]) for c in nonzero})
        else:
            counts.update(split_words(text, split))
    for special in (EOS, UNK):
        counts.pop(special, None)
    return counts


class Tokenizer:
    """A vocabulary at one level. ``tokens[i]`` is the text of id i; ids 0/1 are <eos>/<unk>."""

    eos_id = 0
    unk_id = 1

    def __init__(self, level: str, tokens: list[str], split: str = ""):
        _check(level, tokens, split)
        self.level = level
        self.tokens = list(tokens)
        self.split = split
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if level == "char":
            self._build_char_tables()

    # -- construction --------------------------------------------------------------------

    @classmethod
    def fit(cls, texts: Iterable[str], level: str = "char", *, split: str = "whitespace",
            max_vocab: int = 0, min_count: int = 1) -> "Tokenizer":
        """Fit a vocabulary on an iterable of text chunks (so a huge file can be fed in pieces)."""
        if isinstance(texts, str):
            texts = [texts]
        check_fit_args(level, split, max_vocab, min_count)
        return cls.from_counts(count_tokens(texts, level, split), level, split=split,
                               max_vocab=max_vocab, min_count=min_count)

    @classmethod
    def from_counts(cls, counts: dict, level: str = "char", *, split: str = "whitespace",
                    max_vocab: int = 0, min_count: int = 1) -> "Tokenizer":
        """Vocabulary from token counts: drop counts < min_count, keep the most frequent."""
        check_fit_args(level, split, max_vocab, min_count)
        kept = [(t, c) for t, c in counts.items() if c >= min_count and t not in (EOS, UNK)]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))  # most frequent first, ties by token
        if max_vocab:
            kept = kept[: max_vocab - 2]
        if level == "char":
            surrogates = [t for t, _ in kept if 0xD800 <= ord(t) <= 0xDFFF]
            if surrogates:
                raise VocabError(f"text contains a lone surrogate {surrogates[0]!r}, "
                                 "which is not valid Unicode")
            body = sorted(t for t, _ in kept)  # code-point order, like makemore
            return cls("char", [EOS, UNK] + body, "")
        return cls("word", [EOS, UNK] + [t for t, _ in kept], split)

    def _build_char_tables(self):
        # Dense table for code points below `size` (one gather per character), sorted keys for
        # the rest (astral code points: emoji, rare CJK), looked up with searchsorted.
        cps = np.array([ord(t) for t in self.tokens[2:]], dtype=np.int64)
        ids = np.arange(2, len(self.tokens), dtype=np.int64)
        bmp = cps < 0x10000
        size = max(256, int(cps[bmp].max()) + 1 if bmp.any() else 0)
        self._table = np.full(size, self.unk_id, dtype=self.id_dtype)
        self._table[cps[bmp]] = ids[bmp]
        # ASCII text with byte-sized ids: bytes.translate is a C loop, faster than NumPy's gather
        self._byte_table = self._table[:256].tobytes() if self.id_dtype == np.uint8 else None
        order = np.argsort(cps)
        self._keys = cps[order].astype(np.uint32)
        self._vals = ids[order].astype(self.id_dtype)

    # -- encode / decode -----------------------------------------------------------------

    def encode(self, text: str, *, strict: bool = False, dtype=np.int32) -> np.ndarray:
        """(N,) ids of ``text`` in ``dtype``. Unknown tokens become unk_id, or raise VocabError
        naming them when ``strict``."""
        if self.level == "char":
            cps = code_points(text)
            ids = self._lookup(cps)
            unknown = cps[ids == self.unk_id] if strict else cps[:0]
            if len(unknown):
                _, first = np.unique(unknown, return_index=True)
                distinct = [chr(unknown[i]) for i in np.sort(first)[:5]]
                self._raise_unknown(distinct, len(first), len(unknown), "character")
            return ids.astype(dtype, copy=False)
        words = self._words(text)
        get = self._index.get
        ids = np.fromiter((get(w, 1) for w in words), dtype=dtype, count=len(words))
        if strict and (ids == self.unk_id).any():
            unknown = [w for w in words if w not in self._index]
            distinct = list(dict.fromkeys(unknown))
            self._raise_unknown(distinct, len(distinct), len(unknown), "word")
        return ids

    def _lookup(self, cps: np.ndarray) -> np.ndarray:
        """(N,) code points -> (N,) ids in id_dtype."""
        table = self._table
        if cps.dtype == np.uint8 and self._byte_table is not None:
            return np.frombuffer(bytearray(cps).translate(self._byte_table), np.uint8)
        if cps.dtype == np.uint8 or cps.size == 0 or cps.max() < len(table):
            return table[cps]
        big = cps >= len(table)
        ids = table[np.where(big, 0, cps)]
        rest, keys = cps[big], self._keys
        if len(keys):
            pos = np.minimum(np.searchsorted(keys, rest), len(keys) - 1)
            ids[big] = np.where(keys[pos] == rest, self._vals[pos], self.unk_id)
        else:
            ids[big] = self.unk_id
        return ids

    def _raise_unknown(self, distinct: list[str], n_distinct: int, count: int, what: str):
        """``distinct``: the first few unknown tokens, in order of first appearance."""
        shown = ", ".join(repr(t) for t in distinct[:5])
        more = f" and {n_distinct - 5} more" if n_distinct > 5 else ""
        raise VocabError(f"{count} unknown {what}(s) not in the vocabulary: {shown}{more}")

    def count_unknown(self, text: str) -> int:
        """Number of out-of-vocabulary tokens in ``text``."""
        if self.level == "char":
            return int(np.count_nonzero(self._lookup(code_points(text)) == self.unk_id))
        return sum(1 for w in self._words(text) if w not in self._index)

    def _words(self, text: str) -> list[str]:
        """The word-level tokens of ``text``; line breaks only when the vocabulary has them."""
        words = split_words(text, self.split)
        return words if NEWLINE in self._index else [w for w in words if w != NEWLINE]

    def decode(self, ids) -> str:
        """Text of ``ids``. <eos> becomes "\\n"; char level concatenates, word level joins
        tokens with single spaces (none next to a line break)."""
        ids = np.asarray(ids).ravel()
        if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(self)):
            bad = ids[(ids < 0) | (ids >= len(self))] if ids.dtype.kind in "iu" else ids[:1]
            raise VocabError(f"id {bad[0]!r} is not in a vocabulary of {len(self)} tokens")
        toks = self.tokens
        if self.level == "char":
            return "".join("\n" if i == 0 else toks[i] for i in ids.tolist())
        out, prev_word = [], False
        for i in ids.tolist():
            if i == self.eos_id or toks[i] == NEWLINE:
                out.append("\n")
                prev_word = False
            else:
                out.append(" " + toks[i] if prev_word else toks[i])
                prev_word = True
        return "".join(out)

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "level": self.level, "split": self.split,
                "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d) -> "Tokenizer":
        """Rebuild from ``to_dict``'s form; anything malformed raises VocabError.
        "format" and "version" are optional; "level", "split" and "tokens" are required."""
        if not isinstance(d, dict):
            raise VocabError(f"tokenizer must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("level", "split", "tokens") if k not in d]
        extra = [repr(k) for k in d if k not in _KEYS]
        if missing or extra:
            raise VocabError(f"tokenizer has missing keys {missing} / unknown keys {extra}")
        # format and version may be left out (a checkpoint stores them itself), not be wrong
        if d.get("format", FORMAT) != FORMAT:
            raise VocabError(f"not a charlm tokenizer (format {d['format']!r})")
        version = d.get("version", VERSION)
        if type(version) is not int or version != VERSION:
            raise VocabError(f"unsupported tokenizer version {version!r} (expected {VERSION})")
        return cls(d["level"], d["tokens"], d["split"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, s) -> "Tokenizer":
        try:
            d = json.loads(s)
        except (ValueError, TypeError, RecursionError) as e:
            raise VocabError(f"tokenizer is not valid JSON: {e}") from None
        return cls.from_dict(d)

    # -- small things --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def id_dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every id."""
        n = len(self.tokens)
        return np.dtype(np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else np.uint32)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Tokenizer) and self.level == other.level
                and self.split == other.split and self.tokens == other.tokens)

    def __repr__(self) -> str:
        return f"Tokenizer(level={self.level!r}, split={self.split!r}, vocab={len(self)})"


def check_fit_args(level, split, max_vocab, min_count):
    """ConfigError unless these are valid arguments of ``Tokenizer.fit``."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if level == "word" and split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 0 \
            or 0 < max_vocab < 3:
        raise ConfigError(f"max_vocab must be 0 (no limit) or >= 3 (it counts <eos> and <unk>), "
                          f"got {max_vocab!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"min_count must be an integer >= 1, got {min_count!r}")


def _check(level, tokens, split):
    """Validate a vocabulary strictly; every problem is one VocabError line."""
    if not isinstance(level, str) or level not in LEVELS:
        raise VocabError(f"tokenizer level must be one of {', '.join(LEVELS)}, got {level!r}")
    want = ("",) if level == "char" else SPLITS
    if not isinstance(split, str) or split not in want:
        raise VocabError(f"{level} tokenizer split must be one of {want}, got {split!r}")
    if not isinstance(tokens, (list, tuple)):
        raise VocabError(f"tokenizer tokens must be a list, got {type(tokens).__name__}")
    if len(tokens) < 2 or tokens[0] != EOS or tokens[1] != UNK:
        raise VocabError(f"tokenizer tokens must start with {EOS!r}, {UNK!r}")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise VocabError(f"tokenizer token {i} is a {type(t).__name__}, not a string")
        if i >= 2 and level == "char" and len(t) != 1:
            raise VocabError(f"char tokenizer token {i} ({t!r}) is not a single character")
        if i >= 2 and level == "word" and t.split() != [t] and t != NEWLINE:
            raise VocabError(f"word tokenizer token {i} ({t!r}) is empty or contains whitespace")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise VocabError(f"tokenizer token {i} ({t!r}) is not valid Unicode") from None
    if len(set(tokens)) != len(tokens):
        seen = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))
        raise VocabError(f"tokenizer token {dup!r} appears more than once")
