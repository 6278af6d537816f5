"""How much memory a configuration needs, estimated before anything is allocated.

A mistyped size (``--hidden 100000``, ``hidden = 1e23`` in a TOML file, ``--embed 50000000``)
would otherwise fail deep inside NumPy, or push the machine into swap. The estimate counts what
training holds at once: the parameters, their gradients, the optimiser's buffers (two per
parameter for Adam), and one step's activations kept for the backward pass (gate
pre-activations, states and outputs of every layer, embeddings, logits and their gradient). It is meant to be within a factor of about two, which is enough to refuse a
size that cannot fit; sizes near the limit are left to the operating system.
"""
from __future__ import annotations

import os

from ..errors import ConfigError

# extra arrays per parameter besides the weights themselves: gradient + optimiser buffers
_PER_PARAMETER = {"adam": 3, "adamw": 3, "sgd": 2, "rmsprop": 2, "adagrad": 2}
_WORKSPACE = 2   # kernels' scratch buffers and the evaluation pass, on top of the activations


def parameter_count(model_config, vocab: int) -> int:
    """Parameters of a model (closed form, Python integers: no overflow for absurd sizes)."""
    m, V = model_config, vocab
    G, H, E = m.gates, m.hidden, m.embed
    fed_back = V if m.row.feeds_output else H        # a Jordan cell feeds its output back, not h
    first = G * H * (E + fed_back) + 2 * G * H
    rest = (m.layers - 1) * (G * H * (H + fed_back) + 2 * G * H)
    decoder = (0 if m.tie_weights else V * H) + V
    return V * E + first + rest + decoder


def training_bytes(model_config, train_config, vocab: int | None = None) -> int:
    """Estimated bytes to train ``model_config`` with ``train_config`` (vocabulary ``vocab``,
    default the config's ``vocab_size`` or 2 when it is not known yet)."""
    m, t = model_config, train_config
    V = max(vocab or m.vocab_size, 2)
    G, S = m.gates, m.states
    itemsize = 8 if t.dtype == "float64" else 4
    params = parameter_count(m, V)
    tokens = t.batch_size * t.seq_len
    per_token = m.layers * m.hidden * (G + S + 2) + m.embed + 2 * V
    activations = _WORKSPACE * tokens * per_token
    return itemsize * (params * (1 + _PER_PARAMETER.get(t.optimizer, 3)) + activations)


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


def fits_in_memory(model_config, train_config, available: int | None = None) -> bool:
    """Whether training ``model_config`` (its vocabulary set) with ``train_config`` fits."""
    return training_bytes(model_config, train_config) <= (available_bytes() if available is None else available)


# the settings that scale the estimate
_SIZES = (("hidden", "model"), ("embed", "model"), ("layers", "model"), ("batch_size", "train"), ("seq_len", "train"))


def check_training_fits(model_config, train_config, vocab: int | None = None,
                        available: int | None = None) -> None:
    """Refuse a configuration whose training would not fit in memory, naming the option that
    makes it too big (the one whose default would shrink the estimate most) and the estimate.
    ``vocab`` defaults to the model's vocabulary size (unknown before the corpus is read)."""
    vocab = vocab or model_config.vocab_size or None
    fallback = f"a vocabulary of {vocab:,} tokens (--max-vocab)" if vocab else "this configuration"
    check_estimate_fits(lambda c: training_bytes(c["model"], c["train"], vocab),
                        {"model": model_config, "train": train_config}, _SIZES, fallback, available)


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
