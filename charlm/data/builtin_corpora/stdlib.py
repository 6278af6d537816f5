"""The Python standard library's own source as a corpus: real text on every machine with Python.

The default corpus of ``charlm train``: prose-heavy modules (comments, docstrings) first, ASCII
only, test suites and generated tables left out. Deterministic for a given Python installation.
"""
import os
import sysconfig
from pathlib import Path

from charlm.errors import CorpusError

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

    A line-based guess (tokenize is right but far slower): a line toggles "inside a
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
