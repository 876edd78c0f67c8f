"""`mlops webhook add|list|remove|deliver|deliveries`: registry events out to HTTP endpoints."""

from __future__ import annotations

import typer

from ..webhooks import Delivery, DeliveryReport, Webhook
from .common import JSON_HELP, one_of, open_project, run, say, table
from .registry_cmds import short_time

webhook_app = typer.Typer(
    help="Deliver registry events to HTTP endpoints (signed, at least once, in order).",
    no_args_is_help=True,
)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


def webhook_rows(hooks: list[Webhook]) -> None:
    table(
        None,
        ["id", "url", "events", "model type", "added"],
        [
            [h.id, h.url, ",".join(h.events), h.model_type or "*", short_time(h.created_at)]
            for h in hooks
        ],
    )


@webhook_app.command("add")
def add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="http:// or https:// URL events are POSTed to."),
    events: str = typer.Option(
        ..., "--events", help="Event kinds, separated by commas (e.g. promoted,rolled_back), or *."
    ),
    model_type: str | None = typer.Option(
        None, "--model-type", help="Only events of this model type (default: every type)."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Add an endpoint; prints its signing secret (shown this once: keep it)."""

    def render(hook: Webhook) -> None:
        say(f"added webhook {hook.id}: {hook.url} ({','.join(hook.events)})")
        say(f"signing secret (shown once): {hook.secret}")

    run(
        ctx,
        json_output,
        lambda: open_project(ctx).webhooks.add(url, events, model_type),
        render,
        lambda hook: hook.to_dict(),
    )


@webhook_app.command("list")
def list_cmd(ctx: typer.Context, json_output: bool = JsonOpt) -> None:
    """List the endpoints (never their secrets)."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).webhooks.endpoints(),
        webhook_rows,
        lambda hooks: [h.to_dict() for h in hooks],
    )


@webhook_app.command("remove")
def remove(
    ctx: typer.Context,
    webhook_id: str = typer.Argument(..., help="The endpoint's id (from `webhook list`)."),
    json_output: bool = JsonOpt,
) -> None:
    """Remove an endpoint and its secret; its undelivered events are not sent."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).webhooks.remove(webhook_id),
        lambda hook: say(f"removed webhook {hook.id} ({hook.url})"),
        lambda hook: hook.to_dict(),
    )


@webhook_app.command("deliver")
def deliver(
    ctx: typer.Context,
    for_s: float = typer.Option(
        60.0, "--for", min=0.0, max=86400.0,
        help="Start no delivery after this many seconds; one under way waits at most "
        "webhooks.timeout_s (a cron step).",
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Deliver the events that are due (retries whose time has come included)."""

    def render(report: DeliveryReport) -> None:
        say(
            f"delivered {report.delivered}, failed {report.failed} (retried later), "
            f"dead-lettered {report.dead}; {report.pending} still to go"
        )

    run(ctx, json_output, lambda: open_project(ctx).webhooks.deliver(for_s), render)


@webhook_app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    limit: int = typer.Option(100, "--limit", min=1, max=100000, help="Attempts to read."),
    status: str | None = typer.Option(
        None,
        "--status",
        help="Only delivered, failed or dead (dead letters).",
        callback=one_of("delivered", "failed", "dead"),
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Where each event stands per endpoint (newest attempt); dead letters included."""

    def render(found: list[Delivery]) -> None:
        table(
            None,
            ["time", "webhook", "model type", "seq", "event", "id", "status", "attempt", "error"],
            [
                [
                    short_time(d.ts), d.webhook, d.model_type or "-", d.seq, d.event, d.id[:12],
                    d.status, d.attempt, d.error or "",
                ]
                for d in found
            ],
        )

    run(
        ctx,
        json_output,
        lambda: open_project(ctx).webhooks.deliveries(limit, status),
        render,
        lambda found: [d.to_dict() for d in found],
    )
