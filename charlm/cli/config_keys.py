"""``--config FILE.toml``: the keys a user writes, mapped to the settings they mean.

The file may use a setting's field name (``time_budget``, ``val_fraction``) or the spelling of
the option generated from it (``time``, ``val-fraction``, ``--val-fraction``; options.py), flat
or in ``[model]``/``[train]`` tables. A key that is neither is refused with the key, the file,
and the closest setting.
"""
from __future__ import annotations

import difflib

import click

from ..errors import ConfigError
from ..fsutil import not_a_regular_file


def read_config_file(path, option_names: dict[str, str], tables: dict[str, set[str]] | None = None) -> dict:
    """Settings (field name -> value) from the TOML file ``path``; ``option_names`` maps each
    field name to its command-line option (``{"time_budget": "--time", ...}``); ``tables`` the
    field names each of ``[model]``/``[train]`` may hold (a setting in the other table is refused:
    it would otherwise be taken silently, and win over the same key at the top)."""
    problem = not_a_regular_file(path)
    if problem:  # a FIFO would block the read forever
        raise ConfigError(f"{path}: {problem}, not a TOML file")
    spellings = {}
    for field, option in option_names.items():
        for spelling in (field, field.replace("_", "-"), option.lstrip("-"), option.lstrip("-").replace("-", "_")):
            spellings[spelling] = field
    values, seen = {}, {}
    for table, key, value in load_config_file(path):
        field = spellings.get(key.lstrip("-") if isinstance(key, str) else key)
        if field is None:
            raise ConfigError(f"{path}: unknown setting {key!r}{_suggestion(key, spellings, option_names)}")
        if table and tables and field not in tables.get(table, ()):
            home = next((t for t, fields in tables.items() if field in fields), None)
            raise ConfigError(f"{path}: {key!r} is not a [{table}] setting" + (f"; move it to [{home}]" if home else ""))
        if field in seen:
            raise ConfigError(f"{path}: {seen[field]!r} and {key!r} are the same setting; keep one")
        seen[field] = key
        values[field] = value
    return values


def load_config_file(path) -> list[tuple[str, str, object]]:
    """(table, key, value) from a TOML file: flat keys (table ""), or ``[model]`` / ``[train]`` tables."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ConfigError("--config needs Python 3.11 or later (tomllib)") from None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    except RecursionError:  # tomllib's parser recurses once per level of nesting
        raise ConfigError(f"{path}: arrays or tables nested too deeply; settings are flat values") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    entries = []
    for key, value in data.items():
        if key in ("model", "train") and isinstance(value, dict):
            entries += [(key, k, v) for k, v in value.items()]
        else:
            entries.append(("", key, value))
    return entries


def _suggestion(key: str, spellings: dict, option_names: dict) -> str:
    if key in ("run_dir", "run-dir", "resume", "config", "overwrite"):
        return f" (give --{key.replace('_', '-')} on the command line)"
    close = difflib.get_close_matches(str(key).lstrip("-"), list(spellings), n=1, cutoff=0.6)
    if close:
        field = spellings[close[0]]
        return f" (did you mean {field!r}, the option {option_names[field]}?)"
    return f"; settings are the options of 'charlm train -h' ({', '.join(sorted(option_names)[:4])}, ...)"


def check_input_files(paths, what: str = "") -> None:
    """Refuse, before any work, an input that is not a regular file (a FIFO, a device)."""
    for path in paths:
        problem = not_a_regular_file(path)
        if problem and problem != "is a directory":
            raise click.BadParameter(f"{path} {problem}; give a regular text file", param_hint=what or None)
