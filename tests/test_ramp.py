"""A test's traffic ramp: the steps, the stratified difference, the split per step, the rule
that advances a step, and the flow through the API and the CLI."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mlops_cli import ABTestConfig, ConflictError, ModelVersion, Project, ValidationError
from mlops_cli.ramp import Strata, judge_step, parse_steps, srm_threshold, step_status
from mlops_cli.stats import RatioSums, compare_ratio, compare_relative, sequential_critical_value
from tests import pg_server as fixtures
from tests.conftest import Clock, Run, assert_one_error_line, snapshot

pg_server = fixtures.pg_server  # the session's server
pg_url = fixtures.pg_url  # a new database on it

SEQ = ("sequential", 5000)


# -- the steps ---------------------------------------------------------------------------------


def test_steps_parse_from_text_and_lists() -> None:
    assert parse_steps("5,10,25,50") == [5.0, 10.0, 25.0, 50.0]
    assert parse_steps(" 5%, 12.5 ") == [5.0, 12.5]
    assert parse_steps([1, 99.99]) == [1.0, 99.99]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10,5", "must rise"),
        ("5,5", "must rise"),
        ("0,10", "above 0 and below 100"),
        ("5,100", "above 0 and below 100"),
        ("5,10.001", "steps of 0.01"),
        ("5,x", "percentages"),
        ("", "percentages"),
        (",".join(str(i) for i in range(1, 22)), "at most 20"),
    ],
)
def test_bad_steps_say_what_is_wrong(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_steps(value)


# -- the stratified difference -----------------------------------------------------------------


def _world(seed: int, n: int = 400, users: int = 150) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n)
    return {
        "user": user,
        "treated": user % 3 == 0,
        "confidence": rng.random(n),
        "inference_time_ms": rng.normal(100, 30, n),
        "errors": rng.random(n) < 0.1,
    }


def _ratio_sums(w: dict[str, Any], mask: Any, metric: str) -> RatioSums:
    ids = np.unique(w["user"][mask])
    values = np.asarray(w[metric], dtype=float)
    m = np.array([values[mask & (w["user"] == u)].sum() for u in ids])
    d = np.array([(mask & (w["user"] == u)).sum() for u in ids], dtype=float)
    return RatioSums.of(m, d)


def _strata(w: dict[str, Any], step: Any, shares: list[float]) -> Strata:
    values = {k: w[k] for k in ("errors", "confidence", "inference_time_ms")}
    return Strata.of(step, w["treated"], w["user"], values, shares)


def test_one_step_is_the_unstratified_ratio_difference() -> None:
    """With one step the stratified difference is gbstats' ratio-metric difference (which
    tests/test_stats_ratio.py pins to gbstats 0.8.0), for every metric."""
    w = _world(1)
    strata = _strata(w, np.ones(w["user"].size, int), [33.0])
    c, t = ~w["treated"], w["treated"]
    want = compare_ratio(
        _ratio_sums(w, c, "confidence"), _ratio_sums(w, t, "confidence"), 0.05, *SEQ
    )
    got = strata.difference("confidence", 0.05, *SEQ)
    assert got.estimate == pytest.approx(want.estimate, rel=1e-12)
    assert got.ci == pytest.approx(want.ci, rel=1e-9)
    assert got.p_value == pytest.approx(want.p_value, rel=1e-9)
    ms = strata.relative("inference_time_ms", 0.05, *SEQ)
    ref = compare_relative(
        _ratio_sums(w, c, "inference_time_ms").arm_stats(),
        _ratio_sums(w, t, "inference_time_ms").arm_stats(), 0.05, *SEQ,
    )
    assert ms.estimate == pytest.approx(ref.estimate, rel=1e-12)
    assert ms.ci == pytest.approx(ref.ci, rel=1e-9)
    errors = strata.difference("errors", 0.05, *SEQ, agresti_caffo=True)
    adjusted = compare_ratio(
        _ratio_sums(w, c, "errors").agresti_caffo(), _ratio_sums(w, t, "errors").agresti_caffo(),
        0.05, *SEQ,
    )
    raw = w["errors"][t].mean() - w["errors"][c].mean()
    assert errors.estimate == pytest.approx(raw, rel=1e-12)
    assert errors.ci == pytest.approx(adjusted.ci, rel=1e-9)


def test_the_fixed_method_is_a_t_interval_on_users_less_two_per_step() -> None:
    w = _world(1)
    strata = _strata(w, np.ones(w["user"].size, int), [33.0])
    sc, st = (_ratio_sums(w, m, "confidence").arm_stats() for m in (~w["treated"], w["treated"]))
    se = math.sqrt(sc.variance / sc.n + st.variance / st.n)
    half = float(scipy_stats.t.ppf(0.975, sc.n + st.n - 2)) * se
    got = strata.difference("confidence", 0.05, "fixed", 5000)
    assert got.ci == pytest.approx((got.estimate - half, got.estimate + half), rel=1e-9)


def test_two_steps_of_different_users_combine_with_mantel_haenszel_weights() -> None:
    """Users at one step only: the estimate is sum w_s d_s with w_s proportional to
    n_c n_t / (n_c + n_t), its variance sum w_s^2 var_s, each step's from gbstats' ratio
    statistic; the interval the confidence sequence over all users."""
    w = _world(2, n=600, users=300)
    step = np.where(w["user"] < 150, 1, 2)
    w["treated"] = np.where(step == 1, w["user"] % 10 == 0, w["user"] % 2 == 0)
    strata = _strata(w, step, [10.0, 50.0])
    parts = []
    for s in (1, 2):
        c, t = (step == s) & ~w["treated"], (step == s) & w["treated"]
        sc, st = (_ratio_sums(w, m, "confidence").arm_stats() for m in (c, t))
        weight = sc.n * st.n / (sc.n + st.n)
        parts.append((weight, st.mean - sc.mean, sc.variance / sc.n + st.variance / st.n))
    total = sum(p[0] for p in parts)
    estimate = sum(p[0] / total * p[1] for p in parts)
    variance = sum((p[0] / total) ** 2 * p[2] for p in parts)
    users = np.unique(w["user"]).size
    half = math.sqrt(variance) * sequential_critical_value(users, 0.05, 5000)
    got = strata.difference("confidence", 0.05, *SEQ)
    assert got.estimate == pytest.approx(estimate, rel=1e-12)
    assert got.ci == pytest.approx((estimate - half, estimate + half), rel=1e-9)


def test_a_user_at_two_steps_is_one_unit() -> None:
    """By hand: user a is control at step 1 and treatment at step 2 (its bucket fell under the
    raised share). Its two influences add before squaring (one unit), unlike two users'."""
    # rows: (step, treated, user, M, D); every cell has 2 users, each with one request
    rows = [
        (1, False, "a", 1.0, 1), (1, False, "b", 0.0, 1),
        (1, True, "c", 1.0, 1), (1, True, "d", 0.0, 1),
        (2, False, "b", 1.0, 1), (2, False, "e", 0.0, 1),
        (2, True, "a", 1.0, 1), (2, True, "f", 0.0, 1),
    ]
    codes = {u: i for i, u in enumerate("abcdef")}
    strata = Strata.of(
        [r[0] for r in rows], [r[1] for r in rows], [codes[r[2]] for r in rows],
        {"confidence": [r[3] for r in rows]}, [50.0, 60.0],
    )
    # Each cell: ratio 0.5, sum(D) 2, n/(n-1) = 2; influence (M - 0.5) / 2 * sqrt(2) = +-0.3536.
    # Weights 1*... n_c n_t / (n_c + n_t) = 1 at both steps: 0.5 each.
    phi = 0.5 / 2 * math.sqrt(2)
    per_user = {
        "a": 0.5 * (-phi) + 0.5 * (+phi),  # control at 1 (M=1), treated at 2 (M=1): cancels
        "b": 0.5 * (+phi) + 0.5 * (-phi),  # control at 1 (M=0) and at 2 (M=1)
        "c": 0.5 * phi, "d": -0.5 * phi, "e": 0.5 * phi, "f": -0.5 * phi,
    }
    variance = sum(v * v for v in per_user.values())
    assert variance == pytest.approx(4 * (0.5 * phi) ** 2)
    got = strata.difference("confidence", 0.05, *SEQ)
    assert got.estimate == 0.0
    half = math.sqrt(variance) * sequential_critical_value(6, 0.05, 5000)
    assert got.ci == pytest.approx((-half, half), rel=1e-12)


def test_a_step_with_fewer_than_two_users_in_an_arm_is_left_out() -> None:
    strata = Strata.of(
        [1, 1, 1, 2, 2, 2, 2], [False, False, True, False, False, True, True],
        [0, 1, 2, 3, 4, 5, 6], {"confidence": [0.1, 0.3, 0.9, 0.2, 0.4, 0.6, 0.8]}, [10.0, 50.0],
    )
    only_two = Strata.of(
        [2, 2, 2, 2], [False, False, True, True], [3, 4, 5, 6],
        {"confidence": [0.2, 0.4, 0.6, 0.8]}, [10.0, 50.0],
    )
    assert strata.difference("confidence", 0.05, *SEQ).estimate == pytest.approx(0.4)
    assert only_two.difference("confidence", 0.05, *SEQ).estimate == pytest.approx(0.4)
    one_each = Strata.of([1, 1], [False, True], [0, 1], {"confidence": [0.1, 0.2]}, [10.0])
    assert one_each.difference("confidence", 0.05, *SEQ).ci == (-math.inf, math.inf)


# -- the split per step ------------------------------------------------------------------------


def _split(control: int, treated: int, share: float, steps: int) -> dict[str, Any]:
    shares = [share] if steps == 1 else [*(share / 10 * (i + 1) for i in range(steps - 1)), share]
    last = steps
    strata = Strata.of(
        [last] * (control + treated), [False] * control + [True] * treated,
        list(range(control + treated)), {"confidence": [0.5] * (control + treated)}, shares,
    )
    return strata.srm()


def test_the_split_is_checked_per_step_at_0_001_over_the_steps() -> None:
    """500 / 400 users against a 50% split: chi-square p = 0.000840 (scipy), below 0.001 but
    above 0.001 / 4: a mismatch for a one-step test, not for a four-step ramp."""
    p = float(scipy_stats.chisquare([500, 400], [450, 450]).pvalue)
    assert 0.001 / 4 < p < 0.001
    one = _split(500, 400, 50.0, 1)
    four = _split(500, 400, 50.0, 4)
    assert one["p_value"] == pytest.approx(p, rel=1e-9) and one["mismatch"]
    assert four["threshold"] == srm_threshold(4) == 0.00025
    assert four["p_value"] == pytest.approx(p, rel=1e-9) and not four["mismatch"]
    assert four["steps"][0]["step"] == 4 and four["steps"][0]["treatment"] == 400
    far = float(scipy_stats.chisquare([520, 380], [450, 450]).pvalue)
    assert far < 0.00025 and _split(520, 380, 50.0, 4)["mismatch"]


# -- the rule that advances a step -------------------------------------------------------------


def _metrics(error_upper: float | None = 0.01, **guards: Any) -> dict[str, Any]:
    return {
        "srm": {"mismatch": False, "p_value": 0.5},
        "error_rate_diff": {"ci": [-0.01, error_upper]},
        "guardrails": {name: {"non_inferior": ok, "margin": 0.1} for name, ok in guards.items()},
    }


RAMP = {"steps": [5.0, 10.0, 25.0, 50.0], "step": 1, "min_users": 100, "min_hours": 24.0,
        "started": ["2026-11-01T00:00:00Z"]}


@pytest.mark.parametrize(
    ("users", "hours", "advance"),
    [(100, 24.0, True), (99, 24.0, False), (100, 23.99, False), (5000, 1000.0, True)],
)
def test_a_step_advances_at_exactly_its_minimums(users: int, hours: float, advance: bool) -> None:
    status = step_status(RAMP, users, hours)
    reasons: list[str] = []
    decision = judge_step(status, "continue", reasons, _metrics(), 0.05)
    assert decision == "continue"
    assert status.advance is advance
    assert status.minimums_met is advance


def test_a_step_waits_for_every_guardrail_and_the_error_margin() -> None:
    ok = step_status(RAMP, 100, 24.0)
    assert judge_step(ok, "continue", [], _metrics(error_upper=0.05), 0.05) == "continue"
    assert ok.advance  # an upper end exactly at the margin is within it
    above = step_status(RAMP, 100, 24.0)
    reasons: list[str] = []
    judge_step(above, "continue", reasons, _metrics(error_upper=0.0501), 0.05)
    assert reasons == ["error rate may rise by up to +0.050, allowed +0.05"]
    assert not above.advance
    empty = step_status(RAMP, 100, 24.0)
    judge_step(empty, "continue", reasons, _metrics(error_upper=None), 0.05)
    assert not empty.advance and reasons == ["error rate not compared yet: an arm has no requests"]
    latency = step_status(RAMP, 100, 24.0)
    judge_step(latency, "promote", [], _metrics(inference_time_ms=False), 0.05)
    assert not latency.advance and "inference_time_ms" in latency.waiting[0]  # type: ignore[index]
    srm = step_status(RAMP, 100, 24.0)
    metrics = _metrics()
    metrics["srm"] = {"mismatch": True, "p_value": 1e-5}
    judge_step(srm, "continue", [], metrics, 0.05)
    assert not srm.advance


def test_harm_rolls_back_at_any_step_and_the_last_step_promotes_after_its_minimums() -> None:
    first = step_status(RAMP, 0, 0.0)
    assert judge_step(first, "rollback", ["harm"], _metrics(), 0.05) == "rollback"
    last = {**RAMP, "step": 4, "started": ["a", "b", "c", "d"]}
    early = step_status(last, 99, 30.0)
    reasons = ["why"]
    assert judge_step(early, "promote", reasons, _metrics(), 0.05) == "continue"
    assert reasons == ["99 of 100 treated users at step 4"]
    ready = step_status(last, 100, 24.0)
    assert judge_step(ready, "promote", ["ok"], _metrics(), 0.05) == "promote"
    assert not ready.advance and ready.next_share is None


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture
def gnn(tmp_path: Path, clock: Clock) -> Project:
    project = Project.init(tmp_path / "proj", clock=clock)
    for v in ("v1.0.0", "v2.0.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path=f"/m/{v}.pt"))
    return project


def ramp_config(**kw: Any) -> ABTestConfig:
    base: dict[str, Any] = dict(
        name="ramped", model_type="gnn", treatment_version="v2.0.0", ramp="5,10,25,50",
        ramp_min_users=20, ramp_min_hours=24, tail_latency=False,
    )
    base.update(kw)
    return ABTestConfig(**base)


def _traffic(project: Project, rng: Any, users: int, requests: int, error: float = 0.02,
             gain: float = 0.0) -> None:
    for _ in range(requests):
        user = f"u{rng.integers(0, users)}"
        arm = project.ab.assign_variant("gnn", user)
        treated = arm.name == "treatment"
        project.ab.record_result(
            "ramped", arm.name, float(abs(rng.normal(100, 30))),
            float(np.clip(rng.normal(0.8 + gain * treated, 0.1), 0, 1)),
            bool(rng.random() < (error if treated else 0.02)), user_id=user,
        )


def test_a_ramp_starts_at_its_first_share_and_records_each_request_step(
    gnn: Project, clock: Clock
) -> None:
    test = gnn.ab.start_test(ramp_config())
    assert test.treatment_traffic_pct == 5.0
    assert test.ramp == {"steps": [5.0, 10.0, 25.0, 50.0], "step": 1, "min_users": 20,
                         "min_hours": 24.0, "started": ["2026-11-01T00:00:00Z"]}
    assert gnn.registry.get_version("gnn", "v2.0.0").traffic_percentage == 5.0
    users = [f"u{i}" for i in range(2000)]
    before = {u: gnn.ab.assign_variant("gnn", u) for u in users}
    assert {a.step for a in before.values()} == {1}
    gnn.ab.record_result("ramped", "control", 90.0, 0.8, user_id="u1")
    clock.now += timedelta(hours=1)
    gnn.ab.advance_ramp("ramped", 1)
    after = {u: gnn.ab.assign_variant("gnn", u) for u in users}
    treated_before = {u for u, a in before.items() if a.name == "treatment"}
    treated_after = {u for u, a in after.items() if a.name == "treatment"}
    assert treated_before < treated_after  # only control users moved
    assert 0.07 < len(treated_after) / len(users) < 0.13
    gnn.ab.record_result("ramped", "treatment", 90.0, 0.8, user_id="u1")
    gnn.ab.record_result("ramped", "control", 90.0, 0.8, user_id="u2", step=1)
    records = [r for chunk in gnn.store.scan("ab/ramped") for r in chunk]
    assert [r["step"] for r in records] == [1, 2, 1]
    reopened = Project.open(gnn.root, clock=clock)
    assert reopened.ab.get_test("ramped").ramp["started"] == [  # type: ignore[index]
        "2026-11-01T00:00:00Z", "2026-11-01T01:00:00Z"
    ]
    event = [e for e in reopened.registry.history("gnn") if e["event"] == "test_ramped"]
    assert event[0]["step"] == 2 and event[0]["traffic_pct"] == 10.0
    with pytest.raises(ConflictError, match="at step 2, not 1"):
        gnn.ab.advance_ramp("ramped", 1)


def test_evaluate_apply_walks_the_ramp_and_promotes_after_the_last_step(
    gnn: Project, clock: Clock
) -> None:
    gnn.ab.start_test(ramp_config())
    rng = np.random.default_rng(7)
    seen = []
    for _ in range(10):
        _traffic(gnn, rng, 1500, 2500, gain=0.05)
        clock.now += timedelta(days=1)
        e = gnn.ab.evaluate_test("ramped", apply=True)
        seen.append((e.ramp["step"], e.ramp["advanced"], e.decision))  # type: ignore[index]
        if e.status != "running":
            break
    advanced = [step for step, moved, _ in seen if moved]
    assert advanced == [1, 2, 3]  # each step once, in order, none skipped
    assert [d for *_, d in seen[:-1]] == ["continue"] * (len(seen) - 1)
    assert seen[-1] == (4, False, "promote"), seen
    assert gnn.registry.get_champion("gnn").version == "v2.0.0"
    status = gnn.ab.status("ramped").to_dict()
    assert status["ramp_status"]["step"] == 4 and status["ramp_status"]["minimums_met"]


def test_a_harmful_treatment_rolls_back_before_the_ramp_moves(gnn: Project, clock: Clock) -> None:
    gnn.ab.start_test(ramp_config(ramp_min_users=10_000))
    rng = np.random.default_rng(3)
    for _ in range(6):
        _traffic(gnn, rng, 3000, 4000, error=0.30)
        clock.now += timedelta(days=1)
        e = gnn.ab.evaluate_test("ramped", apply=True)
        if e.status != "running":
            break
    assert (e.decision, e.rollback_cause, e.status) == ("rollback", "harm", "rolled_back")
    assert e.ramp is not None and e.ramp["step"] == 1
    assert gnn.registry.get_champion("gnn").version == "v1.0.0"


def test_a_ramp_refuses_a_traffic_share_and_a_test_without_one_its_minimums(gnn: Project) -> None:
    with pytest.raises(ValidationError, match="not both"):
        gnn.ab.start_test(ramp_config(treatment_traffic_pct=10))
    with pytest.raises(ValidationError, match="give ramp too"):
        gnn.ab.start_test(ramp_config(ramp=None))
    with pytest.raises(ValidationError, match="ramp_min_users"):
        gnn.ab.start_test(ramp_config(ramp_min_users=-1))
    gnn.ab.start_test(ramp_config(ramp=None, ramp_min_users=None, ramp_min_hours=None))
    with pytest.raises(ValidationError, match="has no ramp"):
        gnn.ab.record_result("ramped", "control", 1.0, 0.5, step=1)
    with pytest.raises(ValidationError, match="step must be a ramp step"):
        gnn.ab.record_batch("ramped", b'{"variant": "control", "inference_time_ms": 1, '
                            b'"confidence": 0.5, "step": 0}\n')
    e = gnn.ab.evaluate_test("ramped").to_dict()
    assert "ramp" not in e and "ramp" not in gnn.ab.status("ramped").test.to_dict()


def test_a_request_can_carry_only_a_step_its_ramp_has_reached(gnn: Project) -> None:
    """A step beyond the current one (or beyond the ramp) would be read as a stratum that
    does not exist: refused on the way in, so the test stays readable."""
    gnn.ab.start_test(ramp_config())  # at step 1 of its ramp
    line = (b'{"variant": "control", "inference_time_ms": 1, "confidence": 0.5, "user_id": "u", '
            b'"step": %d}\n')
    before = snapshot(gnn.root)
    for step in (2, 5):
        with pytest.raises(ValidationError, match=rf"reached \(1 to 1\), not {step}"):
            gnn.ab.record_batch("ramped", b"%s%s" % (line % 1, line % step))
        with pytest.raises(ValidationError, match="has reached"):
            gnn.ab.record_result("ramped", "control", 1.0, 0.5, user_id="u", step=step)
    assert snapshot(gnn.root) == before
    assert gnn.ab.record_batch("ramped", line % 1).recorded == 1  # the step it is at
    gnn.ab.record_result("ramped", "control", 1.0, 0.5, user_id="u", step=1)
    assert gnn.ab.status("ramped").test.to_dict()["ramp"]["step"] == 1
    gnn.ab.evaluate_test("ramped")  # still readable


def test_cli_start_with_a_ramp_and_a_bad_one(gnn: Project) -> None:
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    def mlops(*args: str) -> Run:
        result = CliRunner().invoke(app, ["-C", str(gnn.root), *args])
        return Run(result.exit_code, result.stdout, result.stderr)

    before = snapshot(gnn.root)
    start = ("ab", "start", "r", "--model-type", "gnn", "--treatment", "v2.0.0")
    assert_one_error_line(mlops(*start, "--ramp", "10,5"), "ramp steps must rise")
    assert_one_error_line(mlops(*start, "--ramp", "5,10", "--traffic", "10"), "not both")
    assert snapshot(gnn.root) == before
    ok = mlops(*start, "--ramp", "5,50", "--ramp-min-users", "3", "--ramp-min-hours", "2")
    assert ok.exit_code == 0, ok.stderr
    assert "ramp: 5%, 50%; a step needs 3 treated users and 2 hours" in ok.stdout
    status = mlops("ab", "status", "r")
    assert "ramp: step 1 of 2 at 5%, next 50%; minimums not met (0 treated users, 3 needed; " in status.stdout
    doc = mlops("ab", "evaluate", "r", "--json").json()
    assert doc["ramp"]["share"] == 5.0 and doc["ramp"]["minimums_met"] is False


# -- on PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_ramp_on_postgresql_keeps_its_steps_and_each_request_step(
    pg_url: str, clock: Clock
) -> None:
    """The same flow on the database store: the ramp in its jsonb column (migration
    0012_ramp), each request's step in `requests.step`, whether appended one at a time (the
    buffer's COPY) or in a batch."""
    project = Project.init(pg_url, clock=clock)
    try:
        for v in ("v1.0.0", "v2.0.0"):
            project.registry.register_version(ModelVersion("gnn", v, model_path=f"/m/{v}.pt"))
        project.ab.start_test(ramp_config())
        project.ab.record_result("ramped", "control", 90.0, 0.8, user_id="u1")
        project.ab.record_batch(
            "ramped",
            b'{"variant": "treatment", "inference_time_ms": 80, "confidence": 0.9, '
            b'"user_id": "u2", "step": 1}\n',
        )
        clock.now += timedelta(hours=2)
        project.ab.advance_ramp("ramped", 1)
        project.ab.record_result("ramped", "treatment", 90.0, 0.8, user_id="u1")
        project.flush()
        records = [r for chunk in project.store.scan("ab/ramped") for r in chunk]
        assert sorted(r["step"] for r in records) == [1, 1, 2]
    finally:
        project.close()
    reopened = Project.open(pg_url, clock=clock)
    try:
        test = reopened.ab.get_test("ramped")
        assert test.ramp is not None
        assert (test.ramp["step"], test.treatment_traffic_pct) == (2, 10.0)
        assert test.ramp["steps"] == [5.0, 10.0, 25.0, 50.0]
        assert reopened.ab.status("ramped").ramp_status["users"] == 1  # type: ignore[index]
    finally:
        reopened.close()


@pytest.mark.parametrize("ramp", [None, "5,10,25,50"])
def test_arms_of_one_constant_confidence_are_not_harm(gnn: Project, ramp: str | None) -> None:
    """Every request at confidence 0.9 in both arms (users as units): no difference, so no
    harm rollback (it was "confidence down -0.000, interval [-0.000, -0.000]")."""
    if ramp is None:
        gnn.ab.start_test(ABTestConfig("ramped", "gnn", treatment_version="v2.0.0",
                                       treatment_traffic_pct=50, tail_latency=False))
    else:
        gnn.ab.start_test(ramp_config())
    rng = np.random.default_rng(5)
    for i in range(400):
        user = f"u{i}"
        arm = gnn.ab.assign_variant("gnn", user).name
        gnn.ab.record_result("ramped", arm, float(rng.normal(50, 5)), 0.9, user_id=user)
    found = gnn.ab.evaluate_test("ramped")
    assert found.metrics["confidence_diff"]["estimate"] == 0.0
    assert found.rollback_cause != "harm"
