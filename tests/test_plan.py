"""`mlops ab plan`: the size of a test for the sequential rule, pinned by hand and by scipy."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
from scipy.stats import norm

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.errors import ValidationError
from mlops_cli.plan import (
    PlanInputs,
    critical_value,
    detectable_effect,
    inputs_from_arms,
    make_plan,
    power_at,
    required_users,
)
from mlops_cli.stats import RatioSums

from .conftest import Run, assert_one_error_line, snapshot

Cli = Callable[..., Run]
ALPHA, TUNING = 0.05, 5000


def scipy_power(n: int, effect: float, sd: float, p: float, m: float) -> float:
    """The same chance written from the paper (eq. 9, rho by eq. 161) with scipy's normal."""
    rho2 = (-2 * math.log(ALPHA) + math.log(-2 * math.log(ALPHA) + 1)) / TUNING
    se = sd * math.sqrt(1 / (n * p) + 1 / (n * (1 - p)))
    s2 = se * se * n
    half = math.sqrt(s2) * math.sqrt(
        2 * (n * rho2 + 1) * math.log(math.sqrt(n * rho2 + 1) / ALPHA) / (n * n * rho2)
    )
    return float(norm.cdf((effect - max(half, m)) / se))


def test_critical_value_by_hand() -> None:
    # rho^2 = (5.991465 + ln 6.991465) / 5000 = 7.936155 / 5000 = 0.00158723; at N = 10,000:
    # N rho^2 + 1 = 16.8723, ln(sqrt(16.8723) / 0.05) = ln 82.152 = 4.40857,
    # c^2 = 2 * 16.8723 * 4.40857 / 15.8723 = 9.37274, c = 3.06149
    assert critical_value(10_000, ALPHA, TUNING) == pytest.approx(3.06149, abs=2e-5)


def test_required_users_by_hand_is_the_first_n_reaching_power() -> None:
    # 50% split, sd 0.164, gain 0.03, min gain 0.02: at N = 1,892, se = 0.164 / sqrt(473) =
    # 0.0075406, c = 3.13617, half = 0.023649 > 0.02, z = (0.03 - 0.023649) / 0.0075406 =
    # 0.8423 >= z_0.8 = 0.8416; at 1,891 it is just below.
    n = required_users(0.03, 0.164, 0.5, ALPHA, 0.8, TUNING, 0.02)
    assert n == 1892
    assert (
        scipy_power(n, 0.03, 0.164, 0.5, 0.02) >= 0.8 > scipy_power(n - 1, 0.03, 0.164, 0.5, 0.02)
    )


@pytest.mark.parametrize(
    ("effect", "sd", "p", "m", "power"),
    [(0.03, 0.164, 0.1, 0.02, 0.8), (0.05, 0.3, 0.25, 0.0, 0.9), (0.021, 0.05, 0.5, 0.02, 0.8)],
)
def test_required_users_matches_scipy(
    effect: float, sd: float, p: float, m: float, power: float
) -> None:
    n = required_users(effect, sd, p, ALPHA, power, TUNING, m)
    assert scipy_power(n, effect, sd, p, m) >= power > scipy_power(n - 1, effect, sd, p, m)


def test_min_effect_binds_when_the_sequence_is_narrower() -> None:
    # N = 10^6, sd 0.1, 50%: se = 0.1 / 500 = 0.0002, half = 3.6565 * 0.0002 = 0.00073 < 0.02,
    # so the detectable gain is 0.02 + 0.841621 * 0.0002 = 0.0201683
    assert detectable_effect(10**6, 0.1, 0.5, ALPHA, 0.8, TUNING, 0.02) == pytest.approx(
        0.0201683, abs=1e-7
    )


def test_detectable_effect_is_the_inverse_of_power() -> None:
    effect = detectable_effect(2250, 0.164, 0.1, ALPHA, 0.8, TUNING, 0.02)
    assert scipy_power(2250, effect, 0.164, 0.1, 0.02) == pytest.approx(0.8, abs=1e-9)
    assert power_at(2250, effect, 0.164, 0.1, ALPHA, TUNING, 0.02) == pytest.approx(0.8)


def test_plan_days_include_duration_and_min_requests() -> None:
    inputs = PlanInputs(0.164, 10.0, 100.0, "given")
    common = dict(alpha=ALPHA, power=0.8, sequential_tuning=TUNING, min_effect=0.02)
    plan = make_plan(inputs, effect=0.03, days=None, treatment_traffic_pct=50, **common)
    assert plan.users == 1892 and plan.users_treatment == 946 and plan.requests == 18920
    assert plan.days == pytest.approx(18.92) and plan.days_needed == pytest.approx(18.92)
    longer = make_plan(
        inputs, effect=0.03, days=None, treatment_traffic_pct=50, duration_days=30, **common
    )
    assert longer.days_needed == 30
    # 100,000 requests at 1,000 a day: 100 days
    more = make_plan(
        inputs, effect=0.03, days=None, treatment_traffic_pct=50, min_requests=100_000, **common
    )
    assert more.days_needed == pytest.approx(100.0)
    back = make_plan(inputs, effect=None, days=18.92, treatment_traffic_pct=50, **common)
    assert back.users == 1892 and back.effect == pytest.approx(
        detectable_effect(1892, 0.164, 0.5, ALPHA, 0.8, TUNING, 0.02)
    )


@pytest.mark.parametrize(
    ("inputs", "kwargs", "words"),
    [
        (PlanInputs(0.1, 5, 100, "g"), {"effect": 0.02}, "above min_confidence_improvement"),
        (PlanInputs(0.1, 5, 100, "g"), {"effect": 0.03, "days": 3.0}, "either"),
        (PlanInputs(0.1, 5, 100, "g"), {"effect": None}, "either"),
        (PlanInputs(0.0, 5, 100, "g"), {"effect": 0.03}, "per-user sd"),
        (PlanInputs(0.1, 0.5, 100, "g"), {"effect": 0.03}, "at least 1"),
        (PlanInputs(0.1, 5, math.nan, "g"), {"effect": 0.03}, "users per day"),
        (PlanInputs(0.1, 5, 100, "g"), {"effect": 0.03, "power": 1.0}, "power"),
        (PlanInputs(0.1, 5, 100, "g"), {"effect": 0.03, "treatment_traffic_pct": 0}, "share"),
        (PlanInputs(0.1, 5, 1, "g"), {"effect": None, "days": 2.0}, "fewer than 8"),
    ],
)
def test_bad_plans_are_refused(inputs: PlanInputs, kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = dict(
        effect=None,
        days=None,
        treatment_traffic_pct=50,
        alpha=ALPHA,
        power=0.8,
        sequential_tuning=TUNING,
        min_effect=0.02,
    )
    args.update(kwargs)
    with pytest.raises(ValidationError, match=words):
        make_plan(inputs, **args)  # type: ignore[arg-type]


def test_inputs_from_arms_by_the_delta_method() -> None:
    # users of (requests D, confidence sum M): the ratio's per-user variance is
    # Var(M - r D) / mean(D)^2 (r = sum M / sum D), with (n-1) sample (co)variances
    arms = [
        [(1, 0.9), (3, 2.1), (2, 1.7), (5, 4.0), (1, 0.6)],
        [(2, 1.8), (1, 0.7), (4, 3.3), (2, 1.5), (6, 4.9), (1, 0.95)],
    ]
    sums, variances = [], []
    for users in arms:
        d = np.array([u[0] for u in users], float)
        m = np.array([u[1] for u in users], float)
        sums.append(RatioSums(len(users), m.sum(), m @ m, d.sum(), d @ d, m @ d))
        r = m.sum() / d.sum()
        variances.append(np.var(m - r * d, ddof=1) / d.mean() ** 2)
    pooled = (2 * 4 * variances[0] + 2 * 5 * variances[1]) / 18
    with pytest.raises(ValidationError, match="too few"):
        inputs_from_arms(sums, 0.1, 7.0, "t")  # 11 users: fewer than 8 an arm on average
    plain = inputs_from_arms([sums[0], sums[1], sums[0], sums[1]], None, 7.0, "t")
    # four arms, two copies of each: the same per-arm variances, pooled by users - 1
    assert plain.user_sd**2 == pytest.approx(pooled, rel=1e-12)
    assert plain.requests_per_user == pytest.approx(28 / 11)  # (12 + 16) requests, 11 users
    assert plain.users_per_day == pytest.approx(22 / 7)
    assert plain.correlation is None


def test_implied_correlation_recovers_the_simulated_one() -> None:
    rng = np.random.default_rng(5)
    arms = []
    for _ in range(2):
        n = 20_000
        d = 1 + np.floor(rng.lognormal(0.5, 0.8, n)).astype(int)
        user = np.repeat(np.arange(n), d)
        values = rng.normal(0, math.sqrt(0.3), n)[user] + rng.normal(0, math.sqrt(0.7), d.sum())
        m = np.bincount(user, values)
        arms.append(RatioSums(n, m.sum(), m @ m, float(d.sum()), float(d @ d), float(m @ d)))
    got = inputs_from_arms(arms, 1.0, 10.0, "sim")
    assert got.correlation == pytest.approx(0.3, abs=0.03)


# -- through the project --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def past_test(root: Path, user_ids: bool = True) -> Clock:
    """A finalized test of gnn over 4 days: 200 users, 3 requests each."""
    clock = Clock()
    project = Project.init(root, clock=clock)
    for v in ("v1.0.0", "v2.0.0", "v3.0.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path=f"/m/{v}"))
    project.ab.start_test(ABTestConfig("old", "gnn", treatment_version="v2.0.0"))
    rng = np.random.default_rng(1)
    lines = []
    for u in range(200):
        variant = project.ab.assign_variant("gnn", f"u{u}")["name"]
        offset = rng.normal(0, 0.05)
        for _ in range(3):
            doc = {
                "ts": "2026-01-02T00:00:00Z",  # within the test's days on the injected clock
                "variant": variant,
                "inference_time_ms": 100.0,
                "confidence": float(np.clip(0.8 + offset + rng.normal(0, 0.08), 0, 1)),
            }
            if user_ids:
                doc["user_id"] = f"u{u}"
            lines.append(orjson.dumps(doc))
    project.ab.record_batch("old", b"\n".join(lines) + b"\n")
    clock.now += timedelta(days=4)
    project.ab.finalize_test("old", "rollback")
    return clock


def test_plan_from_a_past_test_log(tmp_path: Path) -> None:
    past_test(tmp_path / "p")
    project = Project.open(tmp_path / "p")
    inputs = project.ab.plan_inputs("old")
    assert inputs.requests_per_user == 3 and inputs.users_per_day == pytest.approx(50.0)
    plan = project.ab.plan(0.05, model_type="gnn", treatment_traffic_pct=50)
    assert plan.source == "A/B test old" and plan.user_sd == pytest.approx(inputs.user_sd)
    assert plan.users == required_users(0.05, inputs.user_sd, 0.5, ALPHA, 0.8, TUNING, 0.02)
    assert plan.days == pytest.approx(plan.users / 50.0)


def test_cli_plan_from_model_type_and_given_numbers(cli: Cli, project: Project) -> None:
    run = cli(
        "ab",
        "plan",
        "--effect",
        "0.03",
        "--user-sd",
        "0.164",
        "--requests-per-user",
        "10",
        "--users-per-day",
        "100",
        "--traffic",
        "50",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["users"] == 1892 and doc["days_needed"] == pytest.approx(18.92)
    human = cli(
        "ab",
        "plan",
        "--days",
        "7",
        "--user-sd",
        "0.164",
        "--requests-per-user",
        "10",
        "--users-per-day",
        "100",
    )
    assert human.exit_code == 0 and "in 7 days (~700 users)" in human.stdout


def test_cli_plan_without_user_ids_says_why(cli: Cli, project: Project) -> None:
    cli("register", "gnn", "v1.0.0", "--path", "/m/1")
    before = snapshot(project.root)
    run = cli("ab", "plan", "--effect", "0.03", "--model-type", "gnn")
    assert_one_error_line(run, "serving metrics carry no user ids", "--user-sd")
    assert snapshot(project.root) == before


def test_cli_plan_from_a_test_without_user_ids(cli: Cli, tmp_path: Path) -> None:
    past_test(tmp_path / "p", user_ids=False)
    run = cli("ab", "plan", "--effect", "0.05", "--from-test", "old", root=tmp_path / "p")
    assert_one_error_line(run, "carries a user_id")


@pytest.mark.parametrize(
    "args",
    [
        ("--effect", "0.03"),
        ("--effect", "0.03", "--user-sd", "0.1"),
        (
            "--effect",
            "0.03",
            "--days",
            "3",
            "--user-sd",
            "0.1",
            "--requests-per-user",
            "2",
            "--users-per-day",
            "9",
        ),
        (
            "--effect",
            "0.03",
            "--user-sd",
            "0.1",
            "--requests-per-user",
            "2",
            "--users-per-day",
            "9",
            "--power",
            "0.2",
        ),
    ],
)
def test_cli_plan_bad_input(cli: Cli, project: Project, args: tuple[str, ...]) -> None:
    before = snapshot(project.root)
    assert_one_error_line(cli("ab", "plan", *args))
    assert snapshot(project.root) == before


def test_start_prints_the_plan_when_a_past_test_has_user_ids(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "p"
    past_test(root)
    run = cli("ab", "start", "new", "--model-type", "gnn", "--treatment", "v3.0.0", root=root)
    assert run.exit_code == 0, run.stderr
    plan = Project.open(root).ab.plan(days=7, from_test="old")
    assert f"plan: in 7 days (~{plan.users:,} users)" in run.stdout
    assert f"{plan.effect:+.4f}" in run.stdout


def test_start_prints_no_plan_without_a_past_test(cli: Cli) -> None:
    for v in ("v1.0.0", "v2.0.0"):
        cli("register", "gnn", v, "--path", f"/m/{v}")
    run = cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.0.0")
    assert run.exit_code == 0 and "plan:" not in run.stdout


# -- the plan checked by simulation ---------------------------------------------------------


def simulated_arms(
    rng: np.random.Generator, users: int, share: float, gain: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user (treated, requests D, confidence sum M) of `users` users in arrival order:
    D = 1 + floor(LogNormal(0.5, 0.8)), confidence 0.8 (+ gain) + user offset + noise (sd 0.1,
    intra-user correlation 0.3)."""
    d = 1 + np.floor(rng.lognormal(0.5, 0.8, users)).astype(int)
    treated = rng.random(users) < share
    offset = rng.normal(0, 0.1 * math.sqrt(0.3), users)
    noise_sum = rng.normal(0, 0.1 * math.sqrt(0.7), users) * np.sqrt(d)  # sum of D noises
    m = d * (0.8 + gain * treated + offset) + noise_sum
    return treated, d.astype(float), m


def user_arm(d: np.ndarray, m: np.ndarray) -> object:
    from mlops_cli.decision import UserArm

    def sums(x: np.ndarray) -> RatioSums:
        return RatioSums(
            len(d), float(x.sum()), float(x @ x), float(d.sum()), float(d @ d), float(x @ d)
        )

    errors = np.zeros_like(d)
    return UserArm(sums(errors), sums(m), sums(100.0 * d))


@pytest.mark.slow
@pytest.mark.parametrize("split", [50.0, 10.0])
def test_planned_size_reaches_the_stated_power(split: float) -> None:
    """Plan from a pilot's per-user sums, then run tests of the planned size through the
    project's decision rules with 7 looks: the share promoted is the planned power +- 5
    points."""
    from mlops_cli.decision import decide
    from mlops_cli.simulation import base_config

    rng = np.random.default_rng(22)
    treated, d, m = simulated_arms(rng, 40_000, 0.5, 0.0)
    pilot = [
        RatioSums(
            int(mask.sum()),
            m[mask].sum(),
            m[mask] @ m[mask],
            d[mask].sum(),
            d[mask] @ d[mask],
            m[mask] @ d[mask],
        )
        for mask in (~treated, treated)
    ]
    inputs = inputs_from_arms(pilot, None, 10.0, "pilot")
    plan = make_plan(
        inputs,
        effect=0.03,
        days=None,
        treatment_traffic_pct=split,
        alpha=ALPHA,
        power=0.8,
        sequential_tuning=TUNING,
        min_effect=0.02,
    )
    config = base_config(treatment_traffic_pct=split, duration_days=0, min_requests=0)
    runs, promoted = 400, 0
    for _ in range(runs):
        treated, d, m = simulated_arms(rng, plan.users, split / 100, 0.03)
        for look in range(1, 8):
            n = plan.users * look // 7
            t = treated[:n]
            ev = decide(
                "sim", config, user_arm(d[:n][~t], m[:n][~t]), user_arm(d[:n][t], m[:n][t]), 1.0
            )  # type: ignore[arg-type]
            if ev.decision != "continue":
                promoted += ev.decision == "promote"
                break
    print(f"split {split:g}%: {plan.users} users planned, promoted {promoted / runs:.1%}")
    assert abs(promoted / runs - 0.8) <= 0.05, (promoted / runs, plan.users)


def test_dashboard_shows_progress_against_the_plan(tmp_path: Path) -> None:
    from mlops_cli.ui import data

    root = tmp_path / "p"
    clock = past_test(root)
    project = Project.open(root, clock=clock)
    project.ab.start_test(ABTestConfig("new", "gnn", treatment_version="v3.0.0"))
    lines = [
        orjson.dumps(
            {
                "ts": "2026-01-05T12:00:00Z",
                "variant": project.ab.assign_variant("gnn", f"w{u}")["name"],
                "inference_time_ms": 100.0,
                "confidence": 0.5 + u / 100,
                "user_id": f"w{u}",
            }
        )
        for u in range(30)
    ]
    project.ab.record_batch("new", b"\n".join(lines) + b"\n")
    doc = data.ab_test(root, "new")["plan"]
    planned = project.ab.plan(days=7, from_test="old").users
    assert doc["users"] == 30 and doc["planned_users"] == planned
    assert doc["progress"] == pytest.approx(30 / planned) and doc["source"] == "A/B test old"
    # no earlier test to plan from (the later one, with user ids, is not used)
    clock.now += timedelta(days=1)
    assert project.ab.plan(days=7, from_test="new").users > 0
    assert data.ab_test(root, "old")["plan"] is None


def test_a_plan_takes_users_per_day_from_at_least_a_day_of_a_test(tmp_path: Path) -> None:
    root = tmp_path / "p"
    clock = past_test(root)
    project = Project.open(root, clock=clock)
    project.ab.start_test(ABTestConfig("new", "gnn", treatment_version="v3.0.0"))
    rows = [
        {"ts": "2026-01-05T00:00:00Z", "variant": "control", "inference_time_ms": 100.0,
         "confidence": 0.5 + u / 100, "user_id": f"w{u}"}
        for u in range(30)
    ]
    project.ab.record_batch("new", b"".join(orjson.dumps(r) + b"\n" for r in rows))
    clock.now += timedelta(days=1) - timedelta(seconds=1)  # just short of a day
    with pytest.raises(ValidationError, match=r"A/B test new has run 0\.99 days; .* at least 1 day"):
        project.ab.plan_inputs("new")
    assert project.ab.plan_for_test("new") is not None  # from the older test, as before
    clock.now += timedelta(seconds=1)  # a day exactly: 30 users a day
    assert project.ab.plan_inputs("new").users_per_day == pytest.approx(30.0)
