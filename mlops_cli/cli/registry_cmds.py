"""Registry commands: init, register, list, show, champion, promote, rollback, and friends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import ValidationError
from ..project import Project
from ..registry import Alias, ModelVersion
from ..store.base import metrics_stream
from .common import (
    JSON_HELP,
    figure,
    funnel,
    globals_of,
    key_value_text,
    key_values,
    named_as_flags,
    open_project,
    parse_pairs,
    run,
    say,
    table,
)

JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


def version_rows(versions: list[ModelVersion]) -> None:
    table(
        None,
        ["type", "version", "role", "traffic %", "requests", "errors", "confidence", "ms"],
        [
            [
                v.model_type,
                v.version,
                "champion" if v.is_champion else "deprecated" if v.deprecated else "",
                f"{v.traffic_percentage:g}",
                v.requests,
                figure(v.error_rate, ".4f"),
                figure(v.avg_confidence, ".4f"),
                figure(v.avg_inference_time_ms, ".1f"),
            ]
            for v in versions
        ],
    )


def metrics_notes(versions: list[ModelVersion]) -> None:
    """Say which metrics logs had malformed lines left out of the figures (on stderr, so
    also beside --json)."""
    for v in versions:
        if v.skipped_lines:
            log = f"logs/{metrics_stream(v.model_type, v.version)}.jsonl"
            say(
                f"note: {v.skipped_lines} malformed line(s) of {log} left out of the serving "
                "metrics (fix or remove them)",
                err=True,
            )


def version_card(v: ModelVersion) -> None:
    no_mean = ("avg_inference_time_ms", "avg_confidence", "error_rate")  # before a request
    key_values(
        f"{v.model_type} {v.version}",
        [
            (k, "-" if val is None and k in no_mean else val)
            for k, val in v.to_dict().items()
            if k not in ("model_type", "version")
        ],
    )


def short_time(ts: Any) -> str:
    """`2026-11-26T07:51:30.985775Z` -> `2026-11-26 07:51:30`."""
    return str(ts or "")[:19].replace("T", " ")


def init(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Reset an existing registry.yaml."),
    archive_logs: bool = typer.Option(
        False, "--archive-logs", help="With --force: move the old records to archive/."
    ),
    delete_logs: bool = typer.Option(
        False, "--delete-logs", help="With --force: delete the old records."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Create a project directory (registry.yaml with default settings), or a store at a URL."""

    def action() -> Project:
        if archive_logs and delete_logs:
            raise ValidationError("give --archive-logs or --delete-logs, not both")
        old_logs = "archive" if archive_logs else "delete" if delete_logs else None
        if old_logs and not force:
            raise ValidationError(f"--{old_logs}-logs goes with --force")
        return Project.init(globals_of(ctx).project_dir, force=force, old_logs=old_logs)

    run(
        ctx,
        json_output,
        action,
        lambda p: say(f"initialised mlops project in {p.location}"),
        lambda p: {"project_dir": p.location, "registry": str(p.registry_path)},
    )


def register(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type, e.g. gnn."),
    version: str = typer.Argument(..., help="SemVer version, e.g. v2.2.0."),
    path: str = typer.Option(..., "--path", help="Where the model file lives."),
    config_file: Path | None = typer.Option(
        None, "--config-file", help="YAML mapping with the model's config."
    ),
    config: list[str] | None = typer.Option(
        None, "--config", help="Config entry KEY=VALUE (repeatable; wins over --config-file)."
    ),
    description: str = typer.Option("", "--description", help="Free text."),
    tag: list[str] | None = typer.Option(None, "--tag", help="Tag KEY=VALUE (repeatable)."),
    no_champion: bool = typer.Option(
        False, "--no-champion", help="Never make this version champion, even the first."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Register a new, immutable model version (the first of a type becomes champion)."""

    def action() -> ModelVersion:
        project = open_project(ctx)
        from ..schema import load_yaml_mapping

        merged: dict[str, Any] = load_yaml_mapping(config_file) if config_file else {}
        merged.update(parse_pairs(config, "--config", typed=True))
        mv = ModelVersion(
            model_type=model_type,
            version=version,
            model_path=path,
            config=merged,
            description=description,
            tags=parse_pairs(tag, "--tag", typed=False),
        )
        return project.registry.register_version(mv, make_champion=False if no_champion else None)

    def render(v: ModelVersion) -> None:
        role = "champion, 100% traffic" if v.is_champion else "not serving yet"
        digest = f", sha256 {v.sha256[:12]}" if v.sha256 else ", no file at that path yet"
        say(f"registered {v.model_type} {v.version} ({role}){digest}")

    run(ctx, json_output, action, render, lambda v: v.to_dict())


def list_cmd(
    ctx: typer.Context,
    model_type: str | None = typer.Argument(None, help="Only this model type."),
    limit: int | None = typer.Option(
        None, "--limit", min=0, help="At most this many versions (a page)."
    ),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many versions first."),
    json_output: bool = JsonOpt,
) -> None:
    """List registered versions with their serving metrics (by type, then SemVer)."""
    def action() -> list[ModelVersion]:
        versions = open_project(ctx).registry.list_versions(model_type, limit, offset)
        metrics_notes(versions)
        return versions

    run(ctx, json_output, action, version_rows, lambda vs: [v.to_dict() for v in vs])


def show(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str | None = typer.Argument(None, help="Version (default: the champion)."),
    json_output: bool = JsonOpt,
) -> None:
    """Show one version (the champion when no version is given)."""

    def action() -> tuple[ModelVersion, list[str]]:
        registry = open_project(ctx).registry
        if version is None:
            found = registry.require_champion(model_type)
        else:
            found = registry.get_version(model_type, version)
        metrics_notes([found])
        named = [a.alias for a in registry.aliases(model_type) if a.version == found.version]
        return found, named

    def render(shown: tuple[ModelVersion, list[str]]) -> None:
        version_card(shown[0])
        if shown[1]:
            say(f"aliases: {', '.join(shown[1])}")

    run(ctx, json_output, action, render,
        lambda shown: {**shown[0].to_dict(), "aliases": shown[1]})


def champion(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    json_output: bool = JsonOpt,
) -> None:
    """Print the champion's version alone (for V=$(mlops champion gnn))."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.require_champion(model_type),
        lambda v: say(v.version),
        lambda v: v.to_dict(),
    )


def promote(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version to make champion."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the history)."),
    force: bool = typer.Option(False, "--force", help="Promote even while an A/B test runs."),
    json_output: bool = JsonOpt,
) -> None:
    """Make a version champion with 100% traffic."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.promote_to_champion(model_type, version, reason, force),
        lambda v: say(f"{v.model_type} {v.version} is now champion (100% traffic)"),
        lambda v: v.to_dict(),
    )


def rollback(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the history)."),
    json_output: bool = JsonOpt,
) -> None:
    """Make the previous champion champion again."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.rollback(model_type, reason),
        lambda v: say(f"rolled back: {v.model_type} {v.version} is champion again"),
        lambda v: v.to_dict(),
    )


def deprecate(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version to deprecate."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the history)."),
    json_output: bool = JsonOpt,
) -> None:
    """Deprecate a version: it can no longer be promoted or A/B tested, and the aliases
    naming it are removed."""

    def action() -> tuple[ModelVersion, list[str]]:
        registry = open_project(ctx).registry
        named = [a.alias for a in registry.aliases(model_type) if a.version == version]
        return registry.deprecate(model_type, version, reason), named

    def render(done: tuple[ModelVersion, list[str]]) -> None:
        v, removed = done
        say(f"{v.model_type} {v.version} is deprecated"
            + (f"; aliases removed: {', '.join(removed)}" if removed else ""))

    run(ctx, json_output, action, render,
        lambda done: {**done[0].to_dict(), "aliases_removed": done[1]})


def verify(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version."),
    json_output: bool = JsonOpt,
) -> None:
    """Recompute the model file's sha256 and compare it with the registered one (exit 1 if not)."""
    result = run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.verify(model_type, version),
        lambda r: say(
            f"{r.status}: {r.model_type} {r.version} {r.model_path}: {r.message}"
        ),
    )
    with funnel(ctx):
        result.raise_if_failed()


def history(
    ctx: typer.Context,
    model_type: str | None = typer.Argument(None, help="Only this model type."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the last N events."),
    json_output: bool = JsonOpt,
) -> None:
    """The audit log of changes, oldest first."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.history(model_type, limit),
        lambda events: table(
            None,
            ["time", "event", "model type", "version", "actor", "details"],
            [
                [
                    short_time(e.get("ts")),
                    e.get("event"),
                    e.get("model_type") or e.get("test"),
                    e.get("version") or e.get("decision"),
                    e.get("actor"),
                    event_details(e.to_dict()),
                ]
                for e in events
            ],
        ),
    )


def event_details(event: dict[str, Any]) -> str:
    """An audit event's reason, then what else it carries (`alias=shadow`), as k=v: the
    columns before it show its time, kind, model type, version and actor."""
    shown = {"ts", "event", "model_type", "version", "actor", "reason", "model_path"}
    if not event.get("model_type"):
        shown.add("test")
    if not event.get("version"):
        shown.add("decision")
    rest = {
        k: format(v, ".6g") if isinstance(v, float) else v
        for k, v in event.items()
        if k not in shown and v is not None
    }
    return "; ".join(str(part) for part in (event.get("reason"), key_value_text(rest)) if part)


config_app = typer.Typer(help="Read and change settings (dotted keys).", no_args_is_help=True)


@config_app.command("list")
def config_list(ctx: typer.Context, json_output: bool = JsonOpt) -> None:
    """Every setting with its value."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).settings,
        lambda settings: table(None, ["key", "value"], settings.flat()),
        lambda settings: settings.data,
    )


@config_app.command("get")
def config_get(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Dotted key, e.g. drift.reference_size."),
    json_output: bool = JsonOpt,
) -> None:
    """One setting's value."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).get_setting(key),
        lambda v: say(str(v)),
        lambda v: {"key": key, "value": v},
    )


# A value may start with "-" (a negative number): it is the value, not an unknown option.
@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Dotted key, e.g. drift.thresholds.retrain."),
    value: str = typer.Argument(
        ..., help="The value, as YAML (0.25, true, -0.01, a string); `--` before it works too."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Change one setting (validated before it is written). A negative number is given as it
    is (`config set ab.defaults.min_confidence_improvement -0.01`) or after `--`."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).set_setting(key, value),
        lambda v: say(f"{key} = {v}"),
        lambda v: {"key": key, "value": v},
    )


metrics_app = typer.Typer(help="Serving metrics of model versions.", no_args_is_help=True)


@metrics_app.command("update")
def metrics_update(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version that served the request."),
    inference_time_ms: float = typer.Option(..., "--inference-time-ms", help="Latency in ms."),
    confidence: float = typer.Option(..., "--confidence", help="Prediction confidence, 0-1."),
    error: bool = typer.Option(False, "--error", help="The request failed."),
    json_output: bool = JsonOpt,
) -> None:
    """Record one served request in a version's cumulative metrics."""

    def action() -> ModelVersion:
        registry = open_project(ctx).registry
        flags = {"inference_time_ms": "--inference-time-ms", "confidence": "--confidence"}
        with named_as_flags(flags):
            registry.update_metrics(model_type, version, inference_time_ms, confidence, error)
        found = registry.get_version(model_type, version)
        metrics_notes([found])
        return found

    run(
        ctx,
        json_output,
        action,
        lambda v: say(
            f"{v.model_type} {v.version}: {v.requests} requests, error rate "
            f"{figure(v.error_rate, '.4f')}, avg confidence {figure(v.avg_confidence, '.4f')}, "
            f"avg {figure(v.avg_inference_time_ms, '.2f')} ms"
        ),
        lambda v: v.to_dict(),
    )


@metrics_app.command("export")
def metrics_export(
    ctx: typer.Context,
    textfile: Path | None = typer.Option(
        None, "--textfile", help="Write atomically to this .prom file (node_exporter)."
    ),
    push_url: str | None = typer.Option(None, "--push-url", help="Pushgateway URL."),
    job: str = typer.Option("mlops", "--job", help="Pushgateway job name."),
) -> None:
    """Export the Prometheus series: to stdout, a textfile, or a Pushgateway."""
    import sys

    from .. import prometheus

    def action() -> str:
        project = open_project(ctx)
        done = []
        if textfile is not None:
            size = prometheus.write_textfile(project, textfile)
            done.append(f"wrote {size} bytes to {textfile}")
        if push_url is not None:  # both given: both done
            prometheus.push(project, push_url, job)
            done.append(f"pushed to {push_url} (job {job})")
        if not done:
            sys.stdout.write(prometheus.exposition(project).decode())
        return "; ".join(done)

    run(ctx, False, action, lambda msg: say(msg, err=True) if msg else None)


COMMANDS: dict[str, Callable[..., None]] = {
    "init": init,
    "register": register,
    "list": list_cmd,
    "show": show,
    "champion": champion,
    "promote": promote,
    "rollback": rollback,
    "deprecate": deprecate,
    "verify": verify,
    "history": history,
}


alias_app = typer.Typer(help="Aliases: named pointers to versions besides the champion.")


def alias_rows(aliases: list[Alias]) -> None:
    table(None, ["type", "alias", "version"], [[a.model_type, a.alias, a.version] for a in aliases])


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    name: str = typer.Argument(..., help="Alias (e.g. shadow, canary)."),
    version: str = typer.Argument(..., help="Version it points at (registered, not deprecated)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the history)."),
    json_output: bool = JsonOpt,
) -> None:
    """Point an alias at a version (moving it if it pointed elsewhere)."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.set_alias(model_type, name, version, reason),
        lambda a: say(f"{a.model_type} alias {a.alias} -> {a.version}"),
        lambda a: a.to_dict(),
    )


@alias_app.command("list")
def alias_list(
    ctx: typer.Context,
    model_type: str | None = typer.Argument(None, help="Only this model type."),
    json_output: bool = JsonOpt,
) -> None:
    """List aliases (of one model type, or all)."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.aliases(model_type),
        alias_rows,
        lambda found: [a.to_dict() for a in found],
    )


@alias_app.command("delete")
def alias_delete(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    name: str = typer.Argument(..., help="Alias to remove."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the history)."),
    json_output: bool = JsonOpt,
) -> None:
    """Remove an alias."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).registry.delete_alias(model_type, name, reason),
        lambda a: say(f"{a.model_type} alias {a.alias} removed (it pointed at {a.version})"),
        lambda a: a.to_dict(),
    )


GROUPS = {"config": config_app, "metrics": metrics_app, "alias": alias_app}


def register_commands(app: typer.Typer, only: str | None = None) -> None:
    """Add the registry commands (or just the one named `only`) to the app."""
    for name, command in COMMANDS.items():
        if only in (None, name):
            app.command(name)(command)
    for name, group in GROUPS.items():
        if only in (None, name):
            app.add_typer(group, name=name)
