"""Finding runs: naming new run directories, listing the runs under a root, resolving what a user named.

A run directory is what a trainer writes: its best and last checkpoints (``MODEL_FILE``,
``LAST_FILE``) and its metrics log. Runs live under a root directory (the CLI uses ``./runs``);
"the most recent run" is the one whose checkpoint was written last. Nothing here prints.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..errors import CheckpointError

MODEL_FILE = "model.safetensors"   # the best weights so far: what sample, eval and predict load
LAST_FILE = "last.safetensors"     # the latest weights with the whole training position (resume)
CHECKPOINT_FILES = (MODEL_FILE, LAST_FILE)
# how messages name each task's runs, and the command that trains one
TASK_NAMES = {"lm": "language-model", "classify": "classify", "tag": "tag", "seq2seq": "seq2seq"}
TRAIN_COMMANDS = {"lm": "charlm train", "classify": "charlm classify train", "tag": "charlm tag train",
                  "seq2seq": "charlm seq2seq train"}


def run_stem(path) -> str:
    """A new run's default name: its data file's stem, made safe as a directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).strip("-.") or "run"


def _last_written(run_dir: Path) -> float:
    times = [(run_dir / n).stat().st_mtime for n in CHECKPOINT_FILES if (run_dir / n).exists()]
    return max(times, default=-math.inf)


def list_runs(root) -> list[Path]:
    """Run directories under ``root`` (those holding a checkpoint), most recent last."""
    root = Path(root)
    if not root.is_dir():
        return []
    try:
        runs = [p for p in root.iterdir() if p.is_dir() and _last_written(p) > -math.inf]
    except OSError as e:
        raise CheckpointError(f"cannot list the runs in {root}: {e.strerror or e}") from None
    return sorted(runs, key=lambda p: (_last_written(p), p.name))


def task_of(path: Path) -> str | None:
    """The task a run directory or checkpoint file was trained for: "lm" for a language model (its
    checkpoints name no task), else the recorded ``charlm.task`` ("classify", "tag", ...); None
    when no checkpoint there can be read."""
    from .header import read_header

    path = Path(path)
    for file in [path] if path.suffix == ".safetensors" else [path / n for n in CHECKPOINT_FILES]:
        if file.is_file():
            try:
                header, _ = read_header(file)
            except CheckpointError:
                return None
            meta = header.get("__metadata__")
            if not isinstance(meta, dict) or "charlm.format" not in meta:
                return None
            task = meta.get("charlm.task", "lm")
            return task if isinstance(task, str) else None
    return None


def refuse_other_task(path, meta, tasks: tuple) -> None:
    """One CheckpointError when a checkpoint's metadata ``meta`` records a known task other than
    ``tasks`` (a language model records none), naming the task and the command that trains it."""
    task = meta.get("charlm.task", "lm") if isinstance(meta, dict) and "charlm.format" in meta else None
    if task in TASK_NAMES and task not in tasks:
        raise CheckpointError(f"{path}: a {TASK_NAMES[task]} checkpoint (trained by `{TRAIN_COMMANDS[task]}`), "
                              "which this command does not read")


def resolve_run(arg, root, task: str = "lm") -> Path:
    """The run directory or checkpoint file meant by ``arg``: a path, the name of a run under
    ``root``, or (``None``) the most recent run of ``task`` under ``root``."""
    root = Path(root)
    if arg is None:
        runs = [r for r in list_runs(root) if task_of(r) == task]
        if not runs:
            where = "does not exist" if not root.exists() else f"holds no {TASK_NAMES[task]} runs"
            raise CheckpointError(f"no {TASK_NAMES[task]} runs yet ({root} {where}): train one with "
                                  f"`{TRAIN_COMMANDS[task]}`, or name a run directory or checkpoint file")
        return runs[-1]
    path = Path(arg)
    if path.exists():
        return path
    if (root / arg).exists():
        return root / arg
    names = [p.name for p in list_runs(root)][-5:]
    known = f" (recent runs in {root}: {', '.join(names)})" if names else ""
    raise CheckpointError(f"{arg}: no such run directory or checkpoint file{known}")


def mistyped_run(arg) -> bool:
    """Whether ``arg`` looks like the path of a run without being one (``is_run_like`` comes
    first): an existing directory, or a missing path inside an existing directory (``runs/typo``).
    A command taking ``[RUN] [TEXT...]`` must refuse it rather than read it as text; text with a
    slash whose first part names no directory (``and/or``) is still text."""
    text = str(arg)   # (os.path answers False for a name too long to be a path: it is text)
    if not text:
        return False
    if os.path.isdir(text):
        return True
    return os.sep in text and not os.path.lexists(text) and os.path.isdir(os.path.dirname(text))


def is_run_like(arg, root) -> bool:
    """Whether ``arg`` names a run or checkpoint rather than a data file (for ``COMMAND [RUN] FILE``)."""
    path = Path(arg)
    if path.suffix == ".safetensors":
        return True
    return any(os.path.isdir(p) and any(os.path.exists(p / n) for n in CHECKPOINT_FILES)
               for p in (path, Path(root) / arg))   # (os.path: a text too long for a path is no run)
