"""A/B test commands: start, assign, record, evaluate, finalize, list, status."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import typer

from ..ab_testing import GATES, ABTestConfig, Evaluation, TestStatus, gate, parse_gates
from ..batch import file_id
from ..errors import ValidationError
from ..records import VARIANTS
from ..state import ABTest
from ..store.base import BatchResult
from .common import (
    JSON_HELP,
    console,
    funnel,
    key_values,
    named_as_flags,
    one_of,
    open_project,
    progress_wanted,
    run,
    say,
    table,
)
from .stdin import stdin_stream
from .step_summary import write_step_summary

if TYPE_CHECKING:
    from ..ab_testing import TestStatus

ab_app = typer.Typer(help="A/B tests between the champion and a new version.", no_args_is_help=True)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


BATCH_ID_HELP = (
    "Id making a retried batch count once (default for --file PATH: the file's hash; "
    "stdin has none: never taken for a retry)."
)


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
    "max_latency_increase": "--max-latency-increase",
}


@ab_app.command("start")
def start(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Test name, e.g. gnn_v2.2_test."),
    model_type: str | None = typer.Option(None, "--model-type", help="Model type under test."),
    control: str | None = typer.Option(None, "--control", help="Control (default: champion)."),
    treatment: str | None = typer.Option(None, "--treatment", help="Version to test."),
    traffic: float | None = typer.Option(None, "--traffic", help="Treatment share in % (0-100)."),
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
    config_file: Path | None = typer.Option(
        None, "--config-file", help="YAML with ABTestConfig fields (flags win)."
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
        "max_latency_increase": max_latency_increase,
    }

    given = {k: flag for k, flag in START_FLAGS.items() if flags[k] is not None}

    def action() -> ABTest:
        with named_as_flags(given):  # from a flag, not from --config-file
            return open_project(ctx).ab.start_test(
                ABTestConfig.from_sources(name, config_file, **flags)
            )

    run(
        ctx,
        json_output,
        action,
        lambda t: say(
            f"started {t.name}: {t.model_type} {t.control_version} (control, "
            f"{100 - t.treatment_traffic_pct:g}%) vs {t.treatment_version} (treatment, "
            f"{t.treatment_traffic_pct:g}%), {t.method} at alpha {t.alpha:g}"
        ),
    )


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


def recorded_text(result: dict[str, Any]) -> str:
    """`1000`, or `0 (batch 3f2a... was already recorded: 1000 records)` on a retry."""
    done = result.get("already_recorded", 0)
    if not done:
        return str(result["recorded"])
    return f"{result['recorded']} (batch {result['batch_id']} was already recorded: {done} records)"


@contextmanager
def read_input(
    file: str, batch_id: str | None = None
) -> Iterator[tuple[BinaryIO, str | None, int]]:
    """A batch to stream: (binary stream, batch id, size in bytes or -1 if unknown).

    A file's id defaults to its content hash (computed first, streaming), so a retried step
    re-sending the same file counts once; stdin has no default id: never taken for a retry.
    """
    if file == "-":
        yield stdin_stream(), batch_id, -1
        return
    try:
        stream = open(file, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
    with stream:
        try:
            size = os.fstat(stream.fileno()).st_size
            if batch_id is None:
                batch_id = file_id(file)
        except OSError as exc:
            raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
        yield stream, batch_id, size


def say_skipped(result: BatchResult) -> None:
    """On stderr (with --json too): a batch, or part of one, an earlier try had recorded."""
    if not result.already_recorded:
        return
    if result.recorded:
        say(
            f"completed batch id {result.batch_id}: {result.already_recorded} records were "
            f"already recorded by an earlier try, {result.recorded} added",
            err=True,
        )
    else:
        say(
            f"already recorded: batch id {result.batch_id} ({result.already_recorded} records);"
            " nothing added (give another --batch-id to record the same data again)",
            err=True,
        )


class batch_progress:
    """A progress bar on stderr for a large batch, when stderr is a terminal (never with --json)."""

    def __init__(self, size: int, json_output: bool) -> None:
        # size -1: unknown (stdin)
        self.enabled = not json_output and progress_wanted() and (size < 0 or size > 8 << 20)
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True, console=console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("validating", total=None)
        return lambda lines: self.bar.update(
            task, completed=lines, description=f"validated {lines:,} lines"
        )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


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
                f"{m[arm]['error_rate']:.4f}",
                f"{m[arm]['avg_confidence']:.4f}",
                f"{m[arm]['avg_inference_time_ms']:.1f}",
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
                f"{d['estimate']:+.4f}",
                f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]",
                f"{d['p_value']:.3g}",
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


def skipped_note(log: str, count: int) -> None:
    """Say that a view left malformed lines of a log out (decisions refuse them)."""
    if count:
        say(
            f"note: {count} malformed line(s) of {log} left out (fix or remove them; "
            "ab evaluate and drift check refuse them unless --skip-invalid)",
            err=True,
        )


def torn_note(log: str, size: int) -> None:
    """Say that a log's incomplete last line was left out (readers skip it, writers cut it)."""
    say(
        f"note: the last line of {log} is incomplete ({size} bytes, a write was interrupted); "
        "it was left out and the next write removes it",
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
    key_values(s.test.name, [(k, v) for k, v in s.items() if k != "name"])
    skipped_note(f"logs/ab/{s.test.name}.jsonl", s.skipped_lines)
