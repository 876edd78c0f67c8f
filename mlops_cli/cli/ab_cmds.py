"""A/B test commands: start, assign, record, evaluate, finalize, list, status."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..ab_testing import GATES, ABTestConfig, Evaluation, Plan, TestStatus, gate, parse_gates
from ..errors import ValidationError
from ..records import VARIANTS
from ..state import ABTest
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
    figure,
    funnel,
    key_values,
    named_as_flags,
    one_of,
    open_project,
    run,
    say,
    table,
)
from .step_summary import write_step_summary

if TYPE_CHECKING:
    from ..ab_testing import TestStatus

ab_app = typer.Typer(help="A/B tests between the champion and a new version.", no_args_is_help=True)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


# ABTestConfig fields and the `ab start` flags that set them.
START_FLAGS = {
    "model_type": "--model-type",
    "control_version": "--control",
    "treatment_version": "--treatment",
    "treatment_traffic_pct": "--traffic",
    "duration_days": "--duration-days",
    "min_requests": "--min-requests",
    "max_error_rate_increase": "--max-error-rate-increase",
    "min_confidence_improvement": "--min-confidence-improvement",
    "alpha": "--alpha",
    "method": "--method",
    "max_confidence_drop": "--max-confidence-drop",
    "max_latency_increase_ms": "--max-latency-increase-ms",
    "tail_latency": "--tail-latency",
    "max_tail_latency_increase": "--max-tail-latency-increase",
    "max_latency_increase": "--max-latency-increase",
    "ramp": "--ramp",
    "ramp_min_users": "--ramp-min-users",
    "ramp_min_hours": "--ramp-min-hours",
}


@ab_app.command("start")
def start(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Test name, e.g. gnn_v2.2_test."),
    model_type: str | None = typer.Option(None, "--model-type", help="Model type under test."),
    control: str | None = typer.Option(None, "--control", help="Control (default: champion)."),
    treatment: str | None = typer.Option(None, "--treatment", help="Version to test."),
    traffic: float | None = typer.Option(
        None, "--traffic", help="Treatment share in % (0 < x < 100)."
    ),
    duration_days: float | None = typer.Option(None, "--duration-days", help="Minimum days."),
    min_requests: int | None = typer.Option(None, "--min-requests", help="Both arms together."),
    max_error_rate_increase: float | None = typer.Option(
        None, "--max-error-rate-increase", help="Promotion margin, absolute: 0.05 = 5 points."
    ),
    min_confidence_improvement: float | None = typer.Option(
        None, "--min-confidence-improvement", help="Absolute, e.g. 0.02."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Error level, e.g. 0.05."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="sequential (default) or fixed.",
        callback=one_of("sequential", "fixed"),
    ),
    max_confidence_drop: float | None = typer.Option(
        None,
        "--max-confidence-drop",
        help="Confidence margin for promotion (absolute; default 0.02).",
    ),
    max_latency_increase_ms: float | None = typer.Option(
        None,
        "--max-latency-increase-ms",
        help="Latency margin in ms (absolute; replaces the relative default).",
    ),
    max_latency_increase: str | None = typer.Option(
        None,
        "--max-latency-increase",
        help="Latency margin relative to the control's mean, e.g. 10% (the default).",
    ),
    tail_latency: bool | None = typer.Option(
        None,
        "--tail-latency/--no-tail-latency",
        help="Guardrail: roll back when the share of requests slower than the control's p95 "
        "rises (on by default).",
    ),
    max_tail_latency_increase: float | None = typer.Option(
        None,
        "--max-tail-latency-increase",
        help="Promotion margin of that share (absolute, e.g. 0.02 = 2 points; default: none, "
        "the guardrail only rolls back).",
    ),
    ramp: str | None = typer.Option(
        None,
        "--ramp",
        help="Treatment shares in % step by step, e.g. 5,10,25,50 (replaces --traffic); "
        "`ab evaluate --apply` advances a step that met its minimums with no harm.",
    ),
    ramp_min_users: int | None = typer.Option(
        None, "--ramp-min-users", help="Treated users a step needs before the next (100)."
    ),
    ramp_min_hours: float | None = typer.Option(
        None, "--ramp-min-hours", help="Hours a step needs before the next (24)."
    ),
    config_file: Path | None = typer.Option(
        None, "--config-file", help="YAML with ABTestConfig fields (flags win)."
    ),
    source: Path | None = typer.Option(
        None,
        "--source",
        help="Source YAML: read the requests from Parquet (duckdb) or Spark (docs/engines.md).",
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Start an A/B test of a new version against the champion."""

    flags = {
        "model_type": model_type,
        "control_version": control,
        "treatment_version": treatment,
        "treatment_traffic_pct": traffic,
        "duration_days": duration_days,
        "min_requests": min_requests,
        "max_error_rate_increase": max_error_rate_increase,
        "min_confidence_improvement": min_confidence_improvement,
        "alpha": alpha,
        "method": method,
        "max_confidence_drop": max_confidence_drop,
        "max_latency_increase_ms": max_latency_increase_ms,
        "tail_latency": tail_latency,
        "max_tail_latency_increase": max_tail_latency_increase,
        "max_latency_increase": max_latency_increase,
        "ramp": ramp,
        "ramp_min_users": ramp_min_users,
        "ramp_min_hours": ramp_min_hours,
    }

    given = {k: flag for k, flag in START_FLAGS.items() if flags[k] is not None}

    planned: list[Plan] = []

    def action() -> ABTest:
        manager = open_project(ctx).ab
        declared = None
        if source is not None:
            from ..sources import load

            declared = load(source)
        with named_as_flags(given):  # from a flag, not from --config-file
            test = manager.start_test(
                ABTestConfig.from_sources(name, config_file, **flags), declared
            )
        plan = None if json_output else manager.plan_for_test(test.name)
        planned.extend([plan] if plan else [])
        return test

    def render(t: ABTest) -> None:
        say(
            f"started {t.name}: {t.model_type} {t.control_version} (control, "
            f"{100 - t.treatment_traffic_pct:g}%) vs {t.treatment_version} (treatment, "
            f"{t.treatment_traffic_pct:g}%), {t.method} at alpha {t.alpha:g}"
        )
        if t.ramp is not None:
            r = t.ramp
            say(
                f"ramp: {', '.join(f'{x:g}%' for x in r['steps'])}; a step needs "
                f"{r['min_users']} treated users and {r['min_hours']:g} hours"
            )
        for p in planned:  # from an earlier test's traffic, when one had user ids
            say(f"plan: {p.summary()}")

    run(ctx, json_output, action, render)


@ab_app.command("assign")
def assign(
    ctx: typer.Context,
    model_type: str = typer.Argument(..., help="Model type."),
    user_id: str = typer.Argument(..., help="The user (or request key) to route."),
    json_output: bool = JsonOpt,
) -> None:
    """Which variant and version serve this user (sticky)."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).ab.assign_variant(model_type, user_id),
        lambda a: say(f"{a['name']} {a['version']}"),
        lambda a: {"name": a["name"], "version": a["version"], "model": a["model"].to_dict()},
    )


RECORD_FLAGS = {
    "variant": "--variant",
    "inference_time_ms": "--inference-time-ms",
    "confidence": "--confidence",
    "user_id": "--user-id",
}


@ab_app.command("record")
def record(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Test name."),
    variant: str | None = typer.Option(
        None, "--variant", help="control or treatment.", callback=one_of(*VARIANTS)
    ),
    inference_time_ms: float | None = typer.Option(None, "--inference-time-ms", help="Latency."),
    confidence: float | None = typer.Option(None, "--confidence", help="0-1."),
    error: bool = typer.Option(False, "--error", help="The request failed."),
    user_id: str | None = typer.Option(None, "--user-id", help="Who was served."),
    file: str | None = typer.Option(
        None,
        "--file",
        help="JSONL batch, or - for stdin: one object a line with variant, inference_time_ms, "
        "confidence, and optionally error, user_id, ts.",
    ),
    batch_id: str | None = typer.Option(None, "--batch-id", help=BATCH_ID_HELP),
    json_output: bool = JsonOpt,
) -> None:
    """Record one request, or a batch (all or nothing) with --file."""

    def action() -> dict[str, Any]:
        manager = open_project(ctx).ab
        if file is not None:
            if variant is not None or inference_time_ms is not None or confidence is not None:
                raise ValidationError("--file records a batch; drop --variant/--confidence/...")
            with read_input(file, batch_id) as (data, given_id, size), batch_progress(
                size, json_output
            ) as progress:
                result = manager.record_batch(name, data, progress, given_id)
            say_skipped(result)
            return {"test": name, **asdict(result)}
        if variant is None or inference_time_ms is None or confidence is None:
            raise ValidationError(
                "--variant, --inference-time-ms and --confidence are required "
                "(or a batch with --file)"
            )
        with named_as_flags(RECORD_FLAGS):
            manager.record_result(name, variant, inference_time_ms, confidence, error, user_id)
        return {"test": name, "recorded": 1}

    run(ctx, json_output, action, lambda r: say(f"recorded {recorded_text(r)} in {name}"))


def tail_line(t: dict[str, Any]) -> str:
    """The tail-latency guardrail in one line: its threshold, where it came from, the shares."""
    if t["threshold_ms"] is None:
        return f"tail latency: {t['status']} ({t['note']})"
    source = {"champion_history": "the champion's serving history", "first_day": "day one"}
    share = t["share"]
    return (
        f"tail latency: requests over {t['threshold_ms']:.1f} ms (control p95 from "
        f"{source.get(t['source'], t['source'])}, {t['threshold_requests']:,} requests): "
        f"control {share['control']:.2%}, treatment {share['treatment']:.2%}, difference "
        f"[{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}] at alpha {t['alpha']:.3g}"
    )


def render_evaluation(e: Evaluation) -> None:
    m = e.metrics
    colour = {"promote": "green", "rollback": "red", "continue": "yellow"}[e.decision]
    say((e.decision.upper(), f"bold {colour}"), f" {e.test}: {e.recommendation}")
    table(
        None,
        ["", "version", "requests", "error rate", "avg confidence", "avg ms"],
        [
            [
                arm,
                m[arm]["version"],
                m[arm]["requests"],
                figure(m[arm]["error_rate"], ".4f"),
                figure(m[arm]["avg_confidence"], ".4f"),
                figure(m[arm]["avg_inference_time_ms"], ".1f"),
            ]
            for arm in ("control", "treatment")
        ],
    )
    table(
        None,
        ["difference (treatment - control)", "estimate", f"{1 - e.alpha:.0%} interval", "p-value"],
        [
            [
                label,
                figure(d["estimate"], "+.4f"),
                "-" if d["estimate"] is None else f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]",
                figure(d["p_value"], ".3g"),
            ]
            for label, d in (
                ("error rate", m["error_rate_diff"]),
                ("confidence", m["confidence_diff"]),
                ("inference time ms", m["inference_time_ms_diff"]),
            )
        ],
    )
    for reason in e.reasons:
        say(f"  - {reason}")
    tail = m.get("guardrails", {}).get("tail_latency")
    if tail is not None:
        say(tail_line(tail))
    if e.ramp is not None:
        say(ramp_line(e.ramp))
    srm = m["srm"]
    split = (
        f"sample ratio p={srm['p_value']:.3g} over {srm.get('unit', 'request')}s"
        + (" (mismatch)" if srm["mismatch"] else "")
        if srm.get("testable", True)
        else "split not tested: records without user_id (requests are not the unit of assignment)"
    )
    say(
        f"method {e.method}, unit {e.unit}, {e.requests} requests, {e.days_elapsed:.1f} days, "
        f"{split}"
    )
    if e.applied:
        say(f"applied: test finalized ({e.status})")
    if e.skipped_lines:
        say(f"skipped {e.skipped_lines} malformed log line(s) (--skip-invalid)")
    if e.torn_bytes:
        torn_note(f"logs/ab/{e.test}.jsonl", e.torn_bytes)


def ramp_line(r: dict[str, Any]) -> str:
    """A ramp's step, share and minimums, one line."""
    met = "met" if r["minimums_met"] else "not met"
    nxt = f", next {r['next_share']:g}%" if r["next_share"] is not None else " (last step)"
    return (
        f"ramp: step {r['step']} of {r['steps']} at {r['share']:g}%{nxt}; minimums {met} "
        f"({r['users']} treated users, {r['min_users']} needed; {r['hours']:.1f} hours, "
        f"{r['min_hours']:g} needed)" + ("; advanced" if r.get("advanced") else "")
    )


def skipped_note(log: str, count: int) -> None:
    """Say that a view left malformed lines of a log out (decisions refuse them)."""
    if count:
        say(
            f"note: {count} malformed line(s) of {log} left out (fix or remove them; "
            "ab evaluate and drift check refuse them unless --skip-invalid)",
            err=True,
        )


@ab_app.command("evaluate")
def evaluate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Test name."),
    fail_on: str | None = typer.Option(
        None,
        "--fail-on",
        help="Exit 3 on these decisions: harm (a rollback for harm), rollback, continue.",
        callback=one_of(*GATES, many=True),
    ),
    apply: bool = typer.Option(False, "--apply", help="Finalize a promote or rollback decision."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip (and count) malformed log lines instead of failing."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Decide: promote, rollback or continue, with the statistics behind it."""
    with funnel(ctx, json_output):
        gates = parse_gates(fail_on)
    result = run(
        ctx,
        json_output,
        lambda: open_project(ctx).ab.evaluate_test(name, apply, skip_invalid),
        render_evaluation,
        lambda e: e.to_dict(),
    )
    write_step_summary("ab", result)
    with funnel(ctx, json_output=False):
        gate(result, gates)


@ab_app.command("finalize")
def finalize(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Test name."),
    decision: str = typer.Argument(
        ..., help="promote or rollback.", callback=one_of("promote", "rollback")
    ),
    force: bool = typer.Option(False, "--force", help="Promote against the evaluation."),
    json_output: bool = JsonOpt,
) -> None:
    """End a test: promote makes the treatment champion, rollback keeps the control."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).ab.finalize_test(name, decision, force),
        lambda t: say(f"{t['name']} finalized: {t['status']}"),
    )


@ab_app.command("list")
def list_tests(ctx: typer.Context, json_output: bool = JsonOpt) -> None:
    """Every A/B test with its status and request counts."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).ab.list_tests(),
        lambda tests: render_tests(tests),
    )


def render_tests(tests: list[TestStatus]) -> None:
    table(
        None,
        ["test", "model", "control", "treatment", "traffic %", "status", "requests"],
        [
            [
                t["name"],
                t["model_type"],
                t["control_version"],
                t["treatment_version"],
                f"{t['treatment_traffic_pct']:g}",
                t["status"],
                sum(t["requests"].values()),
            ]
            for t in tests
        ],
    )
    for t in tests:
        skipped_note(f"logs/ab/{t['name']}.jsonl", t.skipped_lines)


@ab_app.command("status")
def status(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Test name."),
    json_output: bool = JsonOpt,
) -> None:
    """A test's configuration and request counts."""
    run(
        ctx,
        json_output,
        lambda: open_project(ctx).ab.status(name),
        render_status,
    )


def render_status(s: TestStatus) -> None:
    key_values(s.test.name, [(k, v) for k, v in s.items() if k not in ("name", "ramp_status")])
    if s.ramp_status is not None:
        say(ramp_line(s.ramp_status))
    skipped_note(f"logs/ab/{s.test.name}.jsonl", s.skipped_lines)


@ab_app.command("plan")
def plan(
    ctx: typer.Context,
    effect: float | None = typer.Option(
        None, "--effect", help="Smallest confidence gain worth detecting (absolute, e.g. 0.03)."
    ),
    days: float | None = typer.Option(
        None, "--days", help="Instead of --effect: the gain these days of traffic can detect."
    ),
    model_type: str | None = typer.Option(
        None, "--model-type", help="Take the traffic from this type's latest test with user ids."
    ),
    from_test: str | None = typer.Option(
        None, "--from-test", help="Take the traffic from this test's log (needs user ids)."
    ),
    user_sd: float | None = typer.Option(
        None, "--user-sd", help="Per-user sd of confidence (a user's contribution, delta method)."
    ),
    requests_per_user: float | None = typer.Option(
        None, "--requests-per-user", help="Mean requests a user sends during the test."
    ),
    users_per_day: float | None = typer.Option(
        None, "--users-per-day", help="Users entering the test a day (both arms)."
    ),
    traffic: float | None = typer.Option(
        None, "--traffic", help="Treatment share in % (0 < x < 100)."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Error level, e.g. 0.05."),
    power: float = typer.Option(0.8, "--power", help="Chance of promoting the effect."),
    json_output: bool = JsonOpt,
) -> None:
    """Users and days a test needs to promote a gain (sequential-aware), or the reverse."""
    config = {
        k: v
        for k, v in (("treatment_traffic_pct", traffic), ("alpha", alpha))
        if v is not None
    }

    def action() -> Plan:
        return open_project(ctx).ab.plan(
            effect,
            days,
            model_type=model_type,
            from_test=from_test,
            user_sd=user_sd,
            requests_per_user=requests_per_user,
            users_per_day=users_per_day,
            power=power,
            **config,
        )

    run(ctx, json_output, action, render_plan)


def render_plan(p: Plan) -> None:
    say(p.summary())
    rows: list[tuple[str, Any]] = [
        ("effect (confidence gain)", f"{p.effect:+.4f}"),
        ("power", f"{p.power:.0%}"),
        ("users (control / treatment)", f"{p.users:,} ({p.users_control:,} / "
         f"{p.users_treatment:,})"),
        ("requests", f"{p.requests:,}"),
        ("days of traffic", f"{p.days:.1f}"),
        ("days the test needs", f"{p.days_needed:.1f} (duration_days {p.duration_days:g}, "
         f"min_requests {p.min_requests:,})"),
        ("split, alpha, tuning", f"{p.treatment_traffic_pct:g}%, {p.alpha:g}, "
         f"{p.sequential_tuning:g}"),
        ("min_confidence_improvement", f"{p.min_effect:+g}"),
        ("per-user sd", f"{p.user_sd:.4g}"),
        ("requests per user", f"{p.requests_per_user:.3g}"),
        ("users per day", f"{p.users_per_day:,.1f}"),
    ]
    if p.correlation is not None:
        rows.append(("per-request sd, intra-user correlation",
                     f"{p.request_sd:.4g}, {p.correlation:.3f}"))
    key_values(f"plan from {p.source}", rows)
