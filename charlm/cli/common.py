"""What every command shares: the two consoles, the one place errors are turned into a red
line and an exit code, and where runs live.

- stdout carries results (generated text, tables of ``eval``/``info``, JSON); stderr carries
  progress, the training view and errors (rich-cli's split), so ``> out.txt`` stays clean.
- A result that cannot be delivered is an error: stdout closed, full or gone is one line and exit
  1 (a reader that stopped reading, as ``| head`` does, is exit 141 without a line, as for any
  Unix tool killed by SIGPIPE). Progress that cannot be shown is dropped: a broken stderr never
  stops a command (training goes on and saves; see ``TolerantStream``).
- A ``CharlmError`` (a problem the user can fix), a usage error, an ``OSError`` (permission
  denied, disk full) or Ctrl-C becomes one red line on stderr and a non-zero exit, never a
  traceback. Anything else is a bug: one line that says so, the traceback in a log file.
- Strings from files are escaped (safe_text.py) and never read as rich markup or emoji codes.
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click
from rich.console import Console

from ..distributed.launch import rank_failed
from ..errors import CharlmError
from ..runtime import check_environment
from .safe_text import printable

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 130, 128 + 13


class OutputError(CharlmError):
    """Results could not be written to stdout."""

    def __init__(self, error: OSError | None):
        self.errno = getattr(error, "errno", None)
        why = "it is closed" if error is None else (error.strerror or str(error))
        super().__init__(f"cannot write the results to standard output: {why}")


class StopSignal(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised where the command cannot stop gracefully; ``why``: the
    line to show instead of the signal's name."""

    def __init__(self, signum: int, why: str | None = None):
        super().__init__(signum)
        self.signum, self.why = signum, why


class TolerantStream:
    """A text stream whose write errors are swallowed (progress on a stderr that went away: a
    closed terminal, a pipe whose reader quit). After the first error it drops everything."""

    def __init__(self, stream):
        self._stream, self.broken = stream, stream is None

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):  # ValueError: the stream was closed under us
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return not self.broken and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


class CheckedStdout:
    """stdout for results: any write or flush error becomes an ``OutputError``."""

    def __init__(self, stream):
        if stream is None:
            raise OutputError(None)
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as e:
            raise OutputError(e if isinstance(e, OSError) else None) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError) as e:
            raise OutputError(e if isinstance(e, OSError) else None) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def err() -> Console:
    """A console on the current stderr (built per call: CliRunner swaps the streams)."""
    return Console(file=TolerantStream(sys.stderr), highlight=False, emoji=False)


def out() -> Console:
    """A console on the current stdout, for results (``OutputError`` if they cannot be written)."""
    return Console(file=CheckedStdout(sys.stdout), highlight=False, emoji=False)


def emit(text: str = "", nl: bool = True) -> None:
    """Write ``text`` to stdout as it is (generated text, JSON), flushed: streaming shows it at once."""
    stream = CheckedStdout(sys.stdout)
    stream.write(text + ("\n" if nl else ""))
    stream.flush()


def fail_line(message: str) -> None:
    err().print(f"[bold red]error:[/] [red]{_escape(printable(message))}[/]", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def runs_root() -> Path:
    """Where runs live: ``$CHARLM_RUNS_DIR``, else ``./runs`` (an error if that is not a directory)."""
    from ..fsutil import resolve_runs_dir

    return resolve_runs_dir()


def run_to_use(arg, task: str = "lm", *, name_latest: bool = True) -> Path:
    """The run (or checkpoint) ``arg`` names, or with ``arg`` None the latest run of ``task``,
    which is then named on stderr unless the command names its model anyway (``name_latest``):
    an answer must not come from a model the user did not see chosen."""
    from rich.text import Text

    from ..runs.find import TASK_NAMES, resolve_run

    path = resolve_run(arg, runs_root(), task)
    if arg is None and name_latest:
        err().print(Text(f"model {show_path(path)} (the latest {TASK_NAMES[task]} run)", style="dim"),
                    highlight=False, soft_wrap=True)
    return path


def show_path(path) -> str:
    """``path`` relative to the working directory (or ``~``) when inside it: shorter to read and
    copy; control characters in it are escaped (a file name may hold any byte but / and NUL)."""
    path = Path(path)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return printable(prefix + str(path.resolve().relative_to(base.resolve())))
        except (ValueError, OSError):
            continue
    return printable(str(path))


def shell_command(*words) -> str:
    """A command line the user can paste back into a shell: each word quoted as needed (a run
    directory may hold spaces or quotes)."""
    import shlex

    return " ".join(shlex.quote(str(w)) for w in words)


class CharlmGroup(click.Group):
    """A click group whose ``main`` reports every failure in one line (see the module docstring)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _occupy_closed_std_fds()
        try:
            if not {"-h", "--help", "-V", "--version"} & set(sys.argv[1:] if args is None else args):
                check_environment()
            rv = super().main(args, prog_name or "charlm", complete_var, standalone_mode=False, **extra)
            if sys.stdout is not None:  # buffered results: a full disk shows only here
                CheckedStdout(sys.stdout).flush()
        except BaseException as e:  # noqa: BLE001 - this is the one place that decides
            code = report(rank_failed(e))  # under mpiexec: names the rank, stops the job
            if code is None:
                raise
            _exit(code)
        _exit(rv if isinstance(rv, int) else 0)


def _occupy_closed_std_fds() -> None:
    """Put /dev/null on fd 1 or 2 if the shell closed them (``>&-``): otherwise the next file this
    process opens (a lock file, a checkpoint) would get that number and catch stray output.
    Python has already set ``sys.stdout``/``sys.stderr`` to None, which the consoles handle."""
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass


def _exit(code: int):
    """Exit with ``code``; a stdout or stderr that can no longer be flushed must not turn it
    into Python's own complaint (exit 120) at shutdown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
            except (OSError, ValueError):
                pass
    sys.exit(code)


def report(e: BaseException) -> int | None:
    """Print the one line for ``e`` and return the exit code (``None``: let it propagate)."""
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
    if isinstance(e, SystemExit):
        return None
    if isinstance(e, click.Abort) and isinstance(e.__cause__, StopSignal):
        e = e.__cause__  # click turns every KeyboardInterrupt into Abort: keep which signal it was
    if no_args and isinstance(e, no_args):
        click.echo(e.ctx.get_help(), err=True)
        return EXIT_USAGE
    if isinstance(e, OutputError):
        if e.errno == errno.EPIPE:  # the reader has all it wanted (| head): quiet, like SIGPIPE
            return EXIT_BROKEN_PIPE
        fail_line(str(e))
        return EXIT_ERROR
    if isinstance(e, click.UsageError):
        hint = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
        fail_line(e.format_message() + hint)
        return EXIT_USAGE
    if isinstance(e, click.ClickException):
        fail_line(e.format_message())
        return e.exit_code
    if isinstance(e, StopSignal):
        fail_line(e.why or ("interrupted" if e.signum == 2 else f"stopped by signal {e.signum}"))
        return 128 + e.signum
    if isinstance(e, (click.Abort, KeyboardInterrupt)):
        fail_line("interrupted")
        return EXIT_INTERRUPTED
    line = _problem_line(e)
    if line is not None:
        fail_line(line)
        return EXIT_ERROR
    if isinstance(e, Exception):
        log = write_crash_log(e)
        fail_line(f"internal error ({type(e).__name__}: {' '.join(str(e).split())[:200]}); this is a bug in charlm, please report "
                  f"it on the charlm issue tracker with the log (details in {log})")
        return EXIT_ERROR
    return None


def _problem_line(e: BaseException) -> str | None:
    """The line for a problem the user can fix (a CharlmError, memory, the file system), or None."""
    if isinstance(e, CharlmError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory: choose a smaller model, batch or input"
    if isinstance(e, OSError):
        return describe_os_error(e)
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
        from ..fsutil import resolve_cache_dir

        candidates.append(resolve_cache_dir() / "logs")
    except Exception:  # noqa: BLE001 - the log must not depend on the rest of charlm working
        pass
    candidates.append(Path(tempfile.gettempdir()))
    for folder in candidates:
        try:
            from ..fsutil import atomic_write_text

            folder.mkdir(parents=True, exist_ok=True)
            return str(atomic_write_text(folder / name, text))
        except Exception:  # noqa: BLE001 - try the next folder
            continue
    return "no log: could not write one"
