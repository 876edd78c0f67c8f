"""docs/cli.md, generated from the app's own help: `python -m mlops_cli.cli.docs > docs/cli.md`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from .. import limits
from . import app


def commands(group: Any = None, prefix: str = "mlops") -> Iterator[tuple[str, Any]]:
    """(full name, command) for the app and every command under it, depth first."""
    group = group if group is not None else typer.main.get_command(app)
    yield prefix, group
    for name in getattr(group, "commands", {}):
        yield from commands(group.commands[name], f"{prefix} {name}")


def parameters(command: Any) -> Iterator[tuple[str, str]]:
    """(how it is written, help) for each argument and option of a command."""
    for param in command.params:
        if param.name in ("help", "install_completion", "show_completion"):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            yield param.name.upper(), getattr(param, "help", None) or ""
        else:
            yield ", ".join(param.opts), param.help or ""


def markdown() -> str:
    lines = [
        "# Command reference",
        "",
        "Generated from the app's help by `python -m mlops_cli.cli.docs > docs/cli.md`;",
        "a test fails when it is out of date.",
        "",
    ]
    for name, command in commands():
        lines += [f"## `{name}`", "", (command.help or "").strip(), ""]
        params = list(parameters(command))
        if params:
            lines += ["| argument or option | help |", "| --- | --- |"]
            lines += [f"| `{how}` | {text.replace('|', '/')} |" for how, text in params]
            lines.append("")
    lines.append(limits.markdown())
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown())
