"""What the command-line test files share: invoking charlm in-process."""
from click.testing import CliRunner

from charlm.cli import main


def invoke(*args, **kw):
    """``charlm ARGS`` through click's CliRunner (arguments may be paths or numbers)."""
    return CliRunner().invoke(main, [str(a) for a in args], **kw)
