"""Filesystem helpers shared by checkpoints, metrics, built-in corpora and the crash log.

- ``atomic_write_bytes``/``atomic_write_text``: readers see the old file or the new one, never
  a torn one, and the new one survives a power cut once the call returns (file and directory
  are both fsynced: the rename itself lives in the directory).
- ``resolve_cache_dir``/``resolve_runs_dir``: where charlm keeps downloads and runs, each with an
  environment override so tests and users can move them.

Nothing here prints or raises charlm's own errors: callers decide how an ``OSError`` reads.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

CACHE_ENV = "CHARLM_CACHE_DIR"
HOME_ENV = "CHARLM_HOME"
RUNS_ENV = "CHARLM_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"
TEMP_SUFFIX = ".tmp"


def fsync_dir(directory) -> None:
    """Make a rename or a new file in ``directory`` durable (a no-op where the OS cannot)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes, *, make_parents: bool = False) -> Path:
    """Write ``data`` to ``path`` so that it is either the old file or completely the new one.

    A temporary file in the same directory (so ``os.replace`` is a same-filesystem rename) is
    written, fsynced and renamed over ``path``; then the directory is fsynced. On any failure
    (disk full, Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            name_the_file(e, path)
        raise
    fsync_dir(path.parent)
    return path


def name_the_file(error: OSError, path) -> OSError:
    """``error`` naming ``path`` if it names no file: a failed write() or fsync() (a full disk,
    a quota) says only "No space left on device", which tells the user nothing to free."""
    if error.filename is None:
        error.filename = str(path)
    return error


def atomic_write_text(path, text: str, *, make_parents: bool = False) -> Path:
    """``atomic_write_bytes`` of ``text`` as UTF-8 (bytes, so ``\\n`` is never translated)."""
    return atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


def is_temp_file_of(candidate: Path, name: str) -> bool:
    """Whether ``candidate`` is a temporary file that ``atomic_write_*`` made for ``name``."""
    return candidate.name.startswith(f".{name}.") and candidate.name.endswith(TEMP_SUFFIX)


def remove_temp_files(directory, names) -> None:
    """Delete the temporary files a killed writer of any of ``names`` left in ``directory``."""
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*{TEMP_SUFFIX}"):
            try:
                tmp.unlink()
            except OSError:
                pass


_KINDS = ((stat.S_ISFIFO, "is a named pipe (FIFO)"), (stat.S_ISCHR, "is a character device"),
          (stat.S_ISBLK, "is a block device"), (stat.S_ISSOCK, "is a socket"),
          (stat.S_ISDIR, "is a directory"))


def not_a_regular_file(path) -> str | None:
    """Why ``path`` cannot be read as a file (``"is a named pipe (FIFO)"``...), or None when it is a
    regular file or does not exist (the caller reports a missing file its own way).

    Inputs are read more than once (sniffed, then encoded; a checkpoint's header, then its data)
    and a pipe blocks until someone writes to it, so only regular files are accepted. ``/dev/stdin``
    is a pipe or a terminal and is refused the same way.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((why for test, why in _KINDS if test(mode)), "is not a regular file")


def write_new_text(path, text: str) -> Path:
    """Create ``path`` with ``text`` (UTF-8); ``FileExistsError`` if anything is already there,
    so that a command never overwrites a file it did not create."""
    path = Path(path)
    with open(path, "x", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def resolve_cache_dir(override=None) -> Path:
    """Where charlm caches files: ``override``, else ``$CHARLM_CACHE_DIR``, else
    ``$CHARLM_HOME/cache``, else ``$XDG_CACHE_HOME/charlm``, else ``~/.cache/charlm``."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]) / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "charlm"


def resolve_runs_dir(override=None) -> Path:
    """Where runs live: ``override``, else ``$CHARLM_RUNS_DIR``, else ``./runs``.

    Raises ``NotADirectoryError`` when the chosen path exists and is not a directory, so that a
    mistyped variable is reported as such instead of looking like an empty set of runs.
    """
    root = Path(override if override is not None else (os.environ.get(RUNS_ENV) or DEFAULT_RUNS_DIR))
    if root.exists() and not root.is_dir():
        source = f" (from ${RUNS_ENV})" if override is None and os.environ.get(RUNS_ENV) else ""
        raise NotADirectoryError(20, f"the runs directory{source} is not a directory", str(root))
    return root
