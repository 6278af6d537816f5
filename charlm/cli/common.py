"""What every command shares: the two consoles, the one place errors are turned into a red
line and an exit code, and where runs live.

- stdout carries results (generated text, tables of ``eval``/``info``, JSON); stderr carries
  progress, the training view and errors (rich-cli's split), so ``> out.txt`` stays clean.
- A ``CharlmError`` (a problem the user can fix), a usage error, an ``OSError`` (permission
  denied, disk full) or Ctrl-C becomes one red line on stderr and a non-zero exit, never a
  traceback. Anything else is a bug: one line that says so, the traceback in a log file.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click
from rich.console import Console

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
RUNS_ENV = "CHARLM_RUNS_DIR"


def err() -> Console:
    """A console on the current stderr (built per call: CliRunner swaps the streams)."""
    return Console(file=sys.stderr, highlight=False)


def out() -> Console:
    """A console on the current stdout, for results."""
    return Console(file=sys.stdout, highlight=False)


def fail_line(message: str) -> None:
    err().print(f"[bold red]error:[/] [red]{_escape(message)}[/]", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def runs_root() -> Path:
    """Where runs live: ``$CHARLM_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def show_path(path) -> str:
    """``path`` relative to the working directory (or ``~``) when inside it: shorter to read and copy."""
    path = Path(path)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


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


class CharlmGroup(click.Group):
    """A click group whose ``main`` reports every failure in one line (see the module docstring)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name or "charlm", complete_var, standalone_mode=False, **extra)
        except BaseException as e:  # noqa: BLE001 - this is the one place that decides
            code = report(e)
            if code is None:
                raise
            sys.exit(code)
        sys.exit(rv if isinstance(rv, int) else 0)


def report(e: BaseException) -> int | None:
    """Print the one line for ``e`` and return the exit code (``None``: let it propagate)."""
    from ..errors import CharlmError

    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
    if isinstance(e, SystemExit):
        return None
    if no_args and isinstance(e, no_args):
        click.echo(e.ctx.get_help(), err=True)
        return EXIT_USAGE
    if isinstance(e, click.UsageError):
        hint = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
        fail_line(e.format_message() + hint)
        return EXIT_USAGE
    if isinstance(e, click.ClickException):
        fail_line(e.format_message())
        return e.exit_code
    if isinstance(e, (click.Abort, KeyboardInterrupt)):
        fail_line("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(e, CharlmError):
        fail_line(str(e))
        return EXIT_ERROR
    if isinstance(e, OSError):
        fail_line(describe_os_error(e))
        return EXIT_ERROR
    if isinstance(e, Exception):
        log = write_crash_log(e)
        fail_line(f"internal error ({type(e).__name__}: {e}); this is a bug in charlm, please report "
                  f"it on the charlm issue tracker with the log (details in {log})")
        return EXIT_ERROR
    return None


def describe_os_error(e: OSError) -> str:
    what = e.strerror or str(e)
    return f"{e.filename}: {what}" if e.filename else what


def write_crash_log(e: BaseException) -> str:
    """Write the traceback of ``e`` to a log file; return its path (or a note if that fails)."""
    text = (f"charlm crash at {time.strftime('%Y-%m-%d %H:%M:%S')}\nargv: {sys.argv}\n"
            f"python: {sys.version}\n\n" + "".join(traceback.format_exception(e)))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    candidates = []
    try:
        from ..builtin_corpora import resolve_cache_dir

        candidates.append(resolve_cache_dir() / "logs")
    except Exception:  # noqa: BLE001 - the log must not depend on the rest of charlm working
        pass
    candidates.append(Path(tempfile.gettempdir()))
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "no log: could not write one"
