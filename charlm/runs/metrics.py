"""The metrics log of a run: ``metrics.jsonl``, one JSON object per step and per evaluation.

It is bookkeeping for plots and ``charlm info``; a resume depends only on the checkpoint. So a
damaged line (a torn write from a crash, invalid UTF-8, a record of the wrong shape) is skipped
and reported with its line number, never fatal.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..fsutil import atomic_write_text, name_the_file

METRICS_FILE = "metrics.jsonl"

# What each kind of record must hold for the readers (info, the plots, resume's truncation).
_NUMBER, _OPTIONAL = "number", "number or null"
_SCHEMA = {
    "step": {"loss": _NUMBER},
    "eval": {"val_loss": _OPTIONAL},
}


@dataclass
class MetricsProblem:
    line: int          # 1-based line number in metrics.jsonl
    reason: str

    def describe(self, path) -> str:
        if self.line == 0:  # the file as a whole
            return f"{path} {self.reason}"
        return f"{path} line {self.line}: {self.reason}; skipped"


def append_metrics(run_dir: Path, *records: dict, file: str = METRICS_FILE) -> None:
    """Append one JSON line per record to ``file`` in one write, flushed and fsynced: a crash
    loses at most the lines of this call (a torn last line is skipped when read)."""
    path = Path(run_dir) / file
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if os.path.islink(path):  # never append through a link planted in a run directory
            raise CheckpointError(f"{path} is a symbolic link: charlm writes nothing through a link in "
                                  "a run directory (remove it)") from None
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(record) + "\n" for record in records))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # (a torn last line is skipped when read)
        raise name_the_file(e, path) from None


def read_metrics(run_dir: Path, *, up_to_step: int | None = None) -> list[dict]:
    """The well-formed records (damaged lines skipped; see ``read_metrics_checked``)."""
    return read_metrics_checked(run_dir, up_to_step=up_to_step)[0]


def read_metrics_checked(run_dir: Path, *, up_to_step: int | None = None
                         ) -> tuple[list[dict], list[MetricsProblem]]:
    """(records, problems): every well-formed record (up to ``up_to_step``), and what was wrong
    with each line that was skipped. A missing file is no records and no problems."""
    path = Path(run_dir) / METRICS_FILE
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)   # a link (to /dev/full, say) or a pipe planted here is never read
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as e:
        reason = "is a symbolic link" if os.path.islink(path) else f"cannot be read ({e.strerror or e})"
        return [], [MetricsProblem(0, f"{reason}; not read")]
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return [], [MetricsProblem(0, "is not a regular file; not read")]
        try:
            raw_lines = f.read().split(b"\n")
        except OSError as e:
            return [], [MetricsProblem(0, f"cannot be read ({e.strerror or e})")]
    records, problems = [], []
    last = len(raw_lines) - 1
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        record, reason = _parse(raw)
        if reason is not None:
            if number - 1 == last and reason == "not valid JSON":
                continue  # the unterminated last line of a write cut short by a crash: expected
            problems.append(MetricsProblem(number, reason))
            continue
        if up_to_step is None or record["step"] <= up_to_step:
            records.append(record)
    return records, problems


def _parse(raw: bytes) -> tuple[dict | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None, "'step' is not a whole number >= 0"
    for key, want in _SCHEMA.get(record.get("kind"), {}).items():
        value = record.get(key)
        if value is None and want == _OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"{key!r} is not a number"
    return record, None


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop records logged after the checkpoint we resume from (and damaged lines)."""
    records = read_metrics(run_dir, up_to_step=step)
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))
