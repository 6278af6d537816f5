"""The documentation is checked against the program it documents.

- Every command has help text with an example; docs/reference.md is exactly what
  tools/render_reference.py renders from that help (a difference fails, naming the one command
  that refreshes the page).
- README.md fits a couple of screens, says nothing about CI or the development machine on its
  first screen, and shows the test command CI runs (.ci/run's last pytest line), verbatim.
- Every relative link and ``#anchor`` in README.md and docs/*.md resolves. Anchors follow GitHub's
  rule: the heading's text, lower-cased, everything but letters, digits, spaces, hyphens and
  underscores dropped, spaces turned into hyphens, ``-1``, ``-2``... appended to repeats.
- Every option a page names for a charlm command exists in that command's ``--help``. In a shell
  code block the command is the line's own (after ``charlm``, ``.venv/bin/charlm``, or a launcher
  such as ``mpiexec -n 2``). In the text, a code span that starts with ``charlm`` is checked as a
  command line; a code span that starts with an option (```--top-k```, ```--time 10m```) belongs to
  the nearest ``charlm ...`` mention before it on the page (in text, a heading, a code span or a
  code block); to name another command's option, write it with its command (```charlm train
  --labels```). A mention of a group (``charlm classify``) accepts the options of any of its
  commands.
- Examples run. A shell code block (```` ```bash ````, ```` ```sh ````, or ```` ```console ````,
  whose commands are its ``$ `` lines) is an example: in README.md every one runs unless the line
  before its fence is ``<!-- example: shown only -->``; in docs/ only the blocks marked
  ``<!-- example: runs -->`` run. Their charlm commands run in order, in-process, in one sandbox
  per page that holds small made-up files under the names the pages use (``FILES``), with real
  settings rewritten to tiny ones (``tiny``: any budget becomes ``--steps 3``, widths 8, one
  layer, a sweep one trial...). Other programs in a block (pip, mpiexec) do not run. Mark a block
  shown only when it cannot run in seconds here (a benchmark, several processes, a cluster); its
  options are still checked.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from doc_pages import (
    PAGES,
    README,
    ROOT,
    RUNS,
    SHELL,
    SHOWN,
    blocks,
    command_lines,
    invocations,
    link_problems,
    name,
    option_problems,
    options_of,
    resolve,
    text_of,
)

from charlm.cli import main

COMMANDS = sorted(main.commands)


# -- running the examples -------------------------------------------------------------------

LINES = ["ROMEO: what light through yonder window breaks", "JULIET: the quick brown fox jumps over the lazy dog",
         "ROMEO: it was the best of times, it was the worst of times"]
WORDS = {"english": ["hello", "world", "house", "water", "light", "night"],
         "french": ["bonjour", "maison", "lumiere", "monde", "soleil", "bateau"],
         "german": ["hallo", "haus", "wasser", "licht", "nacht", "welt"]}
FILES = {
    "tinyshakespeare.txt": "\n\n".join(f"{line} {i}" for i in range(40) for line in LINES) + "\n",
    "held_out.txt": "\n\n".join(LINES) + "\n",
    "book.txt": "\n".join(f"{line} {i}" for i in range(30) for line in LINES).lower() + "\n",
    "names.txt": "\n".join(w.capitalize() for ws in WORDS.values() for w in ws) + "\n",
    "words.txt": "\n".join(w for ws in WORDS.values() for w in ws) + "\n",
    "wordlang-train.tsv": "".join(f"{w}{s}\t{lang}\n" for s in ("", "s", "e", "x") for lang, ws in WORDS.items() for w in ws),
    "wordlang-dev.tsv": "".join(f"{w}\t{lang}\n" for lang, ws in WORDS.items() for w in ws),
    "train.conll": "\n".join("\n".join(f"{w}\t{'N' if i % 2 else 'V'}" for i, w in enumerate(line.split())) + "\n"
                             for line in LINES * 10),
    "g2p-train.tsv": "".join(f"{w}{s}\t{' '.join((w + s).upper())}\n" for s in ("", "s", "y") for ws in WORDS.values() for w in ws),
    "g2p-dev.tsv": "".join(f"{w}\t{' '.join(w.upper())}\n" for ws in WORDS.values() for w in ws),
}
FILES["dev.conll"] = FILES["train.conll"]
TINY = {"--hidden": "8", "--embed": "8", "--layers": "1", "--seq-len": "16", "--batch-size": "4",
        "--members": "2", "--buckets": "64", "--wide-buckets": "64", "--max-length": "40", "--num-samples": "2",
        "--beam": "2", "--samples": "4", "--max-lag": "4", "--distances": "2,3", "--chars": "200",
        "--trials": "1", "--workers": "1"}
SIZES = ("--hidden", "--embed", "--layers", "--seq-len", "--batch-size")   # given to every training
BUDGETS = ("--time", "--epochs", "--steps")
EXTRA = {("inspect", "gradients"): ("--samples", "--max-lag"), ("inspect", "memory"): ("--distances",)}


def value_options(command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}


def tiny(args: list[str]) -> list[str]:
    """``args`` with real settings made tiny: every budget a few steps, every width small."""
    command, path, rest = resolve(args)
    accepts, takes_value = options_of(command), value_options(command)
    out, i = [], 0
    while i < len(rest):
        option, has_value = rest[i].split("=")[0], "=" in rest[i]
        takes = option in takes_value and not has_value and i + 1 < len(rest)
        value = rest[i].partition("=")[2] if has_value else (rest[i + 1] if takes else None)
        i += 1 + takes
        if option in BUDGETS and "--steps" in accepts:
            continue
        if option == "--grid":
            out += ["--grid", grid_axis(value)]
        elif option in TINY:
            out += [option, TINY[option]]
        else:
            out += [rest[i - 1]] if value is None or has_value else [option, value]
    training = path[-1:] == ["train"] or path == ["inspect", "memory"]
    if "--steps" in accepts and (training or "--steps" in rest or any(b in rest for b in BUDGETS)):
        out += ["--steps", "3"]
    if training and not {"--resume", "--init-from"} & set(rest):
        out += [arg for o in SIZES if o in accepts and o not in rest for arg in (o, TINY[o])]
    out += [arg for o in EXTRA.get(tuple(path), ()) if o not in rest for arg in (o, TINY[o])]
    if path[-1:] == ["sweep"]:
        train = resolve([*path[:-1], "train"])[0]
        given = {out[j + 1].split("=")[0] for j, arg in enumerate(out) if arg == "--grid"}
        out += [arg for o in SIZES if o in options_of(train) and o[2:].replace("-", "_") not in given
                for arg in ("--grid", f"{o[2:].replace('-', '_')}={TINY[o]}")]
        out += [] if "--workers" in out else ["--workers", "1"]
    return [*path, *out]


def grid_axis(axis: str) -> str:
    """A sweep's grid axis for a tiny sweep: one value, budgets two steps."""
    setting, _, values = axis.partition("=")
    if setting in ("time_budget", "steps", "epochs"):
        return "steps=2"
    option = "--" + setting.replace("_", "-")
    return f"{setting}={TINY.get(option, values.split(',')[0])}"


def runnable(page: Path) -> list[str]:
    default = RUNS if page == README else SHOWN
    return [line for block in blocks(text_of(page)) if block.lang in SHELL and (block.mark or default) == RUNS
            for line in command_lines(block)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The small files every page's examples read, made once."""
    where = tmp_path_factory.mktemp("files")
    for file_name, content in FILES.items():
        (where / file_name).write_text(content, encoding="utf-8")
    return where


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=name)
def test_examples_run(page, files, tmp_path, monkeypatch):
    for file_name in FILES:
        (tmp_path / file_name).write_bytes((files / file_name).read_bytes())
    monkeypatch.chdir(tmp_path)
    env = {"CHARLM_RUNS_DIR": str(tmp_path / "runs"), "CHARLM_CACHE_DIR": str(tmp_path / "cache")}
    ran = 0
    for line in runnable(page):
        for args in invocations(line):
            small = tiny(args)
            result = CliRunner().invoke(main, small, env=env)
            assert result.exit_code == 0, (f"{name(page)}: `{line}` ran as `charlm {shlex.join(small)}` and exited "
                                           f"{result.exit_code}:\n{result.output[-2000:]}")
            ran += 1
    assert ran


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_an_example(command):
    result = CliRunner().invoke(main, [command, "-h"])
    assert result.exit_code == 0
    assert main.commands[command].help, f"charlm {command} has no help text"
    assert "Example" in result.output and f"charlm {command}" in result.output


def test_every_command_is_in_a_guide():
    guides = "".join(text_of(p) for p in PAGES if p.name != "reference.md")
    assert not [c for c in COMMANDS if f"charlm {c}" not in guides]


def test_reference_page_is_rendered_from_the_commands():
    spec = importlib.util.spec_from_file_location("render_reference", ROOT / "tools" / "render_reference.py")
    render_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_reference)
    page = render_reference.PAGE
    assert page.exists() and text_of(page) == render_reference.render(), (
        f"docs/reference.md differs from the commands' help: run `{render_reference.REFRESH}`")


def test_readme_fits_and_starts_with_charlm():
    lines = text_of(README).splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    first_screen = "\n".join(lines[:40])
    assert not re.search(r"\bCI\b|\.ci/|development machine", first_screen)


def test_readme_runs_the_tests_as_ci_does():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if "pytest" in line and not line.lstrip().startswith("#")]
    shown = [line.strip() for block in blocks(text_of(README)) if block.lang in SHELL for line in command_lines(block)]
    assert ci and ci[-1] in shown, f"README.md does not show CI's test command {ci[-1:]}"
    assert any(line.startswith("python3 -m venv .venv") and "pip install -e '.[test" in line for line in shown)


def test_default_corpus_budget_is_stated_where_users_read_it():
    from charlm.training.budget import DEFAULT_TIME_BUDGET

    minutes = f"{DEFAULT_TIME_BUDGET / 60:g} minutes"
    help_text = " ".join(CliRunner().invoke(main, ["train", "-h"]).output.split())
    assert minutes in help_text and minutes in " ".join(text_of(README).split())


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_links_and_anchors_resolve(page):
    assert link_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_options_named_exist(page):
    assert option_problems(page) == []
