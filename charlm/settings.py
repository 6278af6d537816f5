"""Settings declared once: each configuration field's default, help, range and option spelling.

A configuration dataclass declares its fields with ``setting(default, help=..., ...)``; the checks
of ``check(config)`` and the command-line options (cli/options.py) are both read from that
declaration, so a range or a list of choices is written in one place only.

    @dataclass(frozen=True)
    class ModelConfig:
        hidden: int = setting(256, help="hidden state width of every layer", minimum=1)

    check(ModelConfig(hidden=0))   # ConfigError: hidden must be an integer >= 1, got 0
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import ConfigError

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class Setting:
    help: str                     # one line, shown by the command's help
    choices: tuple = ()           # the values allowed (a str setting)
    minimum: float | None = None  # lowest value allowed
    above: float | None = None    # the value must be greater than this (an open lower end)
    below: float | None = None    # the value must be smaller than this (an open upper end)
    maximum: int | None = None    # highest value allowed
    flag: str = ""                # the option's spelling when it is not --field-name ("--time", "--a/--b")
    kind: str = ""                # what it holds, beyond its type: "duration" (90s, 10m) | "path" |
                                  # "cadence" (steps or a duration; the class's validate() parses it)
    shown: str | None = None      # the default as help states it, where the value would mislead ("none")
    option: bool = True           # False: the program sets it (the vocabulary size), never the user


def setting(default, *, help: str, choices=(), minimum=None, above=None, below=None, maximum=None,
            flag: str = "", kind: str = "", shown: str | None = None, option: bool = True):
    """A dataclass field with its default and its ``Setting`` (in the field's metadata)."""
    meta = Setting(help, tuple(choices), minimum, above, below, maximum, flag, kind, shown, option)
    return dataclasses.field(default=default, metadata={"setting": meta})


@dataclass(frozen=True)
class Spec:
    """One declared field of a configuration class: what checks and option generation read."""
    name: str
    type: type
    default: object
    meta: Setting

    @property
    def option(self) -> str:
        """The option that sets it, as error messages name it (``--time``, ``--tie-weights``)."""
        return (self.meta.flag or "--" + self.name.replace("_", "-")).split("/")[0]

    @property
    def default_text(self) -> str:
        if self.meta.shown is not None:
            return self.meta.shown
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)


def specs(cls) -> list[Spec]:
    """The declared fields of the configuration class ``cls``, in their order."""
    return [Spec(f.name, _TYPES.get(f.type, f.type) if isinstance(f.type, str) else f.type, f.default,
                 f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def user_specs(*classes, exclude=()) -> list[Spec]:
    """The fields of ``classes`` a user sets (not those the program sets), but those in ``exclude``."""
    found = {s.name: s for cls in classes for s in specs(cls) if s.meta.option and s.name not in exclude}
    return list(found.values())


def spec_of(cls, name: str) -> Spec:
    return next(s for s in specs(cls) if s.name == name)


def names(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def check(config) -> None:
    """Every declared field of ``config`` of its type and within its range or choices; the first
    that is not raises one ``ConfigError`` naming it."""
    for spec in specs(type(config)):
        check_value(spec, getattr(config, spec.name))


def check_value(spec: Spec, value) -> None:
    name, m = spec.name, spec.meta
    if m.kind == "cadence":
        return  # an int or a str: its own parser checks it
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif m.choices:
        choice(name, value, m.choices)
    elif spec.type is int:
        integer(name, value, minimum=m.minimum if m.minimum is not None else 0)
        if m.maximum is not None and value > m.maximum:
            raise ConfigError(f"{name} must be at most {m.maximum}, got {value!r}")
    elif spec.type is float:
        _number(name, value, m)
    elif not isinstance(value, spec.type):
        raise ConfigError(f"{name} must be a string, got {value!r}")


def _number(name: str, value, m: Setting) -> None:
    low = m.above if m.above is not None else (m.minimum if m.minimum is not None else -math.inf)
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > low if m.above is not None else value >= low) and (m.below is None or value < m.below))
    if ok:
        return
    if m.below is not None:  # a fraction: [0, 1)
        raise ConfigError(f"{name} must be in [{low:g}, {m.below:g}), got {value!r}")
    bound = "" if low == -math.inf else (f" > {low:g}" if m.above is not None else f" >= {low:g}")
    raise ConfigError(f"{name} must be a finite number{bound}, got {value!r}")


def choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def integer(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Overrides:
    """Settings given to continue a run: a configuration that holds them (checked like a new
    run's) and the names of the fields given; the other fields of ``config`` are not meant."""
    config: object
    given: frozenset = frozenset()

    def changes(self) -> dict:
        """Field name -> value of the fields given."""
        return {name: getattr(self.config, name) for name in sorted(self.given)}
