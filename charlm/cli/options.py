"""Command-line options generated from the settings the configuration dataclasses declare.

``setting_options(ModelConfig, TrainConfig)`` adds one option per declared field: its name
(``--batch-size`` for ``batch_size``, or the field's ``flag``), its click type (a choice, a
range, a duration), its help with the default stated. Every option defaults to ``None``, "not
given", so that the dataclasses stay the only place defaults live and a command knows which
settings the user gave (autoconfig keeps those). Options that are not settings (paths,
``--resume``, ``--json``) are written by hand in each command.
"""
from __future__ import annotations

import click

from ..settings import Spec, user_specs


class Duration(click.ParamType):
    """``--time 10m``: seconds from ``90s``, ``10m``, ``1h30m`` or a plain number of seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        from ..config import parse_duration
        from ..errors import ConfigError

        try:
            return parse_duration(value)
        except ConfigError as e:
            self.fail(str(e), param, ctx)


def option_specs(*classes, only=None, exclude=()) -> list[Spec]:
    """The declared, user-set fields of ``classes`` (those in ``only``, in its order, when given)."""
    found = {s.name: s for s in user_specs(*classes, exclude=exclude)}
    return [found[n] for n in only] if only is not None else list(found.values())


def option_names(*classes, exclude=()) -> dict[str, str]:
    """Field name -> the option that sets it (``{"time_budget": "--time", ...}``)."""
    return {s.name: s.option for s in option_specs(*classes, exclude=exclude)}


def click_type(spec: Spec):
    m = spec.meta
    if m.kind == "duration":
        return Duration()
    if m.kind == "path":
        return click.Path(dir_okay=False)
    if m.choices:
        return click.Choice(m.choices)
    if spec.type is int:
        return click.IntRange(m.minimum, m.maximum)
    if spec.type is float:
        low = m.above if m.above is not None else m.minimum
        return click.FloatRange(low, m.below, min_open=m.above is not None, max_open=m.below is not None)
    return str


def setting_options(*classes, only=None, exclude=(), defaults=None, helps=None, prefix: str = ""):
    """A decorator adding an option for each declared field of ``classes`` (see ``option_specs``).
    ``defaults``/``helps`` replace the default stated and the help of some fields (a command whose
    library call has defaults of its own); ``prefix`` starts every help."""
    defaults, helps = defaults or {}, helps or {}

    def decorate(func):
        for spec in reversed(option_specs(*classes, only=only, exclude=exclude)):
            shown = str(defaults[spec.name]) if spec.name in defaults else spec.default_text
            text = f"{prefix}{helps.get(spec.name, spec.meta.help)} [default: {shown}]"
            if spec.type is bool:
                flag = spec.meta.flag or f"--{spec.name.replace('_', '-')}/--no-{spec.name.replace('_', '-')}"
                func = click.option(flag, spec.name, default=None, help=text)(func)
            else:
                func = click.option(spec.option, spec.name, type=click_type(spec), default=None, help=text)(func)
        return func
    return decorate


def given(options: dict) -> dict:
    """The options the user gave (field name -> value), without those left unset."""
    return {k: v for k, v in options.items() if v is not None}
