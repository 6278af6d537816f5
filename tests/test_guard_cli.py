"""What the command line prints stays usable: a config nested without end is one line, tables keep
their figures at any terminal width, and every command printed for pasting back is shell-quoted."""
import json
import shlex

import pytest

from cli_helpers import invoke, one_red_line

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def trained(tmp_path):
    """A tiny language-model run in a directory whose name needs quoting in a shell."""
    (tmp_path / "small.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    run = tmp_path / "my run's $dir"
    result = invoke("train", tmp_path / "small.txt", "--hidden", 8, "--layers", 1, "--threads", 1,
                    "--steps", 4, "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run, result


@pytest.mark.parametrize("depth", [1_000, 5_000, 50_000])
def test_a_config_nested_without_end_is_one_line(tmp_path, depth):
    config = tmp_path / "deep.toml"
    config.write_text("hidden = " + "[" * depth + "]" * depth + "\n")
    line = one_red_line(invoke("train", "--config", config, "--steps", 1))
    assert "deep.toml" in line and "internal error" not in line


def test_printed_commands_paste_back_to_the_same_run(trained):
    run, result = trained
    commands = [line.split("  ", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("sample it")]
    assert commands, result.stderr
    for command in commands:
        words = shlex.split(command)
        assert words[:2] == ["charlm", "sample"] and (run.parent / words[2]).resolve() == run.resolve()


@pytest.mark.parametrize("columns", ["10", "24", "40"])
def test_the_eval_table_keeps_every_figure_at_any_width(trained, columns, tmp_path):
    run, _ = trained
    figures = json.loads(invoke("eval", run, tmp_path / "small.txt", "--json").stdout)
    result = invoke("eval", run, tmp_path / "small.txt", env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    for key, digits in (("loss_nats", 4), ("perplexity", 3)):
        assert f"{figures[key]:.{digits}f}" in result.stdout, result.stdout
    assert f"{figures['tokens']:,}" in result.stdout
