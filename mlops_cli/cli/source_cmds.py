"""`mlops source check FILE`: what a source declaration resolves to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import JSON_HELP, run, say

source_app = typer.Typer(
    help="Sources: requests and drift samples read from Parquet or Spark.", no_args_is_help=True
)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


@source_app.command("check")
def check(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Source YAML (engine, path or table, columns, filter)."),
    json_output: bool = JsonOpt,
) -> None:
    """Say what a source resolves to: rows its filter selects, columns and types, time range."""

    def action() -> dict[str, Any]:
        from ..sources import describe, load

        return describe(load(file))

    def render(r: dict[str, Any]) -> None:
        say(f"{r['source']}: {r['rows']:,} rows, ts {r['ts_min']} .. {r['ts_max']}")
        for column in r["columns"]:
            ours = [k for k, v in r["mapped"].items() if v == column["name"]]
            say(f"  {column['name']}: {column['type']}" + (f" (ours: {ours[0]})" if ours else ""))
        say(
            f"A/B requests: {'ready' if r['ab_ready'] else 'missing columns'}; "
            f"drift samples: {'ready' if r['drift_ready'] else 'missing columns'}"
        )

    run(ctx, json_output, action, render)
