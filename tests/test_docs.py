"""Every command has help text with an example, and the README documents every command."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(main.commands)


def test_there_are_commands():
    assert {"train", "sample", "eval", "info"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_has_an_example(name):
    result = CliRunner().invoke(main, [name, "-h"])
    assert result.exit_code == 0
    assert main.commands[name].help, f"charlm {name} has no help text"
    assert "Example" in result.output and f"charlm {name}" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_in_the_readme(name):
    assert f"### `charlm {name}" in README, f"README.md has no reference section for charlm {name}"


def test_readme_sections():
    for heading in ("## Quick start", "## Commands", "## Performance", "## Architecture"):
        assert heading in README, heading
    assert "python -m pytest" in README


def test_default_corpus_budget_is_stated_where_users_read_it():
    from charlm.training.budget import DEFAULT_TIME_BUDGET

    minutes = f"{DEFAULT_TIME_BUDGET / 60:g} minutes"
    help_text = " ".join(CliRunner().invoke(main, ["train", "-h"]).output.split())
    assert minutes in help_text and minutes in README
