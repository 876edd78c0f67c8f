"""Drift commands: reference, record, check, report, monitor."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import typer

from ..errors import ValidationError
from .batch_io import (
    BATCH_ID_HELP,
    batch_progress,
    read_input,
    recorded_text,
    say_skipped,
    torn_note,
)
from .common import (
    JSON_HELP,
    funnel,
    named_as_flags,
    one_of,
    open_project,
    run,
    say,
    table,
)
from .step_summary import write_step_summary

if TYPE_CHECKING:
    from ..drift import DriftReport
    from ..state import Level

drift_app = typer.Typer(
    help="Drift of live predictions against a reference set.", no_args_is_help=True
)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)
LEVEL_COLOURS = {"ok": "green", "monitor": "yellow", "retrain": "dark_orange", "critical": "red"}


@drift_app.command("reference")
def reference(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version."),
    file: str = typer.Option(
        ...,
        "--file",
        help="JSONL samples, or - for stdin: prediction, confidence, optionally ts and "
        "features (an object of name: value).",
    ),
    replace: bool = typer.Option(False, "--replace", help="Start a new reference set."),
    batch_id: str | None = typer.Option(None, "--batch-id", help=BATCH_ID_HELP),
    json_output: bool = JsonOpt,
) -> None:
    """Add samples to a version's reference set (at most drift.reference_size)."""

    def action() -> dict[str, Any]:
        detector = open_project(ctx).drift_detector(model_type, version)
        with read_input(file, batch_id) as (data, given_id, size), batch_progress(
            size, json_output
        ) as progress:
            result = detector.add_reference(data, replace, progress, given_id)
        say_skipped(result)
        return {
            "model_type": model_type,
            "model_version": version,
            "added": result.recorded,
            "replaced": replace,
            "batch_id": result.batch_id,
            "already_recorded": result.already_recorded,
        }

    run(
        ctx,
        json_output,
        action,
        lambda r: say(
            f"{'replaced the reference with' if replace else 'added'} {r['added']} reference "
            f"samples for {model_type} {version}"
        ),
    )


@drift_app.command("record")
def record(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version."),
    prediction: float | None = typer.Option(None, "--prediction", help="The model's output."),
    confidence: float | None = typer.Option(None, "--confidence", help="0-1."),
    file: str | None = typer.Option(
        None,
        "--file",
        help="JSONL batch, or - for stdin: prediction, confidence, optionally ts and features "
        "(an object of name: value).",
    ),
    batch_id: str | None = typer.Option(None, "--batch-id", help=BATCH_ID_HELP),
    json_output: bool = JsonOpt,
) -> None:
    """Record one production sample, or a batch (all or nothing) with --file."""

    def action() -> dict[str, Any]:
        detector = open_project(ctx).drift_detector(model_type, version)
        if file is not None:
            if prediction is not None or confidence is not None:
                raise ValidationError("--file records a batch; drop --prediction/--confidence")
            with read_input(file, batch_id) as (data, given_id, size), batch_progress(
                size, json_output
            ) as progress:
                result = detector.record_batch(data, progress, given_id)
            say_skipped(result)
            return asdict(result)
        if prediction is None or confidence is None:
            raise ValidationError("--prediction and --confidence are required (or --file)")
        with named_as_flags({"prediction": "--prediction", "confidence": "--confidence"}):
            detector.add_production_sample(prediction, confidence)
        return {"recorded": 1}

    run(
        ctx,
        json_output,
        action,
        lambda r: say(
            f"recorded {recorded_text(r)} production samples for {model_type} {version}"
        ),
    )


def render_reports(reports: list[DriftReport]) -> None:
    def num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    table(
        None,
        ["model", "version", "level", "score", "7d avg", "S / P / Q", "ref / window"],
        [
            [
                r["model_type"],
                r["model_version"],
                r["level"] or r["status"],
                num(r["current_drift_score"]),
                num(r["avg_drift_7d"]),
                " / ".join(
                    num(r["components"][k]) for k in ("statistical", "performance", "distribution")
                ),
                f"{r['n_reference']} / {r['n_window']}",
            ]
            for r in reports
        ],
    )
    for r in reports:
        colour = LEVEL_COLOURS.get(r["level"] or "", "white")
        alert = " ALERT" if r["alert_triggered"] else ""
        say((f"{r['model_type']} {r['model_version']}{alert}:", colour), f" {r['recommendation']}")
        for name, figures in (r.get("alarms") or {}).items():
            if figures.get("alarm"):
                say(
                    f"  {name} alarm: effect {figures['effect']:.3g} >= {figures['floor']:.3g}, "
                    f"p = {figures['p_value']:.2g}"
                )
        render_features(r)
        if r.get("torn_bytes"):
            torn_note(
                f"the production log of {r['model_type']} {r['model_version']}", r["torn_bytes"]
            )
        if r.get("skipped_lines"):
            say(f"  skipped {r['skipped_lines']} malformed log line(s) (--skip-invalid)")
        for hook in r.hooks:
            if hook.ok:
                say(f"  hook {hook.level} ran (exit code 0)")
            else:
                what = "timed out" if hook.timed_out else f"failed with exit code {hook.exit_code}"
                tail = hook.output.strip().splitlines()[-1:]
                say((f"  hook {hook.level} {what}", "red"), *(f": {t}" for t in tail))


FEATURES_SHOWN = 20


def render_features(r: DriftReport) -> None:
    """The input features' table, most drifted first (all of them in --json)."""
    from ..feature_drift import ranked

    features = r.features
    if not features:
        return

    def num(x: Any, spec: str = ".3f") -> str:
        return "-" if x is None else format(x, spec)

    names = ranked(features)
    rows = []
    for name in names[:FEATURES_SHOWN]:
        f = features[name]
        q = f["quality"]
        fired = [k for k in ("drift", "missing", "type_change") if f[k]["alarm"]]
        rows.append(
            [
                name,
                f["kind"],
                f"{num(f['drift']['effect'])} / {f['drift']['floor']:g}",
                num(f["drift"]["p_value"], ".2g"),
                f"{q['missing_share_reference']:.1%} -> {q['missing_share']:.1%}",
                num(q["out_of_range_share"], ".1%"),
                ", ".join(q["new_categories"][:3]) or "-",
                ", ".join(fired) or "-",
            ]
        )
    table(
        f"input features of {r.model_type} {r.model_version}: "
        f"{len(r.drifted_features)} of {len(features)} drifted",
        ["feature", "kind", "effect / floor", "p", "missing", "out of range", "new", "alarm"],
        rows,
    )
    if len(names) > FEATURES_SHOWN:
        say(f"  and {len(names) - FEATURES_SHOWN} more features (--json shows all)")
    say(
        "  the score covers prediction and confidence; a feature alarm raises the level to at "
        f"least retrain (each test at p < {num(r.feature_alpha, '.2g')}: drift.alarm_alpha "
        "over all feature tests)"
    )


@drift_app.command("check")
def check(
    ctx: typer.Context,
    model_type: str | None = typer.Argument(None, help="Model type (or --all)."),
    version: str | None = typer.Argument(None, help="Version (or --all)."),
    all_versions: bool = typer.Option(
        False,
        "--all",
        help="Every monitored version with a reference: champions, arms of running tests, "
        "versions marked with `drift monitor`; never deprecated ones.",
    ),
    window: int | None = typer.Option(
        None, "--window", help="Window size, 1 to 10,000,000 (default: drift.window_size)."
    ),
    fail_on: str | None = typer.Option(
        None,
        "--fail-on",
        help="Exit 3 at this level or above: monitor, retrain, critical.",
        callback=one_of("monitor", "retrain", "critical"),
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip (and count) malformed log lines instead of failing."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Score drift now, record it in the history, and run the hook of each level a version
    entered (once per entry, again after drift.hook_cooldown_s).

    Exit code 3 when --fail-on trips, else 1 when a hook failed (every check is recorded),
    else 0.
    """
    from ..drift import gate, parse_level

    unchecked: list[tuple[str, str]] = []
    watches: list[Any] = []

    def action() -> tuple[list[DriftReport], Level | None]:
        level = parse_level(fail_on)
        project = open_project(ctx)
        if all_versions:
            if model_type or version:
                raise ValidationError("give MODEL_TYPE VERSION or --all, not both")
            unchecked.extend(project.drift.without_reference())
            reports = project.drift.check_all(window, skip_invalid)
            # (it sees the checks just made; an ended window is not read again every run)
            watches.extend(w for w in project.watch.check(ended=False) if w.status == "open")
            return reports, level
        if not (model_type and version):
            raise ValidationError("give MODEL_TYPE VERSION, or --all")
        return [project.drift_detector(model_type, version).check(window, skip_invalid)], level

    def render(result: tuple[list[DriftReport], Level | None]) -> None:
        render_reports(result[0])
        for t, v in unchecked:
            say(
                f"not checked: {t} {v} serves or is monitored but has no reference set "
                f"(add one: mlops drift reference {t} {v} --file ...)"
            )
        for w in watches:
            say(watch_line(w))

    reports, level = run(
        ctx,
        json_output,
        action,
        render,
        lambda r: {
            "results": r[0],
            "without_reference": [{"model_type": t, "model_version": v} for t, v in unchecked],
            "watch": [w.to_dict() for w in watches],
        }
        if all_versions
        else r[0][0],
    )
    write_step_summary("drift", [r.to_dict() for r in reports])
    with funnel(ctx, json_output=False):
        gate(reports, level)


@drift_app.command("report")
def report(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version."),
    window: int | None = typer.Option(None, "--window", help="Window size (default: setting)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip (and count) malformed log lines instead of failing."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """The current drift figures, computed read-only (nothing recorded, no hook run)."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx)
        .drift_detector(model_type, version)
        .get_drift_report(window, skip_invalid),
        lambda r: render_reports([r]),
    )


@drift_app.command("monitor")
def monitor(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version."),
    off: bool = typer.Option(False, "--off", help="Stop monitoring it (unless it serves)."),
    json_output: bool = JsonOpt,
) -> None:
    """Mark a version monitored: `check --all` and `metrics export` cover it even when it
    serves no traffic (`--off` unmarks it)."""
    run(
        ctx,
        json_output,
        lambda: {
            "model_type": model_type,
            "model_version": version,
            "monitored": open_project(ctx).drift.set_monitored(model_type, version, not off),
        },
        lambda r: say(
            f"{model_type} {version} is {'now' if r['monitored'] else 'no longer'} monitored"
        ),
    )


@drift_app.command("source")
def source(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    version: str = typer.Argument(..., help="Version."),
    file: str | None = typer.Argument(None, help="Source YAML (docs/engines.md)."),
    off: bool = typer.Option(False, "--off", help="Read the project's own samples again."),
    json_output: bool = JsonOpt,
) -> None:
    """Read a version's production window (and reference, when declared) from a source."""

    def action() -> dict[str, Any]:
        from ..sources import load

        if (file is None) == (not off):
            raise ValidationError("give either a source FILE or --off")
        declared = load(file) if file is not None else None
        detector = open_project(ctx).drift_detector(model_type, version)
        detector.set_source(declared)
        return {
            "model_type": model_type,
            "model_version": detector.model_version,
            "source": declared.to_doc() if declared is not None else None,
            "from": declared.describe() if declared is not None else "the project",
        }

    run(
        ctx,
        json_output,
        action,
        lambda r: say(f"{model_type} {r['model_version']}: drift samples from {r['from']}"),
    )


watch_app = typer.Typer(
    help="The watch after a promotion: the new champion against the previous one.",
    no_args_is_help=True,
)


def watch_line(w: Any) -> str:
    """One model type's watch, one line."""
    if w.status == "none":
        return f"{w.model_type}: no promotion to watch"
    what = "rolled back" if w.rolled_back else ("BREACH" if w.breach else "ok")
    if w.waiting and not w.breach:
        what = "waiting"
    elif w.status == "closed" and not w.rolled_back:  # (a window acts only while open)
        what = "ended, nothing done" if w.reasons else (
            "ended, not compared" if w.error_rate is None else "ended, ok")
    said = list(w.reasons)
    if w.waiting:
        from ..watch import MIN_REQUESTS

        said.append(
            f"serving metrics not compared yet: {w.requests['previous']} requests of "
            f"{w.previous} before the promotion and {w.requests['champion']} of {w.version} "
            f"after it (each needs {MIN_REQUESTS})"
        )
    if w.drift is not None and not any(r.startswith("drift at") for r in w.reasons):
        was = w.drift["previous_level"]
        said.append(
            f"drift {w.drift['level']}, "
            + (f"{w.previous} was at {was}" if was else
               f"not compared: {w.previous} has no drift check from before the promotion")
        )
    window = f"open until {w.ends_at}" if w.status == "open" else f"ended {w.ends_at}"
    head = f"{w.model_type}: {w.version} after {w.previous} ({window}): {what}"
    return head + "".join(f"; {r}" for r in said)


def render_watches(ws: list[Any]) -> None:
    for w in ws:
        say(watch_line(w))


@watch_app.command("check")
def watch_check(
    ctx: typer.Context,
    model_type: str | None = typer.Argument(None, help="One model type (default: all)."),
    fail_on: str | None = typer.Option(
        None, "--fail-on", help="Exit 3 on a breach (rolled back or not).",
        callback=one_of("breach"),
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Compare each new champion with the previous one for watch.hours after its promotion;
    a breach rolls back when watch.rollback is on (a cron step; drift check --all runs it)."""
    from ..watch import gate

    results = run(
        ctx,
        json_output,
        lambda: open_project(ctx).watch.check(model_type),
        render_watches,
        lambda ws: [w.to_dict() for w in ws],
    )
    if fail_on is not None:
        with funnel(ctx, json_output=False):
            gate(results)
