"""Render docs/reference.md, the command reference, from the commands' own help.

Every command's ``--help`` is rendered through click's API (the text ``charlm ... -h`` prints, at
a fixed width), so the page cannot drift from the program: tests/test_docs.py fails when the
checked-in page differs from what this renders.

    python tools/render_reference.py            # rewrite docs/reference.md
    python tools/render_reference.py --check    # exit 1 if docs/reference.md is out of date
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference.md"
REFRESH = "python tools/render_reference.py"
WIDTH = 100   # the width charlm's own help is laid out for (cli/__init__.py: max_content_width)

HEADER = f"""# Command reference

Every command's `-h`, generated from the commands themselves by `{REFRESH}`.
Do not edit this page by hand: the documentation test fails when it differs from the program.
The guides explain what the options are for: [language models](language-models.md),
[classification](classification.md), [tagging](tagging.md), [sequence to sequence](seq2seq.md).
"""


def walk(command: click.Command, ctx: click.Context):
    """(context, command) for ``command`` and every subcommand under it, depth first, in the
    order ``charlm -h`` lists them."""
    yield ctx, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, context(sub, name, ctx))


def context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """The context ``command`` would run in (its own settings, as ``make_context`` applies them),
    laid out at ``WIDTH`` columns whatever the terminal."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return command.context_class(command, info_name=name, parent=parent, **settings)


def render() -> str:
    """The whole page: a contents list, then one section per command with its help."""
    from charlm.cli import main

    sections = list(walk(main, context(main, "charlm", None)))
    lines = [HEADER]
    lines += [f"- [`{ctx.command_path}`](#{ctx.command_path.replace(' ', '-')})" for ctx, _ in sections]
    for ctx, command in sections:
        help_text = command.get_help(ctx).rstrip()
        lines += ["", f"## {ctx.command_path}", "", "```text", help_text, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run {REFRESH}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))   # run from a checkout without installing
    sys.exit(main(sys.argv[1:]))
