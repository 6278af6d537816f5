"""Built-in corpora: the stdlib default, the known-entropy Markov source, names, memory text, the registry."""

import math
import os
import platform
import stat
import subprocess
import sys

import numpy as np
import pytest

from charlm import fsutil
from charlm.data import builtin_corpora as bc
from charlm.data.builtin_corpora import markov
from charlm.errors import CorpusError


@pytest.fixture(scope="module")
def stdlib_text():
    return bc.stdlib_corpus()


@pytest.fixture(scope="module")
def source():
    return bc.markov_source()


@pytest.fixture(scope="module")
def sample(source):
    return bc.markov_text(source, 300_000, seed=1)


def context_counts(source, text):
    """(A**k, A) counts of next symbol after each true context, skipping the first k symbols."""
    A, k = len(source.alphabet), source.order
    sym = np.array([source.alphabet.index(ch) for ch in text])
    ctx = np.zeros(len(sym) - k, dtype=np.int64)
    for j in range(k):
        ctx = ctx * A + sym[j:len(sym) - k + j]
    return np.bincount(ctx * A + sym[k:], minlength=A ** k * A).reshape(A ** k, A)


# --- stdlib ------------------------------------------------------------------------------------

def test_stdlib_corpus_is_big_clean_text(stdlib_text):
    data = stdlib_text.encode("utf-8")
    assert len(data) >= 1_000_000
    assert "\x00" not in stdlib_text and data.decode("utf-8") == stdlib_text
    assert stdlib_text.startswith("# file: ")
    assert stdlib_text.count("\n# file: ") >= 20
    assert "\r" not in stdlib_text


def test_stdlib_corpus_is_deterministic(stdlib_text):
    assert bc.stdlib_corpus() == stdlib_text


def test_stdlib_corpus_leaves_out_tests_and_third_party(stdlib_text):
    names = [line[len("# file: "):] for line in stdlib_text.splitlines()
             if line.startswith("# file: ")]
    assert names == sorted(names) and len(set(names)) == len(names)
    for name in names:
        parts = name.split("/")
        assert not {"test", "tests", "site-packages", "idlelib", "lib2to3"} & set(parts)


def test_stdlib_target_controls_size():
    small = bc.stdlib_corpus(20_000)
    assert 20_000 <= len(small) < 200_000
    with pytest.raises(CorpusError):
        bc.stdlib_corpus(0)


def test_write_stdlib_corpus_is_atomic(tmp_path):
    path = bc.write_stdlib_corpus(tmp_path / "stdlib.txt", target_bytes=20_000)
    assert path == tmp_path / "stdlib.txt"
    assert os.listdir(tmp_path) == ["stdlib.txt"]
    assert path.read_bytes().decode("utf-8") == bc.stdlib_corpus(20_000)


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CorpusError, match="No space left"):
        bc.write_corpus(path, "new")
    assert os.listdir(tmp_path) == ["corpus.txt"] and path.read_text() == "old"


def test_default_corpus_path_uses_cache_env_and_is_built_once(tmp_path, monkeypatch,
                                                              stdlib_text):
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "cache"))
    path = bc.default_corpus_path()
    assert path.parent == tmp_path / "cache"
    assert platform.python_version() in path.name
    assert path.read_text(encoding="utf-8") == stdlib_text
    assert os.listdir(path.parent) == [path.name]

    def must_not_rebuild(target_bytes=1_500_000):
        raise AssertionError("cached corpus was rebuilt")

    monkeypatch.setitem(bc.BUILTIN, "stdlib", bc.Builtin("x", must_not_rebuild))
    assert bc.default_corpus_path() == path


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("CHARLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("CHARLM_HOME", str(tmp_path / "home"))
    assert fsutil.resolve_cache_dir() == tmp_path / "home" / "cache"
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "c"))
    assert fsutil.resolve_cache_dir() == tmp_path / "c"
    assert fsutil.resolve_cache_dir(tmp_path / "x") == tmp_path / "x"


# --- Markov ------------------------------------------------------------------------------------

def test_markov_source_is_a_proper_stationary_chain(source):
    A = len(source.alphabet)
    assert source.probs.shape == (A ** source.order, A)
    np.testing.assert_allclose(source.probs.sum(axis=1), 1.0, atol=1e-12)
    succ = markov._successors(A ** source.order, A)
    moved = np.bincount(succ.ravel(), weights=(source.stationary[:, None] * source.probs).ravel(),
                        minlength=A ** source.order)
    np.testing.assert_allclose(moved, source.stationary, atol=1e-12)
    assert abs(source.stationary.sum() - 1.0) < 1e-12
    assert 1.0 < source.entropy_rate_bits < 2.0 < math.log2(A)


@pytest.mark.parametrize("order, alphabet, concentration", [
    (1, "ab\n", 0.5), (2, "abcdefgh \n", 0.2), (3, "xyz \n", 0.1), (2, "01", 1.0)])
def test_markov_rate_matches_plug_in_estimate(order, alphabet, concentration):
    source = bc.markov_source(order, alphabet, concentration, seed=3)
    assert 0.0 < source.entropy_rate_bits < math.log2(len(alphabet))
    text = bc.markov_text(source, 200_000, seed=4)
    counts = context_counts(source, text)
    p_hat = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts * np.log2(p_hat), 0.0)
    plug_in = -terms.sum() / counts.sum()
    assert abs(plug_in - source.entropy_rate_bits) < 0.02
    assert abs(bc.markov_bits_per_char(source, text) - source.entropy_rate_bits) < 0.02


def test_fitted_models_approach_the_rate_from_above(source, sample):
    """Count models fitted on a train split never beat the true chain on held-out text."""
    train, held_out = sample[:250_000], sample[250_000:]
    floor = bc.markov_bits_per_char(source, held_out)
    A = len(source.alphabet)
    losses = {}
    for order in (1, 2, 3):
        fitted = bc.MarkovSource(order, source.alphabet, None, None, float("nan"))
        counts = context_counts(fitted, train) + 0.5                 # KT smoothing
        probs = counts / counts.sum(axis=1, keepdims=True)
        fitted = bc.MarkovSource(order, source.alphabet, probs, None, float("nan"))
        losses[order] = bc.markov_bits_per_char(fitted, held_out)
        assert losses[order] >= floor - 0.005
    assert losses[1] > floor + 0.1          # too short a context cannot reach the rate
    assert losses[2] < floor + 0.02         # the right order nearly does


def test_markov_text_is_seeded_and_tidy(source, sample):
    assert len(sample) == 300_000 and set(sample) <= set(source.alphabet)
    assert bc.markov_text(source, 1000, seed=1) == sample[:1000]
    assert bc.markov_text(source, 1000, seed=2) != sample[:1000]
    assert not bc.markov_source(seed=1).probs.tolist() == source.probs.tolist()
    # tidy: no empty lines, no empty or padded words, text starts at a line start
    for pair in ("\n\n", "  ", " \n", "\n "):
        assert pair not in sample
    assert sample[0] not in " \n"
    assert bc.markov_text(source, 0) == ""


def test_markov_rejects_bad_parameters():
    with pytest.raises(CorpusError):
        bc.markov_source(order=0)
    with pytest.raises(CorpusError):
        bc.markov_source(alphabet="aab")
    with pytest.raises(CorpusError):
        bc.markov_source(concentration=0.0)
    with pytest.raises(CorpusError):
        bc.markov_source(alphabet=" \n")
    with pytest.raises(CorpusError, match="alphabet"):
        bc.markov_bits_per_char(bc.markov_source(), "abc!")


@pytest.mark.parametrize("probs", [[[0.0, 1.0], [1.0, 0.0]],      # period 2
                                   [[1.0, 0.0], [0.0, 1.0]]])     # two closed classes
def test_non_ergodic_chains_are_rejected(probs):
    with pytest.raises(CorpusError, match="ergodic"):
        markov._check_ergodic(markov._successors(2, 2), np.array(probs), root=0)


# --- names and registry ------------------------------------------------------------------------

def test_pseudo_names():
    text = bc.pseudo_names(500, seed=0)
    names = text.splitlines()
    assert len(names) == 500 and text.endswith("\n")
    assert all(name.isalpha() and name.islower() and len(name) >= 2 for name in names)
    assert bc.pseudo_names(500, seed=0) == text != bc.pseudo_names(500, seed=1)


def test_registry_materialises_and_caches(tmp_path):
    assert set(bc.BUILTIN) == {"stdlib", "markov", "names", "memory"}
    for description, make in bc.BUILTIN.values():
        assert description and callable(make)
    path = bc.builtin_corpus_path("markov", cache_dir=tmp_path, n_chars=5_000)
    assert path.read_text(encoding="utf-8") == bc.markov_corpus(5_000)
    assert bc.builtin_corpus_path("markov", tmp_path, n_chars=5_000, seed=0) == path
    assert bc.builtin_corpus_path("markov", tmp_path, n_chars=5_000, seed=1) != path
    names = bc.builtin_corpus_path("names", tmp_path, n=10)
    assert names.read_text(encoding="utf-8") == bc.pseudo_names(10)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_registry_errors(tmp_path):
    with pytest.raises(CorpusError, match="known: markov, memory, names, stdlib"):
        bc.builtin_corpus_path("shakespeare", tmp_path)
    with pytest.raises(CorpusError, match="markov"):
        bc.builtin_corpus_path("markov", tmp_path, n_char=10)


# --- memory text, floors, durability -----------------------------------------------------------

def test_memory_corpus_is_the_memory_task_text(tmp_path):
    from charlm.data.builtin_corpora.memory_task import memory_text

    path = bc.builtin_corpus_path("memory", tmp_path, n_lines=50, distances=[3, 7])
    assert path.read_text(encoding="utf-8") == memory_text(50, (3, 7))
    assert {len(line) - 1 for line in path.read_text(encoding="utf-8").splitlines()} == {3, 7}
    with pytest.raises(CorpusError, match="distance"):
        bc.builtin_corpus_path("memory", tmp_path, n_lines=5, distances=(1,))
    with pytest.raises(CorpusError, match="n_lines"):
        memory_text(-1)


def test_builtin_corpora_import_nothing_above_them():
    """Corpora sit on the floor where text is made: importing them loads no reader, trainer or
    inspector (they only need the errors and the filesystem helper)."""
    code = ("import sys, charlm.data.builtin_corpora\n"
            "print(sorted(m for m in sys.modules if m.startswith('charlm.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {m for m in eval(out) if not m.startswith("charlm.data.builtin_corpora")}
    assert loaded == {"charlm.data", "charlm.errors", "charlm.fsutil"}


def test_write_corpus_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def spy(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = bc.write_corpus(tmp_path / "new" / "c.txt", "text\n")
    assert path.read_text(encoding="utf-8") == "text\n" and synced == ["file", "dir"]


@pytest.mark.parametrize("eos", ["line", "paragraph"])
def test_tidy_markov_text_reads_back_one_token_per_symbol(tmp_path, eos):
    """corpora/README.md's claim: charlm's reader turns a tidy chain's text into a one-to-one
    relabelling of its symbols (line: each newline is one <eos>; paragraph: newlines stay
    characters), apart from the <eos> that opens the stream and the one that closes it."""
    from charlm.data.corpus import build_corpus

    text = bc.markov_corpus(5_000, seed=2)
    path = tmp_path / "m.txt"
    path.write_text(text, encoding="utf-8")
    c = build_corpus([path], eos=eos, val_fraction=0.0)
    tok = c.tokenizer
    if eos == "line":
        body = [tok.eos_id if ch == "\n" else tok.encode(ch)[0] for ch in text]
        expected = [tok.eos_id] + body + ([] if text.endswith("\n") else [tok.eos_id])
    else:
        expected = [tok.eos_id] + tok.encode(text.rstrip("\n")).tolist() + [tok.eos_id]
    assert c.train.tolist() == expected
