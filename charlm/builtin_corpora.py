"""Built-in corpora: text that charlm can train on without the user bringing any.

Four sources, each a function that returns a ``str`` and is registered in ``BUILTIN``:

* ``stdlib``  real text on every machine with Python: the standard library's own ``.py``
  source, prose-heavy modules first. It is the default corpus of ``charlm train``.
* ``markov``  a random order-k Markov chain whose entropy rate is known exactly, so a trained
  model's held-out bits per character must approach ``entropy_rate_bits`` from above.
* ``names``   made-up pronounceable names, one per line, for line-mode demos and tests.
* ``memory``  brackets closed exactly d characters later (``charlm.inspect.memory``), for the
  long-range memory demo.

``builtin_corpus_path`` writes a corpus to the cache directory once (atomically) and returns
the path, so the rest of charlm only ever reads files. See ``corpora/README.md``.
"""

import hashlib
import inspect
import os
import platform
import sysconfig
import tempfile
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from charlm.errors import CorpusError

# Bump when a generator's output changes, so stale cached files are not reused.
FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------------------
# cache directory and atomic writes


def resolve_cache_dir(override=None) -> Path:
    """Where built-in corpora are cached: ``override``, else ``$CHARLM_CACHE_DIR``, else
    ``$CHARLM_HOME/cache``, else ``$XDG_CACHE_HOME/charlm``, else ``~/.cache/charlm``."""
    if override is not None:
        return Path(override)
    if os.environ.get("CHARLM_CACHE_DIR"):
        return Path(os.environ["CHARLM_CACHE_DIR"])
    if os.environ.get("CHARLM_HOME"):
        return Path(os.environ["CHARLM_HOME"]) / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "charlm"


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` as UTF-8 so that ``path`` is either absent or complete, never partial.

    A temp file in the same directory (so ``os.replace`` is a same-filesystem rename) is
    fsynced, then renamed over ``path``. Bytes are written, not text, so Windows does not turn
    ``\\n`` into ``\\r\\n`` and the file is identical everywhere.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CorpusError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CorpusError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    return path


# ---------------------------------------------------------------------------------------------
# 1. the Python standard library as a corpus

# Directories that are test suites, third-party code, generated tables or demo oddities.
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
              "idlelib", "lib2to3", "turtledemo", "ensurepip", "msilib", "pydoc_data",
              "encodings", "lib-dynload", "__phello__"}
# Single files that are generated data or not really Python prose.
_SKIP_FILES = {"this.py",              # the Zen of Python, ROT13-encoded
               "html/entities.py",     # a 75 kB generated table of character names
               "re/_casefix.py", "stringprep.py", "keyword.py", "token.py",
               "_opcode_metadata.py", "__hello__.py"}
_MIN_FILE_BYTES = 2_000     # empty __init__.py files add headers and little else
_MAX_FILE_BYTES = 160_000   # one huge file (e.g. _pydecimal.py) would crowd out the rest


def _prose_fraction(text: str) -> float:
    """Rough share of characters in comments and triple-quoted strings.

    A line-based guess (tokenize is right but ~30x slower): a line toggles "inside a
    docstring" when it holds an odd number of triple quotes.
    """
    prose, inside = 0, False
    for line in text.splitlines():
        stripped = line.lstrip()
        quotes = line.count('"""') + line.count("'''")
        if inside or quotes or stripped.startswith("#"):
            prose += len(stripped)
        if quotes % 2:
            inside = not inside
    return prose / max(len(text), 1)


def stdlib_files(root=None) -> list:
    """Eligible stdlib sources as ``(relative posix path, text)``, sorted by path.

    Eligible: ASCII-only ``.py`` files (the 14 or so files with other characters would add
    ~40 one-off symbols to the vocabulary) of moderate size outside ``_SKIP_DIRS``.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    paths = []
    for folder, dirs, files in os.walk(root):
        # prune in place so os.walk never descends into site-packages (most of the files)
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith("config-")]
        paths += [Path(folder, f) for f in files if f.endswith(".py")]
    found = []
    for path in sorted(paths, key=lambda p: p.relative_to(root).parts):
        rel = path.relative_to(root)
        name = rel.as_posix()
        if (name in _SKIP_FILES or rel.name.startswith(("_sysconfigdata", "test_"))):
            continue
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        if not (_MIN_FILE_BYTES <= len(raw) <= _MAX_FILE_BYTES) or not raw.isascii():
            continue
        text = raw.decode("ascii").replace("\r\n", "\n").replace("\r", "\n")
        # other control characters (form feeds, NULs) would be one-off vocabulary entries
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in set(text)):
            continue
        found.append((name, text))
    return found


def stdlib_corpus(target_bytes: int = 1_500_000) -> str:
    """About ``target_bytes`` of this interpreter's standard library source, as one text.

    Files are ranked by their share of comments and docstrings (then by path), taken until
    the total reaches ``target_bytes``, and emitted in path order. Each one starts with a
    ``# file: json/decoder.py`` line and files are separated by two blank lines, as PEP 8
    separates top-level definitions. Deterministic for a given Python installation.
    """
    if not isinstance(target_bytes, int) or target_bytes <= 0:
        raise CorpusError(f"target_bytes must be a positive integer, got {target_bytes!r}")
    files = stdlib_files()
    if not files:
        raise CorpusError("no readable standard library .py files found under "
                          f"{sysconfig.get_paths()['stdlib']} (zipped or stripped Python?); "
                          "pass a corpus file instead")
    ranked = sorted(files, key=lambda f: (-round(_prose_fraction(f[1]), 6), f[0]))
    chosen, total = [], 0
    for name, text in ranked:
        if total >= target_bytes:
            break
        doc = f"# file: {name}\n" + text.strip("\n") + "\n"
        chosen.append((name, doc))
        total += len(doc) + 2
    return "\n\n".join(doc for _, doc in sorted(chosen))


def write_stdlib_corpus(path, target_bytes: int = 1_500_000) -> Path:
    """Write ``stdlib_corpus(target_bytes)`` to ``path`` atomically and return the path."""
    return atomic_write_text(path, stdlib_corpus(target_bytes))


def default_corpus_path(cache_dir=None) -> Path:
    """The cached stdlib corpus that ``charlm train`` uses when given no text; built on first use."""
    return builtin_corpus_path("stdlib", cache_dir=cache_dir)


# ---------------------------------------------------------------------------------------------
# 2. a Markov chain with a known entropy rate

# Every allowed transition keeps at least this much mass (spread evenly), so rows drawn
# from a sparse Dirichlet cannot cut the chain into pieces. See _check_ergodic.
_FLOOR = 0.01


@dataclass(frozen=True, eq=False)   # eq on arrays is ambiguous; compare by identity
class MarkovSource:
    order: int                  # k, symbols of context
    alphabet: str               # A symbols; the context index is base-A, newest symbol last
    probs: np.ndarray           # (A**k, A) P(next symbol | context), rows sum to 1
    stationary: np.ndarray      # (A**k,) pi, the unique stationary distribution of contexts
    entropy_rate_bits: float    # H = -sum_s pi(s) sum_c P(c|s) log2 P(c|s), bits per symbol


def _successors(n_ctx: int, A: int) -> np.ndarray:
    """(n_ctx, A) index of the context after emitting symbol c in context s."""
    return (np.arange(n_ctx)[:, None] * A + np.arange(A)[None, :]) % n_ctx


def _check_ergodic(succ: np.ndarray, probs: np.ndarray, root: int) -> None:
    """Raise unless the chain has one closed class and it is aperiodic (so pi is unique).

    Every context must reach ``root``; the class of ``root`` has period
    gcd(level[u] + 1 - level[v]) over its edges u -> v, with BFS levels from ``root``.
    """
    edge = probs > 0
    reaches = np.zeros(len(succ), bool)
    reaches[root] = True
    while True:                                   # backward reachability, one hop at a time
        more = reaches | (edge & reaches[succ]).any(axis=1)
        if (more == reaches).all():
            break
        reaches = more
    level = np.full(len(succ), -1)
    level[root], frontier, depth = 0, np.array([root]), 0
    while frontier.size:                          # forward BFS levels
        depth += 1
        nxt = np.unique(succ[frontier][edge[frontier]])
        nxt = nxt[level[nxt] < 0]
        level[nxt] = depth
        frontier = nxt
    u, c = np.nonzero(edge & (level >= 0)[:, None])
    period = np.gcd.reduce(np.abs(level[u] + 1 - level[succ[u, c]]))
    if not reaches.all() or period != 1:
        raise CorpusError("Markov chain is not ergodic; use an alphabet with more ordinary "
                          "symbols")


def _stationary(succ: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """pi = pi P by power iteration on the sparse (A**k, A) form of the transition matrix."""
    n = len(succ)
    pi = np.full(n, 1.0 / n)
    for _ in range(100_000):
        new = np.bincount(succ.ravel(), weights=(pi[:, None] * probs).ravel(), minlength=n)
        if np.abs(new - pi).sum() < 1e-14:
            return new / new.sum()
        pi = new
    raise CorpusError("Markov chain's stationary distribution did not converge")


def markov_source(order: int = 2, alphabet: str = "abcdefgh \n", concentration: float = 0.2,
                  seed: int = 0, tidy: bool = True) -> MarkovSource:
    """A random order-``order`` Markov chain over ``alphabet`` and its exact entropy rate.

    Each context's next-symbol row is Dirichlet(``concentration``) (small = peaked = low
    entropy) mixed with ``_FLOOR`` of uniform mass. ``tidy`` forbids a space or newline
    right after a space or newline, so lines are never empty and words never empty or
    padded: splitting into lines or words is then lossless, which keeps the per-token rate
    equal to the per-symbol rate (see corpora/README.md).
    """
    if not isinstance(order, int) or order < 1:
        raise CorpusError(f"order must be an integer >= 1, got {order!r}")
    if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
        raise CorpusError(f"alphabet must have >= 2 distinct symbols, got {alphabet!r}")
    A = len(alphabet)
    n_ctx = A ** order
    if n_ctx > 2 ** 20:
        raise CorpusError(f"{A}**{order} = {n_ctx} contexts is too many (limit 2**20)")
    if not concentration > 0:
        raise CorpusError(f"concentration must be > 0, got {concentration!r}")
    blank = [i for i, ch in enumerate(alphabet) if ch in " \n"] if tidy else []
    if len(blank) == A:
        raise CorpusError("tidy alphabet needs a symbol other than space and newline")

    rng = np.random.default_rng(seed)
    allowed = np.ones((n_ctx, A), bool)
    last = np.arange(n_ctx) % A                           # newest symbol of each context
    allowed[np.ix_(np.isin(last, blank), blank)] = False
    rows = rng.dirichlet(np.full(A, float(concentration)), size=n_ctx) * allowed
    total = rows.sum(axis=1, keepdims=True)
    # a row whose Dirichlet mass fell on forbidden symbols only becomes uniform over allowed
    uniform = allowed / allowed.sum(axis=1, keepdims=True)
    rows = np.where(total > 0, rows / np.where(total > 0, total, 1.0), uniform)
    probs = (1.0 - _FLOOR) * rows + _FLOOR * uniform

    succ = _successors(n_ctx, A)
    ordinary = next(i for i in range(A) if i not in blank)
    _check_ergodic(succ, probs, root=ordinary * (n_ctx - 1) // (A - 1))  # "aa..a"
    pi = _stationary(succ, probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log2(probs), 0.0)
    rate = float(-(pi * plogp.sum(axis=1)).sum())
    probs.setflags(write=False)
    pi.setflags(write=False)
    return MarkovSource(order, alphabet, probs, pi, rate)


def markov_text(source: MarkovSource, n_chars: int, seed: int = 0) -> str:
    """``n_chars`` symbols of the chain, starting just after a newline when there is one.

    The first context is drawn from pi (conditioned on ending in ``\\n`` if the alphabet
    has it, so the text starts at a line start) and is not emitted. One uniform per symbol,
    inverted through that context's CDF: about 0.6 s per million symbols.
    """
    if not isinstance(n_chars, int) or n_chars < 0:
        raise CorpusError(f"n_chars must be an integer >= 0, got {n_chars!r}")
    A, n_ctx = len(source.alphabet), len(source.probs)
    rng = np.random.default_rng(seed)
    start = source.stationary.copy()
    if "\n" in source.alphabet:
        start[np.arange(n_ctx) % A != source.alphabet.index("\n")] = 0.0
    ctx = int(rng.choice(n_ctx, p=start / start.sum()))
    cdf = np.cumsum(source.probs, axis=1)
    cdf[:, -1] = 1.0                          # rounding must not leave a gap above the last
    rows, succ = cdf.tolist(), _successors(n_ctx, A).tolist()
    out = [0] * n_chars
    for i, u in enumerate(rng.random(n_chars).tolist()):
        c = bisect_right(rows[ctx], u)
        out[i] = c
        ctx = succ[ctx][c]
    return "".join(np.array(list(source.alphabet))[np.array(out, dtype=np.intp)].tolist())


def markov_bits_per_char(source: MarkovSource, text: str) -> float:
    """The true chain's mean -log2 P(symbol | previous k symbols) over ``text[k:]``.

    The exact floor for this very text: no model should score clearly below it (only by
    sampling luck, ~1/sqrt(len) bits), and its expectation is ``entropy_rate_bits``.
    """
    k, A = source.order, len(source.alphabet)
    lookup = {ch: i for i, ch in enumerate(source.alphabet)}
    try:
        sym = np.array([lookup[ch] for ch in text], dtype=np.int64)
    except KeyError as e:
        raise CorpusError(f"symbol {e.args[0]!r} is not in the chain's alphabet") from e
    if len(sym) <= k:
        raise CorpusError(f"need more than {k} symbols to score, got {len(sym)}")
    ctx = np.zeros(len(sym) - k, dtype=np.int64)
    for j in range(k):                                   # base-A number, newest symbol last
        ctx = ctx * A + sym[j:len(sym) - k + j]
    return float(-np.log2(source.probs[ctx, sym[k:]]).mean())


def markov_corpus(n_chars: int = 1_000_000, order: int = 2, alphabet: str = "abcdefgh \n",
                  concentration: float = 0.2, seed: int = 0, tidy: bool = True) -> str:
    """Text of ``markov_source(order, alphabet, concentration, seed, tidy)``, seeded by ``seed``."""
    source = markov_source(order, alphabet, concentration, seed, tidy)
    return markov_text(source, n_chars, seed)


# ---------------------------------------------------------------------------------------------
# 3. pseudo names

_ONSETS = ("", "b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n",
           "p", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "ai", "ea", "ie", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "nd", "th", "x")


def pseudo_names(n: int = 5_000, seed: int = 0) -> str:
    """``n`` lowercase made-up names, one per line: 2-3 syllables of onset + vowel + coda."""
    if not isinstance(n, int) or n < 0:
        raise CorpusError(f"n must be an integer >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    syllables = rng.integers(2, 4, size=n)
    parts = [rng.integers(0, len(table), size=(n, 3)).tolist()
             for table in (_ONSETS, _VOWELS, _CODAS)]
    names = []
    for i in range(n):
        names.append("".join(_ONSETS[parts[0][i][j]] + _VOWELS[parts[1][i][j]]
                             + _CODAS[parts[2][i][j]] for j in range(syllables[i])))
    return "".join(name + "\n" for name in names)


# ---------------------------------------------------------------------------------------------
# registry


class Builtin(NamedTuple):
    description: str
    make: Callable[..., str]    # keyword parameters -> text


BUILTIN = {
    "stdlib": Builtin("Python standard library source, prose-heavy modules first (~1.5 MB)",
                      stdlib_corpus),
    "markov": Builtin("random order-2 Markov chain with an exactly known entropy rate",
                      markov_corpus),
    "names": Builtin("made-up pronounceable names, one per line", pseudo_names),
    "memory": Builtin("a bracket closed exactly d characters later: long-range memory (charlm demo memory)",
                      lambda n_lines=20_000, distances=(2, 4, 8, 16, 32, 64), seed=0:
                      _memory_text(n_lines, distances, seed)),
}


def _memory_text(n_lines, distances, seed):
    from charlm.inspect.memory import memory_text  # the generator lives with its experiment

    return memory_text(n_lines, tuple(distances), seed)


def builtin_corpus_path(name: str, cache_dir=None, **params) -> Path:
    """Materialise built-in corpus ``name`` with ``params`` in the cache; return its path.

    The file name carries a digest of the parameters (defaults included, so ``seed=0`` and
    no seed share a file), ``FORMAT_VERSION`` and, for ``stdlib``, the Python version.
    """
    if name not in BUILTIN:
        raise CorpusError(f"unknown built-in corpus {name!r}; known: {', '.join(sorted(BUILTIN))}")
    make = BUILTIN[name].make
    try:
        bound = inspect.signature(make).bind(**params)
    except TypeError as e:
        raise CorpusError(f"built-in corpus {name!r}: {e}") from e
    bound.apply_defaults()
    key = repr((FORMAT_VERSION, name, sorted(bound.arguments.items())))
    if name == "stdlib":
        version = f"{platform.python_implementation().lower()}{platform.python_version()}"
        key += version
        stem = f"stdlib-{version}"
    else:
        stem = name
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = resolve_cache_dir(cache_dir) / f"{stem}-{digest}.txt"
    if not (path.is_file() and path.stat().st_size > 0):
        atomic_write_text(path, make(**bound.arguments))
    return path
