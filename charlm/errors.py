"""User-facing errors.

Every problem a user can fix (a missing file, bad UTF-8, an unknown character in a prime,
a broken checkpoint) is raised as a ``CharlmError`` subclass whose message is one clear
line. The CLI turns these, and only these, into a red line on stderr and a non-zero exit;
anything else is a bug and is reported as one.
"""


class CharlmError(Exception):
    """Base class: a problem the user can fix. ``str(e)`` is a complete one-line message."""


class CorpusError(CharlmError):
    """The text to train or evaluate on cannot be read or used."""


class VocabError(CharlmError):
    """Text contains tokens the vocabulary does not know (strict encoding)."""


class ConfigError(CharlmError):
    """A configuration value is out of range or inconsistent with another."""


class CheckpointError(CharlmError):
    """A checkpoint or run directory is missing, truncated, corrupted or incompatible."""
