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
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from charlm.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = sorted(main.commands)
SHELL = {"bash", "sh", "shell", "console"}
RUNS, SHOWN = "runs", "shown only"


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- reading the pages ------------------------------------------------------------------------

FENCE = re.compile(r"^(?:<!-- example: (?P<mark>runs|shown only) -->[ \t]*\n)?```(?P<lang>[\w-]*)[^\n]*\n"
                   r"(?P<body>.*?)^```[ \t]*$", re.M | re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)


@dataclass
class Block:
    lang: str
    body: str
    mark: str | None
    start: int


def blocks(text: str) -> list[Block]:
    return [Block(m["lang"], m["body"], m["mark"], m.start()) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The page with its code blocks and HTML comments blanked out (offsets kept)."""
    for pattern in (FENCE, COMMENT):
        text = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), text)
    return text


def command_lines(block: Block) -> list[str]:
    """A shell block's command lines: a console block's ``$`` lines, continuations joined."""
    lines = block.body.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [line for line in joined if line.strip() and not line.lstrip().startswith("#")]


def invocations(line: str) -> list[list[str]]:
    """The arguments of every charlm run on one shell line (after ``charlm``, whatever launches
    it); pipes, ``&&`` and redirections end a command."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError:   # an unclosed quote: read it word by word
        tokens = line.split()
    found, current, skip = [], None, False
    for token in tokens:
        if skip:
            skip = False
        elif token in {"&&", "||", "|", ";", "&"}:
            current = None
        elif token in {">", ">>", "<", "2>", ">&"}:
            current, skip = None, True
        elif current is None and (token == "charlm" or token.endswith("/charlm")):
            current = []
            found.append(current)
        elif current is not None:
            current.append(token)
    return found


def resolve(args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """The command ``args`` name, its path of names, and the arguments after them."""
    command, path = main, []
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        command, path, args = command.commands[args[0]], [*path, args[0]], args[1:]
    return command, path, args


def options_of(command: click.Command) -> set[str]:
    """Every option spelling ``command -h`` shows (a group: those of all its commands)."""
    if isinstance(command, click.Group):
        names = {"-h", "--help", *(() if command is not main else ("-V", "--version"))}
        return names.union(*(options_of(sub) for sub in command.commands.values()))
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
    return names


OPTION = re.compile(r"^(--[a-z][\w-]*|-[a-zA-Z])$")


def named_options(tokens) -> list[str]:
    return [t.split("=")[0] for t in tokens if OPTION.match(t.split("=")[0])]


def option_problems(page: Path) -> list[str]:
    """Options a page names that its command does not have, as one line each."""
    text = text_of(page)
    problems, mentions, uses = [], [], []   # mentions: (offset, path); uses: (offset, option)

    def check(args, where):
        command, path, rest = resolve(args)
        missing = [o for o in named_options(rest) if o not in options_of(command)]
        problems.extend(f"{name(page)}: {where}: charlm {' '.join(path)} has no option {o}" for o in missing)
        return path

    for block in blocks(text):
        if block.lang in SHELL:
            for line in command_lines(block):
                for args in invocations(line):
                    mentions.append((block.start + block.body.find(line.split()[0]), check(args, repr(line))))
    plain = prose(text)
    for m in re.finditer(r"`([^`]+)`", plain):
        span = m[1].strip()
        if not span:
            continue
        if re.match(r"(\S*/)?charlm\s", span):
            for args in invocations(span.replace("\\|", "|")):
                mentions.append((m.start(), check(args, f"`{span}`")))
        elif OPTION.match(span.split()[0].split("/")[0].split("=")[0]):
            for token in span.replace("/", " ").split():
                uses.extend((m.start(), o) for o in named_options([token]))
    without_spans = re.sub(r"`[^`]*`", lambda m: " " * len(m[0]), plain)
    for m in re.finditer(r"\bcharlm((?:[ \t]+[a-z][a-z0-9-]*)+)", without_spans):
        mentions.append((m.start(), resolve(m[1].split())[1]))
    mentions.sort(key=lambda item: item[0])
    for offset, option in uses:
        path = next((p for at, p in reversed(mentions) if at < offset), [])
        command = resolve(path)[0]
        if option not in options_of(command):
            line = text.count("\n", 0, offset) + 1
            problems.append(f"{name(page)}:{line}: `{option}` is not an option of charlm {' '.join(path)}"
                            " (the nearest charlm command named before it)")
    return problems


# -- links and anchors ------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives a page's headings."""
    found, seen = set(), {}
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", prose(text_of(page)), re.M):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m[1])
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def link_problems(page: Path) -> list[str]:
    problems = []
    for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", prose(text_of(page))):
        target = m[1]
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(f"{name(page)}: link to {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{name(page)}: link to {target}: {linked.name} has no heading #{anchor}")
    return problems


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
