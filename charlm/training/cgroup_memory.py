"""The memory left under this process's control group limit (cgroup v2 or v1), if it has one.

A container or a Slurm job is held to its cgroup's limit, and the kernel's OOM killer ends the
process at that limit however much the host has free; /proc/meminfo shows the host. The limit
applies from every ancestor group, so the smallest room along the path counts. ``CGROUP_ROOT``
and ``PROC_CGROUP`` are module attributes so that a test can point them at a directory it made.
"""
from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
_V2 = ("memory.max", "memory.current")
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes")
_UNLIMITED = 1 << 60   # cgroup v1 writes "no limit" as a number near 2**63


def cgroup_room() -> int | None:
    """Bytes the process may still allocate under its cgroup limits, or None without a limit."""
    root = Path(CGROUP_ROOT)
    rooms = []
    for base, relative, files in _groups(root):
        for folder in _ancestors(base, relative):
            room = _room(folder, *files)
            if room is not None:
                rooms.append(room)
    return min(rooms) if rooms else None


def _groups(root: Path):
    """(hierarchy root, the process's group in it, (limit file, usage file)) for v2 and v1."""
    try:
        lines = Path(PROC_CGROUP).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            found.append((root, path, _V2))
        elif "memory" in controllers.split(","):
            found.append((root / "memory", path, _V1))
    return found or [(root, "/", _V2), (root / "memory", "/", _V1)]


def _ancestors(base: Path, relative: str):
    """The group's folder and each parent up to ``base`` (inside a container's cgroup namespace
    the recorded path may not exist under the mount: ``base`` itself is then the group)."""
    folder = base / relative.strip("/")
    yield from (f for f in [folder, *folder.parents] if f == base or base in f.parents)


def _room(folder: Path, limit_file: str, usage_file: str) -> int | None:
    limit = _read_number(folder / limit_file)
    if limit is None or limit >= _UNLIMITED:
        return None
    usage = _read_number(folder / usage_file) or 0
    return max(limit - usage, 0)


def _read_number(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):  # "max", absent, unreadable
        return None
