"""What the command-line test files share: invoking charlm in-process, and what a user error looks like."""
from click.testing import CliRunner

from charlm.cli import main


def invoke(*args, **kw):
    """``charlm ARGS`` through click's CliRunner (arguments may be paths or numbers)."""
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def one_red_line(result, code=1):
    """A user error: the exit code, one 'error:' line on stderr, no traceback anywhere."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]
