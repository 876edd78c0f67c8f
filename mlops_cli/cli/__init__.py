"""The Typer app: parses arguments, calls the library, renders tables or JSON.

`main` builds the app with only the command group the arguments name (the others are not
even imported), which keeps a command's start-up close to that of Python with Typer alone.
`app` (for tests and docs) is the whole app.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import typer

from .. import __version__
from .common import Globals

REGISTRY_COMMANDS = {
    "init",
    "register",
    "list",
    "show",
    "champion",
    "promote",
    "rollback",
    "deprecate",
    "verify",
    "history",
    "config",
    "metrics",
    "alias",
}
GROUPS = (
    "registry", "ab", "drift", "demo", "ui", "report", "db", "store", "source", "webhook",
    "watch",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlops {__version__}")
        raise typer.Exit()


def main_options(
    ctx: typer.Context,
    project_dir: str | None = typer.Option(
        None,
        "--project-dir",
        "-C",
        envvar="MLOPS_PROJECT_DIR",
        help="Project directory or postgresql:// URL (default: MLOPS_PROJECT_DIR, else the "
        "nearest directory holding registry.yaml, from the current one up).",
    ),
    traceback: bool = typer.Option(False, "--traceback", help="Show a traceback on a bug."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = Globals(project_dir=project_dir, traceback=traceback)


def make_app(groups: tuple[str, ...] = GROUPS, command: str | None = None) -> typer.Typer:
    """The app with the given command groups (or one registry command) registered."""
    app = typer.Typer(
        name="mlops",
        help="Model registry, A/B tests with sound statistics, and drift detection in plain files.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(main_options)
    if "registry" in groups:
        from .registry_cmds import register_commands

        register_commands(app, command)
    if "ab" in groups:
        from .ab_cmds import ab_app

        app.add_typer(ab_app, name="ab")
    if "drift" in groups:
        from .drift_cmds import drift_app

        app.add_typer(drift_app, name="drift")
    if "watch" in groups:
        from .drift_cmds import watch_app

        app.add_typer(watch_app, name="watch")
    if "demo" in groups:
        from .demo_cmd import demo

        app.command()(demo)
    if "db" in groups or "store" in groups:
        from .store_cmds import db_app, store_app

        app.add_typer(db_app, name="db")
        app.add_typer(store_app, name="store")
    if "source" in groups:
        from .source_cmds import source_app

        app.add_typer(source_app, name="source")
    if "webhook" in groups:
        from .webhook_cmds import webhook_app

        app.add_typer(webhook_app, name="webhook")
    if "ui" in groups or "report" in groups:
        from .ui_cmds import register_ui_commands

        register_ui_commands(app)
    return app


def first_command(argv: list[str]) -> str | None:
    """The command a command line names, skipping the global options; None for help."""
    args = iter(argv)
    for arg in args:
        if arg in ("-C", "--project-dir"):
            next(args, None)
        elif not (arg.startswith("--project-dir=") or arg == "--traceback"):
            return arg if arg in REGISTRY_COMMANDS or arg in GROUPS else None
    return None


def __getattr__(name: str) -> Any:
    if name == "app":
        whole = make_app()
        globals()["app"] = whole
        return whole
    raise AttributeError(name)


def main() -> None:
    command = first_command(sys.argv[1:])
    if command is None:
        app = make_app()  # help, completion, or a typo: show every command
    elif command in REGISTRY_COMMANDS:
        app = make_app(("registry",), command)
    else:
        app = make_app((command,))
    gc.enable()  # (disabled by the console script for the start-up)
    app(prog_name="mlops")
