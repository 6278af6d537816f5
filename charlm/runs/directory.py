"""Who may write a run directory: one process at a time, and a new run only where nothing is lost.

- ``claim_new_run``: a new run starts in a new or empty directory. One that holds an earlier run
  (or a file named like a run's) is refused unless ``overwrite`` is asked, and then only the
  run's own files are replaced; anything else in the directory is left alone. They are replaced
  only once the new run has saved a checkpoint: until then they wait in ``.replaced/`` inside the
  run directory, and a new run that is refused, fails or is stopped before its first checkpoint
  puts them back (``settle``; a killed process's aside is settled by the next claim).
- ``claim_run``: resuming takes the same lock, so two processes never train one run at once.
- ``make_run_dir``: a default name ``<stem>-<YYYYmmdd-HHMMSS>`` created with an exclusive
  ``mkdir`` (``-2``, ``-3``... when taken), so runs started in the same second never share one.

The lock is an OS advisory lock (``flock``) on ``.charlm.lock`` inside the run directory, held
while the returned ``RunLock`` lives (the CLI: the whole process). The kernel releases it when
the process ends, however it ends, so a crash never leaves a run locked. The lock file is opened
without following a symlink: a link planted in a run directory never redirects a write.
"""
from __future__ import annotations

import os
import shutil
import time
import weakref
from pathlib import Path

from ..errors import CharlmError, ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against a second writer
    fcntl = None

from .find import LAST_FILE, MODEL_FILE
from .metrics import METRICS_FILE

LOCK_FILE = ".charlm.lock"
ASIDE_DIR = ".replaced"   # an overwritten run's files, until the new run has a checkpoint
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

RUN_FILES = (MODEL_FILE, LAST_FILE, METRICS_FILE)


class RunBusyError(CharlmError):
    """Another process is writing this run directory."""


class RunLock:
    """An open lock file holding ``flock(LOCK_EX)``; closing it (or exiting) releases the lock."""

    def __init__(self, run_dir: Path, fd: int | None, created: bool, made_file: bool = False):
        self.run_dir, self.fd, self.created, self.made_file = run_dir, fd, created, made_file
        self.created_parents: list[Path] = []   # directories above run_dir made for it, innermost first

    def release(self) -> None:
        if self.fd is not None:
            settle(self.run_dir)
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.release()


# Locks this process holds, by real path: a second claim from the same process (a resume right
# after a run, a Trainer built on a directory the CLI already claimed) reuses the lock instead of
# failing against itself (flock locks belong to open files, not to processes).
_held: "weakref.WeakValueDictionary[str, RunLock]" = weakref.WeakValueDictionary()


def lock_run_dir(run_dir, *, created: bool = False) -> RunLock:
    """Lock the existing directory ``run_dir`` for this process, or raise ``RunBusyError``."""
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    held = _held.get(key)
    if held is not None and held.fd is not None:
        return held
    if fcntl is None:
        lock = RunLock(run_dir, None, created)
        _held[key] = lock
        return lock
    path = run_dir / LOCK_FILE
    made_file = not os.path.lexists(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644)
    except PermissionError:
        # a read-only lock file (a copied run) can still be locked; a read-only directory cannot
        # hold a new one, and then nothing could be saved there either
        fd = _open_lock_read_only(path)
    except OSError:
        if not os.path.islink(path):
            raise
        raise CharlmError(f"{path} is a symbolic link: charlm writes nothing through a link in a run "
                          "directory (remove it)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise RunBusyError(f"{run_dir} is in use by another charlm process{owner}: wait for it to "
                           "finish, or train into another directory") from None
    except BaseException:
        os.close(fd)
        raise
    try:  # who holds it, for the message a second process prints
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    lock = RunLock(run_dir, fd, created, made_file)
    _held[key] = lock
    settle(run_dir)  # what a killed process set aside
    return lock


def _open_lock_read_only(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | NO_FOLLOW)
    except OSError as e:
        if os.path.islink(path):
            raise CharlmError(f"{path} is a symbolic link: charlm writes nothing through a link in a "
                              "run directory (remove it)") from None
        raise PermissionError(e.errno, e.strerror, str(path)) from None


def _read_owner(fd: int) -> str:
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    except (OSError, ValueError):
        return ""


def claim_run(run_dir) -> RunLock:
    """Lock an existing run for a resume (``RunBusyError`` when another process has it)."""
    return lock_run_dir(run_dir)


def claim_new_run(run_dir, *, overwrite: bool = False) -> RunLock:
    """Lock ``run_dir`` (created if missing) for a new run; refuse one that holds anything but
    charlm's own lock and temporary files, unless ``overwrite`` (which removes only the run files)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory")
    created = not run_dir.exists()
    if not created:
        _refuse_unless_empty(run_dir, overwrite)  # before the lock file is made: a refusal writes nothing
    parents = _missing_parents(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(run_dir, created=created)
    lock.created_parents = parents
    try:  # again under the lock: another process may have written here in between
        replaced = _refuse_unless_empty(run_dir, overwrite)
        if replaced:  # kept until the new run has a checkpoint (settle)
            (run_dir / ASIDE_DIR).mkdir()
            for name in replaced:
                os.rename(run_dir / name, run_dir / ASIDE_DIR / name)
        for path in run_dir.iterdir():  # temporary files of a killed writer: charlm's own garbage
            if path.name not in (LOCK_FILE, ASIDE_DIR) and _ours(path.name):
                path.unlink()
    except BaseException:
        release_new(lock)
        raise
    return lock


def _missing_parents(path: Path) -> list[Path]:
    """The directories above ``path`` that do not exist yet, innermost first."""
    missing, parent = [], Path(path).parent
    while parent != parent.parent and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def _refuse_unless_empty(run_dir: Path, overwrite: bool) -> list[str]:
    """The run files to remove before a new run in ``run_dir`` (``overwrite``), or ConfigError."""
    found = sorted(p.name for p in run_dir.iterdir() if not _ours(p.name))
    runs_files = [name for name in found if name in RUN_FILES]
    if not found or (overwrite and runs_files):
        return runs_files
    if MODEL_FILE in found or LAST_FILE in found:
        why = (f"{run_dir} already holds a run: continue it with --resume {run_dir}, replace it "
               "with --overwrite, or choose another --run-dir")
    elif runs_files:
        why = (f"{run_dir} holds {', '.join(runs_files)} but no checkpoint (an earlier run stopped "
               "before saving one, or another program's file): replace it with --overwrite, or "
               "choose another --run-dir")
    else:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        why = (f"{run_dir} is not empty ({shown}): a new run needs a new or empty directory; "
               "choose another --run-dir")
    raise ConfigError(why)


def _ours(name: str) -> bool:
    """charlm's own bookkeeping: the lock file, an overwritten run set aside, and temporary files
    of an interrupted write."""
    return name in (LOCK_FILE, ASIDE_DIR) or any(name.startswith(f".{n}.") and name.endswith(".tmp") for n in RUN_FILES)


def make_run_dir(root, stem: str) -> RunLock:
    """Create and lock a fresh ``<root>/<stem>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken)."""
    root = Path(root)
    parents = _missing_parents(root / "x")
    root.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while True:
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()  # exclusive: of several processes asking for one name, one gets it
        except FileExistsError:
            n += 1
            continue
        lock = lock_run_dir(path, created=True)
        lock.created_parents = parents
        return lock


def settle(run_dir) -> None:
    """Finish or undo an ``--overwrite``: once the new run has a checkpoint the set-aside run is
    removed; without one, its files go back where they were."""
    aside = Path(run_dir) / ASIDE_DIR
    if not aside.is_dir() or aside.is_symlink():
        return
    if any((Path(run_dir) / name).exists() for name in (MODEL_FILE, LAST_FILE)):
        shutil.rmtree(aside, ignore_errors=True)
        return
    try:
        for path in aside.iterdir():
            os.replace(path, Path(run_dir) / path.name)  # the new run's partial files give way
        aside.rmdir()
    except OSError:
        pass  # kept: the next claim tries again


def release_new(lock: RunLock) -> None:
    """Undo a claim that was not used (setting up or resuming the run failed): release the lock
    and remove what the claim made, if nothing else was put there since: the lock file, the
    run directory, the directories above it."""
    run_dir = lock.run_dir
    lock.release()
    _held.pop(os.path.realpath(run_dir), None)
    try:
        if lock.made_file:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
        for made in ([run_dir] if lock.created else []) + lock.created_parents:
            made.rmdir()  # only if empty (OSError otherwise: then it is kept)
    except OSError:
        pass
