"""The tail-latency guardrail on each store: tau frozen from the champion's serving history at
`ab start` or from exactly the first day's control requests, the slow counts as sums, and a
harm rollback on a constructed log. Expected figures are worked by hand in the comments."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mlops_cli import ABTestConfig, Project
from mlops_cli.tail import TailSums
from mlops_cli.timeutil import stamp

from .conftest import T0, Clock, reopen


def config(**kw: Any) -> ABTestConfig:
    base: dict[str, Any] = dict(
        name="t", model_type="gnn", treatment_version="1.1.0", treatment_traffic_pct=50,
        duration_days=7,
    )
    return ABTestConfig(**{**base, **kw})


def serve(project: Project, times: list[float]) -> None:
    for ms in times:
        project.registry.update_metrics("gnn", "1.0.0", ms, 0.8)


def record(project: Project, variant: str, user: str | None, ms: float, at: float) -> None:
    project.ab.record_result(
        "t", variant, ms, 0.8, user_id=user, ts=stamp(T0 + timedelta(days=at))
    )


def test_tau_from_the_champions_history_is_frozen_at_start(project: Project) -> None:
    serve(project, [float(i) for i in range(1, 2001)])
    test = project.ab.start_test(config())
    # 1..2000 ms: h = 1999 * 0.95 = 1899.05, tau = 1900 + 0.05 * (1901 - 1900)
    assert test.tail_latency_ms == pytest.approx(1900.05, abs=1e-9)
    assert (test.tail_latency_source, test.tail_latency_requests) == ("champion_history", 2000)
    again = reopen(project).ab.get_test("t")
    assert again.tail_latency_ms == test.tail_latency_ms and again.tail_latency


def test_too_short_a_history_leaves_tau_to_the_first_day(project: Project) -> None:
    serve(project, [float(i) for i in range(1, 2000)])  # 1,999 requests
    test = project.ab.start_test(config())
    assert test.tail_latency and test.tail_latency_ms is None


def test_the_first_days_control_requests_set_tau_once(project: Project, clock: Clock) -> None:
    project.ab.start_test(config())
    for i in range(1, 21):  # 1..20 ms on day one: tau = 19.05
        record(project, "control", f"u{i}", float(i), 0.5)
    record(project, "treatment", "x", 500.0, 0.5)
    record(project, "control", "late", 900.0, 1.2)  # after day one: not part of tau
    clock.now = T0 + timedelta(days=0.5)
    early = project.ab.evaluate_test("t").metrics["guardrails"]["tail_latency"]
    assert early["status"] == "pending" and early["threshold_ms"] is None
    clock.now = T0 + timedelta(days=1.5)
    entry = project.ab.evaluate_test("t").metrics["guardrails"]["tail_latency"]
    assert entry["threshold_ms"] == pytest.approx(19.05, abs=1e-12)
    assert (entry["source"], entry["threshold_requests"]) == ("first_day", 20)
    # slow (> 19.05): control 20 ms and the late 900 ms, of 21; treatment 1 of 1
    assert entry["slow"] == {"control": 2, "treatment": 1}
    assert reopen(project).ab.get_test("t").tail_latency_ms == entry["threshold_ms"]
    (event,) = [e for e in project.registry.history("gnn") if e["event"] == "ab_tail_threshold"]
    assert (event["test"], event["threshold_ms"]) == ("t", entry["threshold_ms"])  # its type's
    for i in range(30):  # a late batch stamped on day one no longer moves it
        record(project, "control", f"b{i}", 5000.0, 0.9)
    again = project.ab.evaluate_test("t").metrics["guardrails"]["tail_latency"]
    assert again["threshold_ms"] == entry["threshold_ms"]


def test_too_few_first_day_requests_turn_the_guardrail_off(
    project: Project, clock: Clock
) -> None:
    project.ab.start_test(config())
    for i in range(19):
        record(project, "control", f"u{i}", 10.0, 0.5)
    clock.now = T0 + timedelta(days=2)
    entry = project.ab.evaluate_test("t").metrics["guardrails"]["tail_latency"]
    assert entry["status"] == "unavailable" and "19 control requests" in entry["note"]


def test_slow_counts_are_sums_per_user(project: Project) -> None:
    project.ab.start_test(config())
    rows = [
        ("control", "a", 100.0), ("control", "a", 100.5), ("control", "a", 20.0),
        ("control", "b", 300.0), ("treatment", "c", 101.0), ("treatment", "c", 999.0),
        ("treatment", None, 150.0),
    ]
    for variant, user, ms in rows:
        record(project, variant, user, ms, 0.1)
    found = project.store.tail_sums("ab/t", 100.0, ("control", "treatment"))
    # control: a (M 1, D 3), b (1, 1): M 2, M^2 2, D 4, D^2 10, MD 4 (100.0 is not above tau)
    assert found["control"] == TailSums(4, 2, 0, (2, 2.0, 2.0, 4.0, 10.0, 4.0))
    # treatment: c (2, 2) and one anonymous slow request
    assert found["treatment"] == TailSums(3, 3, 1, (1, 2.0, 4.0, 2.0, 4.0, 4.0))


def test_a_slower_tail_is_rolled_back_for_harm(project: Project, clock: Clock) -> None:
    serve(project, [float(i) for i in range(1, 2001)])  # tau = 1900.05
    project.ab.start_test(config())
    # 200 users an arm, 5 requests each. Control: every 20th user has one slow request (1%).
    # Treatment: every other user has two (20%). Means and errors otherwise equal.
    for u in range(200):
        for j in range(5):
            slow_c = u % 20 == 0 and j == 0
            slow_t = u % 2 == 0 and j < 2
            record(project, "control", f"c{u}", 1950.0 if slow_c else 100.0, 0.2)
            record(project, "treatment", f"t{u}", 1950.0 if slow_t else 100.0, 0.2)
    clock.now = T0 + timedelta(days=1)
    found = project.ab.evaluate_test("t")
    entry = found.metrics["guardrails"]["tail_latency"]
    assert (found.decision, found.rollback_cause, found.unit) == ("rollback", "harm", "user")
    assert entry["share"] == {"control": 10 / 1000, "treatment": 200 / 1000}
    assert entry["harm"] and entry["ci"][0] > 0
    assert any("slower than the control's p95" in r for r in found.reasons)


def test_off_at_start_means_not_judged(project: Project, clock: Clock) -> None:
    serve(project, [float(i) for i in range(1, 2001)])
    test = project.ab.start_test(config(tail_latency=False))
    assert not test.tail_latency and test.tail_latency_ms is None
    clock.now = T0 + timedelta(days=2)
    assert "tail_latency" not in project.ab.evaluate_test("t").metrics["guardrails"]


def test_a_test_started_before_the_guardrail_keeps_it_off(
    project: Project, clock: Clock, is_postgres: bool
) -> None:
    """Directory: the record lacks the keys. PostgreSQL: the row as schema 4 held it, upgraded
    by the shipped 0005 migration (its default: off)."""
    from importlib import resources

    import psycopg
    import yaml

    serve(project, [float(i) for i in range(1, 2001)])
    project.ab.start_test(config())
    columns = ("tail_latency", "max_tail_latency_increase", "tail_latency_ms",
               "tail_latency_source", "tail_latency_requests")
    if is_postgres:
        project.store.close()
        sql = (
            resources.files("mlops_cli.store.postgres")
            .joinpath("migrations", "0005_tail_latency.sql")
            .read_text()
        )
        with psycopg.connect(project.store.location, autocommit=True) as conn:
            for column in columns:
                conn.execute(f"ALTER TABLE ab_tests DROP COLUMN {column}")
            conn.execute(sql)
    else:
        registry = project.root / "registry.yaml"
        doc = yaml.safe_load(registry.read_text())
        for column in columns:
            del doc["ab_tests"]["t"][column]
        registry.write_text(yaml.safe_dump(doc))
    old = reopen(project, clock)
    assert old.ab.get_test("t").tail_latency is False
    record(old, "control", "u", 5000.0, 0.1)
    clock.now = T0 + timedelta(days=2)
    assert "tail_latency" not in old.ab.evaluate_test("t").metrics["guardrails"]


def test_the_history_is_the_champions_latest_requests(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops_cli.ab_testing

    monkeypatch.setattr(mlops_cli.ab_testing, "HISTORY_MAX_REQUESTS", 2000)  # 100,000 shipped
    serve(project, [9000.0] * 500)  # older requests, beyond the window
    serve(project, [float(i) for i in range(1, 2001)])
    test = project.ab.start_test(config())
    assert test.tail_latency_ms == pytest.approx(1900.05, abs=1e-9)
    assert test.tail_latency_requests == 2000
