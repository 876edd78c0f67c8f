"""The Typer app: parses arguments, calls the library, renders tables or JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import __version__
from .ab_cmds import ab_app
from .common import Globals
from .demo_cmd import demo
from .drift_cmds import drift_app
from .registry_cmds import register_commands

app = typer.Typer(
    name="mlops",
    help="Model registry, A/B tests with sound statistics, and drift detection in plain files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlops {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    project_dir: Path | None = typer.Option(
        None,
        "--project-dir",
        "-C",
        envvar="MLOPS_PROJECT_DIR",
        help="Project directory (default: MLOPS_PROJECT_DIR, else the current directory).",
    ),
    traceback: bool = typer.Option(False, "--traceback", help="Show a traceback on a bug."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = Globals(project_dir=project_dir, traceback=traceback)


register_commands(app)
app.add_typer(ab_app, name="ab")
app.add_typer(drift_app, name="drift")
app.command()(demo)


def main() -> None:
    app(prog_name="mlops")
