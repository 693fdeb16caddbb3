"""The CLI reference (``docs/cli.md``), generated from the command tree itself.

    python -m medcycle.cli.reference > docs/cli.md      # regenerate after changing a command
    python -m medcycle.cli.reference --check docs/cli.md  # exit 1 when the file is stale (a test runs this)

The text comes from the same click objects ``--help`` prints (names, arguments, options, defaults, help), not
from a terminal rendering, so it is the same on every machine and at every terminal width.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

HEADER = """# CLI reference

Generated from the commands themselves by `python -m medcycle.cli.reference > docs/cli.md`; a test fails when
this file and the code disagree. Every command also prints this with `--help`; the global options go before
the command (see `medcycle` below). `--json` prints machine-readable output where a command offers it.
"""


def _exit_codes() -> str:
    """The error → exit code (and HTTP status) map, from ``medcycle.errors`` itself."""
    from medcycle import errors
    from medcycle.cli.errors import INTERNAL_ERROR_EXIT

    rows = ["| exit code | error | HTTP | meaning |", "|---|---|---|---|", "| 0 | | | success |"]
    classes = sorted((c for c in vars(errors).values()
                      if isinstance(c, type) and issubclass(c, errors.MedcycleError)),
                     key=lambda c: (c.exit_code, c.__name__))
    for c in classes:
        meaning = _one_line((c.__doc__ or "").split("\n")[0])
        rows.append(f"| {c.exit_code} | `{c.__name__}` | {c.http_status} | {meaning} |")
    rows.append("| 2 | (usage) | | a wrong command line: unknown option, missing argument |")
    rows.append(f"| {INTERNAL_ERROR_EXIT} | (internal) | 500 | a bug: rerun with `--verbose`, report the traceback |")
    return "\n## Exit codes\n\n" + "\n".join(rows) + "\n"


# typer ships its own copy of click, so the command objects are matched by what they have, not by class.
def _subcommands(command: Any) -> list[tuple[str, Any]]:
    """The visible subcommands of a group, by name; the root's lazily imported ones (medcycle.cli.main) too."""
    if not hasattr(command, "list_commands"):
        return []
    ctx = command.context_class(command)
    commands = {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}
    return [(name, commands[name]) for name in sorted(commands) if commands[name] is not None
            and not commands[name].hidden]


def subcommands(command: Any) -> list[tuple[str, Any]]:
    """:func:`_subcommands` for tests: what the reference lists under ``command``."""
    return _subcommands(command)


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in _subcommands(command):
        yield from _walk(sub, (*path, name))


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _param_row(param: Any, ctx: Any) -> str:
    """One table row from the same record ``--help`` prints (names with type, help with default and range)."""
    record = param.get_help_record(ctx)
    names, help_text = record if record else (param.name, "")
    kind = "argument" if param.param_type_name == "argument" else "option"
    cell = _one_line(help_text).replace("|", "\\|")
    return f"| `{_one_line(names)}` | {kind} | {cell} |"


def render(app: typer.Typer, prog: str = "medcycle") -> str:
    """The Markdown reference of every command under ``app``."""
    root = typer.main.get_command(app)
    parts = [HEADER, _exit_codes()]
    for path, command in _walk(root, (prog,)):
        title = " ".join(path)
        parts.append(f"\n## `{title}`\n")
        ctx = command.context_class(command, info_name=title)
        usage = " ".join(command.collect_usage_pieces(ctx))
        parts.append(f"```\n{title} {usage}\n```\n")
        if command.help:
            # typer keeps the docstring; its first paragraph is the summary, the rest stays as written
            parts.append(command.help.strip().replace("\b\n", "") + "\n")
        params = [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]
        if params:
            parts.append("\n| name | kind | help |\n|---|---|---|")
            parts.extend(_param_row(p, ctx) for p in params)
            parts.append("")
        subs = _subcommands(command)
        if subs:
            parts.append("\n| command | what it does |\n|---|---|")
            parts.extend(f"| `{title} {n}` | {_one_line(c.get_short_help_str(limit=200))} |" for n, c in subs)
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print (or check) the generated CLI reference.")
    parser.add_argument("--check", type=Path, help="compare with this file; exit 1 and say how to fix if it differs")
    args = parser.parse_args(argv)
    from medcycle.cli.main import app

    text = render(app)
    if args.check is None:
        sys.stdout.write(text)
        return 0
    if args.check.read_text() != text:
        sys.stderr.write(f"{args.check} is stale: regenerate it with "
                         f"`python -m medcycle.cli.reference > {args.check}`\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
