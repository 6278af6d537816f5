"""The documentation pages read as the documentation test reads them: code blocks and their
example marks, the charlm commands they run, the options and links the text names
(tests/test_docs.py says the rules)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

from charlm.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
RUNS, SHOWN = "runs", "shown only"


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- reading the pages ------------------------------------------------------------------------

FENCE = re.compile(r"^(?:<!-- example: (?P<mark>runs|shown only) -->[ \t]*\n)?```(?P<lang>[\w-]*)[^\n]*\n"
                   r"(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


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
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", prose(text_of(page)), re.MULTILINE):
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
