"""A/B tests through the manager, on each store: what a service records (one request at a
time, or batches) and what a pipeline decides from it. Expected figures are recomputed here
from the records with numpy and scipy, never taken from the code under test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
import scipy.stats

from mlops_cli import ABTestConfig, ConflictError, NotFoundError, Project, ValidationError
from mlops_cli.timeutil import parse_ts

from .conftest import STAMP, T0, Clock, dump, jsonl, reopen, requests_rows


def config(**kw: Any) -> ABTestConfig:
    base: dict[str, Any] = dict(
        name="t", model_type="gnn", treatment_version="1.1.0", treatment_traffic_pct=30
    )
    return ABTestConfig(**{**base, **kw})


@pytest.fixture
def running(project: Project) -> Project:
    project.ab.start_test(config())
    return project


def records(project: Project, test: str = "t") -> list[dict[str, Any]]:
    return [r for chunk in project.store.scan(f"ab/{test}") for r in chunk]


def welch_interval(c: np.ndarray, t: np.ndarray, alpha: float = 0.05) -> tuple[float, ...]:
    """Treatment minus control: estimate, interval and p-value of Welch's t test (scipy)."""
    test = scipy.stats.ttest_ind(t, c, equal_var=False)
    ci = test.confidence_interval(1 - alpha)
    return float(t.mean() - c.mean()), float(ci.low), float(ci.high), float(test.pvalue)


def assert_difference(found: dict[str, Any], expected: tuple[float, ...]) -> None:
    estimate, low, high, p_value = expected
    assert found["estimate"] == pytest.approx(estimate, rel=1e-9, abs=1e-12)
    assert found["ci"] == pytest.approx([low, high], rel=1e-7)
    assert found["p_value"] == pytest.approx(p_value, rel=1e-6, abs=1e-12)


# -- starting and routing ----------------------------------------------------------------------


def test_start_splits_the_traffic_and_is_audited(project: Project) -> None:
    test = project.ab.start_test(config(treatment_traffic_pct=12.5))
    assert parse_ts(test.started_at) == T0 and test.control_version == "1.0.0"
    for view in (project, reopen(project)):
        traffic = {v.version: v.traffic_percentage for v in view.registry.list_versions("gnn")}
        assert traffic == {"1.0.0": 87.5, "1.1.0": 12.5}
        assert list(view.ab.active_tests) == ["t"]
    event = project.registry.history()[-1].to_dict()
    assert {k: event[k] for k in ("event", "test", "control", "treatment", "traffic_pct")} == {
        "event": "ab_started",
        "test": "t",
        "control": "1.0.0",
        "treatment": "1.1.0",
        "traffic_pct": 12.5,
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"treatment_version": "1.0.0"}, ValidationError, "same version"),
        ({"treatment_traffic_pct": 0}, ValidationError, "treatment_traffic_pct"),
        ({"treatment_traffic_pct": 100}, ValidationError, "treatment_traffic_pct"),
        ({"treatment_traffic_pct": 150}, ValidationError, "treatment_traffic_pct"),
        ({"treatment_traffic_pct": 10.001}, ValidationError, "steps of 0.01"),
        ({"treatment_version": "9.0.0"}, NotFoundError, "unknown version"),
        ({"control_version": "1.1.0"}, ConflictError, "not the champion"),
        ({"model_type": "rag"}, NotFoundError, "unknown model type"),
        ({"name": "../t"}, ValidationError, "A/B test name"),
    ],
)
def test_a_refused_start_changes_nothing(
    project: Project, kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    before = dump(project)
    with pytest.raises(error, match=words):
        project.ab.start_test(config(**kwargs))
    assert dump(project) == before


def test_one_running_test_per_model_type_and_names_stay_taken(running: Project) -> None:
    before = dump(running)
    with pytest.raises(ConflictError, match="already running"):
        running.ab.start_test(config(name="second"))
    with pytest.raises(ConflictError, match="already exists"):
        running.ab.start_test(config())
    with pytest.raises(ConflictError, match="A/B test t is running"):
        running.registry.promote_to_champion("gnn", "1.1.0")
    assert dump(running) == before
    running.ab.finalize_test("t", "rollback")
    with pytest.raises(ConflictError, match="already exists"):  # archived, still taken
        running.ab.start_test(config())


def test_assignment_is_the_champion_without_a_test_and_sticky_with_one(project: Project) -> None:
    a = project.ab.assign_variant("gnn", "user123")
    assert (a["name"], a["version"], a["model"].version) == ("champion", "1.0.0", "1.0.0")
    project.ab.start_test(config(treatment_traffic_pct=50))
    here = [project.ab.assign_variant("gnn", f"u{i}")["name"] for i in range(300)]
    there = [reopen(project).ab.assign_variant("gnn", f"u{i}")["name"] for i in range(300)]
    assert here == there and set(here) == {"control", "treatment"}


# -- recording ---------------------------------------------------------------------------------


def instants(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with their times as instants: a store may write a given `ts` as sent or in
    its own spelling of the same instant (with microseconds)."""
    return [{**r, "ts": parse_ts(r["ts"])} for r in rows]


def test_a_recorded_request_is_stored_as_sent(running: Project, clock: Clock) -> None:
    running.ab.record_result("t", "treatment", 120.5, 0.9, True, user_id="u1")
    running.ab.record_result("t", "control", 80.0, 0.25, ts="2026-10-31T12:00:00Z")
    running.ab.record_result("t", "control", 81.0, 0.5, user_id=7)  # type: ignore[arg-type]
    stored = records(running)
    assert instants(stored) == [
        {"ts": T0, "variant": "treatment", "user_id": "u1", "inference_time_ms": 120.5,
         "confidence": 0.9, "error": True},
        {"ts": parse_ts("2026-10-31T12:00:00Z"), "variant": "control",
         "inference_time_ms": 80.0, "confidence": 0.25, "error": False},
        {"ts": T0, "variant": "control", "user_id": 7, "inference_time_ms": 81.0,
         "confidence": 0.5, "error": False},
    ]
    assert stored[0]["ts"] == STAMP and type(stored[2]["user_id"]) is int
    assert running.ab.status("t").requests == {"control": 2, "treatment": 1}


def test_requests_recorded_by_one_store_are_read_by_another_after_close(
    running: Project,
) -> None:
    writer = reopen(running)
    for i in range(25):
        writer.ab.record_result("t", "control", 10.0, 0.5, user_id=f"u{i}")
    writer.store.close()  # a service that exits: its records are all stored
    assert running.ab.status("t").requests == {"control": 25, "treatment": 0}


def test_a_batch_keeps_its_times_stamps_the_rest_and_counts_once(running: Project) -> None:
    rows = requests_rows(200, seed=5)
    rows[0]["ts"] = "2026-01-01T00:00:00Z"
    data = jsonl(rows)
    sent = datetime.now(timezone.utc)
    first = running.ab.record_batch("t", data)
    again = running.ab.record_batch("t", data)  # a retried CI step: bytes are their own id
    assert (first.recorded, first.already_recorded) == (200, 0)
    assert (again.recorded, again.already_recorded) == (0, 200)
    stored = records(running)
    assert len(stored) == 200
    assert parse_ts(stored[0]["ts"]) == parse_ts("2026-01-01T00:00:00Z")
    # The others get one time: when the batch was recorded (the real or database clock, as
    # a batch's records arrive together, not the project's clock of each call).
    stamped = {parse_ts(r["ts"]) for r in stored[1:]}
    assert len(stamped) == 1 and sent <= stamped.pop() <= datetime.now(timezone.utc)
    assert [r["confidence"] for r in stored] == [r["confidence"] for r in rows]
    third = running.ab.record_batch("t", data, batch_id="other")
    assert third.recorded == 200 and running.ab.evaluate_test("t").requests == 400


# -- evaluating --------------------------------------------------------------------------------


def _arms(rows: list[dict[str, Any]], field: str) -> tuple[np.ndarray, np.ndarray]:
    return tuple(  # type: ignore[return-value]
        np.array([float(r[field]) for r in rows if r["variant"] == arm]) for arm in
        ("control", "treatment")
    )


def test_evaluation_per_request_equals_a_recomputation(project: Project) -> None:
    project.ab.start_test(config(method="fixed", alpha=0.1))
    sent: list[dict[str, Any]] = []
    for seed in (1, 2):  # evaluated after each batch: the second reads what is new
        rows = requests_rows(1500, seed=seed)
        project.ab.record_batch("t", jsonl(rows))
        sent += rows
        found = project.ab.evaluate_test("t").to_dict()
        m = found["metrics"]
        assert found["unit"] == "request" and found["requests"] == len(sent)
        conf_c, conf_t = _arms(sent, "confidence")
        time_c, time_t = _arms(sent, "inference_time_ms")
        err_c, err_t = _arms(sent, "error")
        for arm, conf, ms, err in (
            ("control", conf_c, time_c, err_c), ("treatment", conf_t, time_t, err_t)
        ):
            assert m[arm]["requests"] == len(conf)
            assert m[arm]["avg_confidence"] == pytest.approx(conf.mean(), rel=1e-12)
            assert m[arm]["avg_inference_time_ms"] == pytest.approx(ms.mean(), rel=1e-12)
            assert m[arm]["error_rate"] == pytest.approx(err.mean(), rel=1e-12)
        assert_difference(m["confidence_diff"], welch_interval(conf_c, conf_t, 0.1))
        assert_difference(m["inference_time_ms_diff"], welch_interval(time_c, time_t, 0.1))
        # Errors: Agresti-Caffo (one error and two requests more per arm), Welch's t on p(1-p).
        nc, nt = len(err_c) + 2, len(err_t) + 2
        pc, pt = (err_c.sum() + 1) / nc, (err_t.sum() + 1) / nt
        vc, vt = pc * (1 - pc) / nc, pt * (1 - pt) / nt
        dof = (vc + vt) ** 2 / (vc**2 / (nc - 1) + vt**2 / (nt - 1))
        half = scipy.stats.t.ppf(0.95, dof) * np.sqrt(vc + vt)
        assert m["error_rate_diff"]["estimate"] == pytest.approx(err_t.mean() - err_c.mean())
        assert m["error_rate_diff"]["ci"] == pytest.approx([pt - pc - half, pt - pc + half])


def _ratio(rows: list[dict[str, Any]], arm: str, field: str) -> tuple[int, float, float]:
    """Users, ratio sum(M)/sum(D) and its delta-method variance, users as units."""
    users: dict[str, list[float]] = {}
    for r in rows:
        if r["variant"] == arm:
            users.setdefault(r["user_id"], []).append(float(r[field]))
    m = np.array([sum(v) for v in users.values()])
    d = np.array([len(v) for v in users.values()], dtype=float)
    n, mu_m, mu_d = len(m), m.mean(), d.mean()
    cov = np.cov(m, d, ddof=1)
    var = (
        cov[0, 0] / mu_d**2 + mu_m**2 * cov[1, 1] / mu_d**4 - 2 * cov[0, 1] * mu_m / mu_d**3
    )
    return n, m.sum() / d.sum(), var / n


def test_evaluation_with_users_as_units_equals_a_recomputation(project: Project) -> None:
    project.ab.start_test(config(method="fixed"))
    rows = requests_rows(3000, seed=9, users=400)
    # each user in one arm, as assignment makes it: 30% of the users are treated
    arm_of = {f"u{i}": "treatment" if i % 10 < 3 else "control" for i in range(400)}
    for r in rows:
        r["variant"] = arm_of[r["user_id"]]
    project.ab.record_batch("t", jsonl(rows))
    found = project.ab.evaluate_test("t").to_dict()
    m = found["metrics"]
    assert found["unit"] == "user"
    for field, key in (("confidence", "confidence_diff"), ("inference_time_ms",
                                                          "inference_time_ms_diff")):
        nc, rc, vc = _ratio(rows, "control", field)
        nt, rt, vt = _ratio(rows, "treatment", field)
        assert (m["control"]["users"], m["treatment"]["users"]) == (nc, nt)
        dof = (vc + vt) ** 2 / (vc**2 / (nc - 1) + vt**2 / (nt - 1))
        half = scipy.stats.t.ppf(0.975, dof) * np.sqrt(vc + vt)
        assert m[key]["estimate"] == pytest.approx(rt - rc, rel=1e-9)
        assert m[key]["ci"] == pytest.approx([rt - rc - half, rt - rc + half], rel=1e-7)
    users = [m["control"]["users"], m["treatment"]["users"]]
    expected = scipy.stats.chisquare(users, [sum(users) * 0.7, sum(users) * 0.3]).pvalue
    assert m["srm"]["unit"] == "user"
    assert m["srm"]["p_value"] == pytest.approx(expected, rel=1e-9)


def _feed(project: Project, n: int, conf: tuple[float, float], err: tuple[float, float],
          share: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        arm = int(rng.random() < share)
        rows.append({
            "variant": ("control", "treatment")[arm],
            "inference_time_ms": float(rng.normal(100, 10)),
            "confidence": float(np.clip(rng.normal(conf[arm], 0.1), 0, 1)),
            "error": bool(rng.random() < err[arm]),
        })
    project.ab.record_batch("t", jsonl(rows))


def test_a_better_treatment_is_promoted_after_the_duration(project: Project, clock: Clock) -> None:
    project.ab.start_test(config(treatment_traffic_pct=10, duration_days=7))
    _feed(project, 6000, conf=(0.80, 0.86), err=(0.02, 0.02), share=0.1, seed=0)
    early = project.ab.evaluate_test("t")
    assert early.decision == "continue" and "7.0 days left" in early.reasons
    clock.now = T0 + timedelta(days=7, hours=1)
    assert project.ab.evaluate_test("t").decision == "promote"
    test = project.ab.finalize_test("t", "promote")
    assert test.status == "promoted" and parse_ts(test.finalized_at) == clock.now
    for view in (project, reopen(project)):
        champion = view.registry.require_champion("gnn")
        assert (champion.version, champion.traffic_percentage) == ("1.1.0", 100.0)
        assert view.registry.get_version("gnn", "1.0.0").traffic_percentage == 0.0
        assert view.ab.active_tests == {} and view.ab.get_test("t").status == "promoted"
    event = project.registry.history()[-1]
    assert (event.kind, event["decision"], event["version"]) == ("ab_finalized", "promote", "1.1.0")


def test_harm_is_rolled_back_at_once_by_apply(project: Project) -> None:
    project.ab.start_test(config(treatment_traffic_pct=50))
    _feed(project, 600, conf=(0.8, 0.8), err=(0.02, 0.30), share=0.5, seed=1)
    result = project.ab.evaluate_test("t", apply=True)
    assert (result.decision, result.rollback_cause, result.applied) == ("rollback", "harm", True)
    assert result.requests == 600 and result.days_elapsed == 0.0
    assert reopen(project).ab.get_test("t").status == "rolled_back"
    assert project.registry.require_champion("gnn").version == "1.0.0"


def test_recording_into_a_finalized_or_unknown_test_is_refused(
    running: Project, clock: Clock
) -> None:
    running.ab.record_result("t", "control", 10.0, 0.5)
    running.ab.finalize_test("t", "rollback")
    before = dump(running)
    for refused in (
        lambda: running.ab.record_result("t", "control", 1.0, 0.5),
        lambda: running.ab.record_batch("t", jsonl(requests_rows(10, seed=3))),
        lambda: running.ab.finalize_test("t", "promote", force=True),
        lambda: reopen(running).ab.record_result("t", "treatment", 1.0, 0.5),
    ):
        with pytest.raises(ConflictError, match="finalized"):
            refused()
        assert dump(running) == before
    with pytest.raises(NotFoundError, match="unknown A/B test"):
        running.ab.record_result("nope", "control", 1.0, 0.5)
    assert dump(running) == before


def test_the_final_figures_stop_at_the_finalize(running: Project, clock: Clock) -> None:
    during = (T0 + timedelta(days=1)).isoformat()  # the test's clock, not the wall clock
    running.ab.record_batch("t", jsonl([{**r, "ts": during} for r in requests_rows(300, seed=4)]))
    clock.now = T0 + timedelta(days=2)
    running.ab.finalize_test("t", "rollback")
    clock.now = T0 + timedelta(days=30)
    final = running.ab.evaluate_test("t")
    assert final.status == "rolled_back" and final.days_elapsed == 2.0
    assert final.requests == 300 and "final figures" in final.recommendation


def test_promote_without_a_promote_evaluation_needs_force(running: Project) -> None:
    before = dump(running)
    with pytest.raises(ConflictError, match="says continue, not promote"):
        running.ab.finalize_test("t", "promote")
    with pytest.raises(ValidationError, match="promote or rollback"):
        running.ab.finalize_test("t", "continue")
    assert dump(running) == before
    running.ab.finalize_test("t", "promote", force=True)
    assert running.registry.require_champion("gnn").version == "1.1.0"
    assert running.registry.history()[-1]["forced"] is True


def test_list_and_status_count_each_arm(running: Project) -> None:
    rows = [{**r, "ts": STAMP} for r in requests_rows(500, seed=6)]  # on the test's clock
    running.ab.record_batch("t", jsonl(rows))
    treated = sum(r["variant"] == "treatment" for r in rows)
    listed = running.ab.list_tests()
    assert [(s.test.name, s.requests) for s in listed] == [
        ("t", {"control": 500 - treated, "treatment": treated})
    ]
    running.ab.finalize_test("t", "rollback")
    status = reopen(running).ab.status("t")
    assert status.test.status == "rolled_back" and sum(status.requests.values()) == 500


def test_numeric_text_and_missing_user_ids_in_one_log_are_read(running: Project) -> None:
    """Ids may be numbers; mixed with text ids and anonymous requests, every view and the
    decision still read the log (per request: an anonymous request makes requests the unit)."""
    rows = [{**r, "ts": STAMP} for r in requests_rows(300, seed=8, users=50)]
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["user_id"] = i  # a number
        elif i % 3 == 1:
            del row["user_id"]
    running.ab.record_batch("t", jsonl(rows))
    treated = sum(r["variant"] == "treatment" for r in rows)
    for view in (running, reopen(running)):
        assert view.ab.status("t").requests == {"control": 300 - treated, "treatment": treated}
        evaluation = view.ab.evaluate_test("t")
        assert evaluation.requests == 300 and evaluation.unit == "request"
