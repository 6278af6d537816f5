"""What a training run may allocate: the memory this process may use (the host's, its control
group's and its address space's limits) and the one refusal every task's estimate goes through."""
from __future__ import annotations

import os

from ..errors import ConfigError


def available_bytes() -> int:
    """Memory this process may use: the smallest of the available RAM, the room left under its
    control group's limit (a container's or a Slurm job's, which the host's figures ignore) and
    its address-space limit."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            pass
    from .cgroup_memory import cgroup_room

    room = cgroup_room()
    if room is not None:
        limits.append(room)
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else 1 << 62


def fmt_bytes(n: float) -> str:
    for unit, size in (("EB", 1 << 60), ("PB", 1 << 50), ("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 1000 * (1 << 60) else f"{n / (1 << 60):.2e} EB"
    return f"{n / 1024:.3g} kB"


def check_fits(needed: int, what: str, available: int | None = None) -> None:
    """Refuse (ConfigError) ``needed`` bytes for ``what`` (e.g. ``"--hidden 100000"``) when they
    exceed the memory available."""
    available = available_bytes() if available is None else available
    if needed > available:
        raise ConfigError(f"{what} needs about {fmt_bytes(needed)} of memory, and "
                          f"{fmt_bytes(available)} is available; choose a smaller value")


def check_estimate_fits(estimate, configs: dict, sizes, fallback: str, available: int | None = None) -> None:
    """Refuse (ConfigError) when ``estimate(configs)`` bytes exceed the memory available, naming
    the setting among ``sizes`` ((field, key of ``configs``) pairs) whose default would shrink the
    estimate most, else ``fallback``. Shared by every task's estimate."""
    from dataclasses import replace

    from ..settings import spec_of

    needed = estimate(configs)
    available = available_bytes() if available is None else available
    if needed <= available:
        return
    best, culprit = needed, None
    for field, kind in sizes:
        given = configs[kind]
        smaller = estimate(configs | {kind: replace(given, **{field: getattr(type(given)(), field)})})
        if smaller < best:
            best, culprit = smaller, f"{spec_of(type(given), field).option} {getattr(given, field)}"
    check_fits(needed, (culprit or fallback) + " (model, gradients, optimiser state and one step's activations)",
               available)
