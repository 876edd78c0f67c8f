"""`mlops ui` (the dashboard server) and `mlops report --html` (the same views in one file)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import Terminated
from .common import funnel, globals_of, say


def ui(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to serve on (loopback only unless --token is given)."
    ),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the dashboard in a browser."),
    allow_actions: bool = typer.Option(
        False, "--allow-actions", help="Offer promote, rollback, finalize and deprecate."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="MLOPS_UI_TOKEN",
        help="Access token every request must present (required off loopback).",
    ),
) -> None:
    """Serve the dashboard: registry, A/B tests, drift and the audit log, in a browser."""
    from ..ui.server import make_server, url_of

    project = globals_of(ctx).project_dir
    with funnel(ctx):
        server = make_server(str(project) if project else None, host, port, allow_actions, token)
        url = url_of(server, token)
        mode = "actions allowed" if allow_actions else "read-only"
        say(f"mlops dashboard ({mode}) at {url}  (Ctrl-C to stop)", err=True)
        sys.stderr.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            if server.serve_until_terminated():
                raise Terminated
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def report(
    ctx: typer.Context,
    html_file: Path = typer.Option(..., "--html", help="Where to write the HTML report."),
    model: str | None = typer.Option(None, "--model", help="Only this model type."),
    test: str | None = typer.Option(None, "--test", help="Only this A/B test."),
) -> None:
    """Write the dashboard's views as one self-contained HTML file (no network needed)."""
    from ..errors import StateError
    from ..report import render_html, write_report
    from ..ui.data import bundle, skipped_in
    from .ab_cmds import skipped_note

    project = globals_of(ctx).project_dir
    with funnel(ctx):
        docs = bundle(str(project) if project else None, model, test)
        try:
            size = write_report(html_file, render_html(docs))
        except OSError as exc:
            raise StateError(f"could not write {html_file}: {exc.strerror or exc}") from exc
        say(f"wrote {html_file} ({size / 1024:.0f} KB)", err=True)
        for entry in skipped_in(docs):
            skipped_note(entry["log"], entry["lines"])


def register_ui_commands(app: typer.Typer) -> None:
    app.command()(ui)
    app.command()(report)
