"""Built-in corpora: text that charlm can train on without the user bringing any.

Four sources, each a function that returns a ``str`` and is registered in ``BUILTIN``:

* ``stdlib``  real text on every machine with Python: the standard library's own ``.py``
  source, prose-heavy modules first (``stdlib.py``). It is the default corpus of ``charlm train``.
* ``markov``  a random order-k Markov chain whose entropy rate is known exactly, so a trained
  model's held-out bits per character must approach ``entropy_rate_bits`` from above (``markov.py``).
* ``names``   made-up pronounceable names, one per line, for line-mode demos and tests (``names.py``).
* ``memory``  brackets closed exactly d characters later, for the long-range memory experiment
  of ``charlm inspect memory`` (``memory_task.py``).

``builtin_corpus_path`` writes a corpus to the cache directory once (atomically) and returns
the path, so the rest of charlm only ever reads files. See ``corpora/README.md``.
"""
import hashlib
import inspect
import platform
from pathlib import Path
from typing import Callable, NamedTuple

from charlm.errors import CorpusError
from charlm.fsutil import atomic_write_text, resolve_cache_dir

from .markov import MarkovSource, markov_bits_per_char, markov_corpus, markov_source, markov_text
from .memory_task import memory_text
from .names import pseudo_names
from .stdlib import stdlib_corpus, stdlib_files

__all__ = ["BUILTIN", "Builtin", "builtin_corpus_path", "default_corpus_path", "write_corpus",
           "write_stdlib_corpus", "stdlib_corpus", "stdlib_files", "MarkovSource", "markov_source",
           "markov_text", "markov_bits_per_char", "markov_corpus", "pseudo_names", "memory_text"]

# Bump when a generator's output changes, so stale cached files are not reused.
FORMAT_VERSION = 1


class Builtin(NamedTuple):
    description: str
    make: Callable[..., str]    # keyword parameters -> text


def _memory_corpus(n_lines=20_000, distances=(2, 4, 8, 16, 32, 64), seed=0):
    # a tuple, so that the parameters (and the cache file's digest) compare as values
    return memory_text(n_lines, tuple(distances), seed)


BUILTIN = {
    "stdlib": Builtin("Python standard library source, prose-heavy modules first (~1.5 MB)",
                      stdlib_corpus),
    "markov": Builtin("random order-2 Markov chain with an exactly known entropy rate",
                      markov_corpus),
    "names": Builtin("made-up pronounceable names, one per line", pseudo_names),
    "memory": Builtin("a bracket closed exactly d characters later: long-range memory "
                      "(charlm inspect memory)", _memory_corpus),
}


def write_corpus(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see charlm.fsutil), creating its directory; a
    failure is a CorpusError naming the path, and leaves any older file whole."""
    path = Path(path)
    try:
        return atomic_write_text(path, text, make_parents=True)
    except OSError as e:
        raise CorpusError(f"cannot write {path}: {e.strerror or e}") from e


def write_stdlib_corpus(path, target_bytes: int = 1_500_000) -> Path:
    """Write ``stdlib_corpus(target_bytes)`` to ``path`` atomically and return the path."""
    return write_corpus(path, stdlib_corpus(target_bytes))


def default_corpus_path(cache_dir=None) -> Path:
    """The cached stdlib corpus that ``charlm train`` uses when given no text; built on first use."""
    return builtin_corpus_path("stdlib", cache_dir=cache_dir)


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
        write_corpus(path, make(**bound.arguments))
    return path
