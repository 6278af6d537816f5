"""Transduction data: ``source<TAB>target`` lines, their tokens at each side's level, vocabularies,
the hold-out by source, and padded batches for the encoder-decoder.

A side at char level is its characters; at word level its whitespace-separated words (a word's
letters in, its phoneme symbols out). A source on several lines has several right answers: for
evaluation it is one item with all its targets, for training each line is one example.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.text_files import display_name, read_text, text_lines
from ..errors import CorpusError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SOURCE_SPECIALS = (PAD, UNK)
TARGET_SPECIALS = (PAD, UNK, BOS, EOS)   # the decoder reads <bos> first and stops at <eos>


def tokens(text: str, level: str) -> tuple[str, ...]:
    return tuple(text.split()) if level == "word" else tuple(text)


def join(items, level: str) -> str:
    """Tokens back into text: words separated by spaces, characters as they are."""
    return (" " if level == "word" else "").join(items)


@dataclass(frozen=True)
class Pair:
    source: tuple
    target: tuple


def read_pairs(path, source_level: str, target_level: str) -> list[Pair]:
    """The examples of a ``source<TAB>target`` file (blank lines skipped; the target is after the
    first tab); a line without a tab or with an empty side is one CorpusError naming it."""
    from ..data.tab_files import tab_lines

    name, pairs = display_name(path), []
    for number, line in tab_lines(path, "source<TAB>target"):
        source, target = line.split("\t", 1)
        pair = Pair(tokens(source.strip(), source_level), tokens(target.strip(), target_level))
        for side, items in (("source", pair.source), ("target", pair.target)):
            if not items:
                raise CorpusError(f"{name}:{number}: empty {side}")
        pairs.append(pair)
    if not pairs:
        raise CorpusError(f"{name}: no examples")
    return pairs


def read_lines_as_pairs(path, level: str) -> list[Pair]:
    """An autoencoder's examples: every non-empty line of ``path`` is its own target."""
    items = [tokens(line.strip(), level) for line in text_lines(read_text(path)) if line.strip()]
    if not items:
        raise CorpusError(f"{display_name(path)}: no examples")
    return [Pair(t, t) for t in items]


def read_sources(text: str, level: str) -> list[tuple]:
    """Sources to transduce, one per non-empty line (a ``source<TAB>target`` line gives its source)."""
    return [tokens(line.split("\t", 1)[0].strip(), level) for line in text_lines(text) if line.strip()]


def group(pairs: list[Pair]) -> list[tuple[tuple, list[tuple]]]:
    """(source, its targets) in order of first appearance: one item of evaluation per source."""
    groups: dict = {}
    for p in pairs:
        targets = groups.setdefault(p.source, [])
        if p.target not in targets:
            targets.append(p.target)
    return list(groups.items())


def hold_out(pairs: list[Pair], fraction: float, seed: int, where: str) -> tuple[list[Pair], list[Pair]]:
    """(training, dev): a ``fraction`` of the distinct sources held out with all their targets."""
    sources = [s for s, _ in group(pairs)]
    order = np.random.default_rng([seed, 7]).permutation(len(sources))
    n_dev = int(round(len(sources) * fraction))
    if n_dev < 1 or n_dev >= len(sources):
        raise CorpusError(f"{where}: {len(sources)} sources are too few to hold out {fraction:g} of them as dev "
                          "(give a dev file with --dev)")
    dev = {sources[i] for i in order[:n_dev].tolist()}
    return [p for p in pairs if p.source not in dev], [p for p in pairs if p.source in dev]


@dataclass(frozen=True)
class Vocab:
    """Token strings by id, the specials first."""
    tokens: tuple

    @classmethod
    def fit(cls, sequences, specials) -> "Vocab":
        seen = sorted({t for seq in sequences for t in seq} - set(specials))
        return cls(tuple(specials) + tuple(seen))

    @property
    def index(self) -> dict:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, items, index=None) -> np.ndarray:
        index = index or self.index
        unk = index[UNK]
        return np.fromiter((index.get(t, unk) for t in items), np.int64, len(items))

    def decode(self, ids) -> list[str]:
        return [self.tokens[i] for i in ids]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class EncodedPairs:
    """A split as ids: sources[i] (n_i,), targets[i] (m_i,) without <bos>/<eos>."""
    sources: list
    targets: list

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def lengths(self) -> np.ndarray:
        """What batches are bucketed by: source and target length together."""
        return np.array([len(s) + len(t) for s, t in zip(self.sources, self.targets)], np.int64)

    def digest(self) -> str:
        from ..runs.fingerprint import ids_digest

        def flat(seqs):
            return np.concatenate([np.array([len(s)], np.int64) for s in seqs] + [np.asarray(s, np.int64) for s in seqs])
        return ids_digest(flat(self.sources)) + "-" + ids_digest(flat(self.targets))


def encode_pairs(pairs: list[Pair], src_vocab: Vocab, tgt_vocab: Vocab, max_length: int = 0) -> EncodedPairs:
    si, ti = src_vocab.index, tgt_vocab.index
    cut = (lambda a: a[:max_length]) if max_length else (lambda a: a)
    return EncodedPairs([cut(src_vocab.encode(p.source, si)) for p in pairs],
                        [cut(tgt_vocab.encode(p.target, ti)) for p in pairs])


def pad_sources(sources: list) -> tuple[np.ndarray, np.ndarray]:
    """(ids (S, B) right-padded with <pad>, lengths (B,))."""
    lengths = np.array([len(s) for s in sources], np.int64)
    ids = np.zeros((int(lengths.max()), len(sources)), np.int64)
    for b, s in enumerate(sources):
        ids[:len(s), b] = s
    return ids, lengths


def batch(encoded: EncodedPairs, index, bos: int, eos: int):
    """(src_ids, src_lengths, tgt_in, tgt_out, tgt_lengths) of the examples at ``index``: the
    decoder reads <bos> + target and is trained to write target + <eos>."""
    src, src_lengths = pad_sources([encoded.sources[i] for i in index])
    targets = [encoded.targets[i] for i in index]
    tgt_lengths = np.array([len(t) + 1 for t in targets], np.int64)
    tgt_in = np.zeros((int(tgt_lengths.max()), len(index)), np.int64)
    tgt_out = np.zeros_like(tgt_in)
    for b, t in enumerate(targets):
        tgt_in[0, b] = bos
        tgt_in[1:len(t) + 1, b] = t
        tgt_out[:len(t), b] = t
        tgt_out[len(t), b] = eos
    return src, src_lengths, tgt_in, tgt_out, tgt_lengths
