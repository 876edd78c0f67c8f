"""`mlops db upgrade` (PostgreSQL schema migrations) and `mlops store copy SRC DST`."""

from __future__ import annotations

from typing import Any

import typer

from .common import JSON_HELP, globals_of, run, say

db_app = typer.Typer(help="The PostgreSQL store's schema.", no_args_is_help=True)
store_app = typer.Typer(
    help="Move a project between stores, or export its logs.", no_args_is_help=True
)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, json_output: bool = JsonOpt) -> None:
    """Apply the PostgreSQL store's schema migrations (one transaction, under a lock)."""

    def action() -> dict[str, Any]:
        from ..errors import ValidationError
        from ..project import Project, is_url, postgres

        where = Project.locate(globals_of(ctx).project_dir)
        if not is_url(where):
            raise ValidationError(
                f"{where} is a directory: its registry.yaml is upgraded when opened; "
                "`mlops db upgrade` is for a postgresql:// store (-C URL)"
            )
        store = postgres()
        before, after = store.upgrade(str(where))
        return {"store": store.redact(str(where)), "schema_before": before, "schema_after": after}

    run(
        ctx,
        json_output,
        action,
        lambda r: say(
            f"{r['store']}: store schema {r['schema_before']} -> {r['schema_after']}"
            if r["schema_before"] != r["schema_after"]
            else f"{r['store']}: store schema {r['schema_after']} is current"
        ),
    )


@store_app.command("copy")
def copy(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Project directory or postgresql:// URL to copy."),
    target: str = typer.Argument(..., help="A new directory or an empty postgresql:// store."),
    json_output: bool = JsonOpt,
) -> None:
    """Copy a project (registry, every record, batch ids) into a new directory or an empty
    store: every record is checked first, and a copy that fails leaves no target."""

    def action() -> dict[str, Any]:
        from ..project import Project, copy_project

        src = Project.open(source)
        try:
            copied = copy_project(src, target)
        finally:
            src.store.close()
        return {
            "source": src.location,
            "target": copied.target,
            "records": copied.records,
            "batch_ids": copied.batches,
        }

    run(
        ctx,
        json_output,
        action,
        lambda r: say(
            f"copied {r['source']} to {r['target']}: the registry, "
            f"{sum(r['records'].values())} records in {len(r['records'])} streams and "
            f"{r['batch_ids']} batch id{'' if r['batch_ids'] == 1 else 's'}"
        ),
    )


@store_app.command("export")
def export(
    ctx: typer.Context,
    parquet: str = typer.Option(
        ..., "--parquet", help="A new folder: logs as Parquet by stream and day (with seq)."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Export the project's logs (either store) as Parquet partitioned by stream and day, to
    declare as a source (docs/engines.md)."""

    def action() -> dict[str, Any]:
        from ..sources.export import export_parquet
        from .common import open_project

        return export_parquet(open_project(ctx).store, parquet).to_dict()

    run(
        ctx,
        json_output,
        action,
        lambda r: say(
            f"exported {sum(r['records'].values()):,} records of {len(r['records'])} streams "
            f"to {r['target']} ({r['files']} Parquet files)"
        ),
    )
