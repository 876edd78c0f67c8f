"""The decision rules of `mlops_cli.decision`, each on hand-checked numbers, and per-user totals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats

from mlops_cli.decision import (
    SRM_UNTESTABLE,
    Rules,
    UserArm,
    UserTotals,
    analysis_arms,
    decide,
    differences,
)
from mlops_cli.moments import Moments
from mlops_cli.stats import RatioSums, compare_rates, compare_ratio

RATIO = json.loads((Path(__file__).parent / "data" / "ab_ratio_vectors.json").read_text())

BASE: dict[str, Any] = {
    "alpha": 0.05,
    "method": "fixed",
    "sequential_tuning": 5000,
    "treatment_traffic_pct": 50,
    "min_requests": 1000,
    "duration_days": 7,
    "max_error_rate_increase": 0.05,
    "min_confidence_improvement": 0.02,
    "control_version": "1.0.0",
    "treatment_version": "1.1.0",
}


def cfg(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def arm(
    n: int,
    errors: int = 0,
    conf: float = 0.8,
    conf_sd: float = 0.1,
    ms: float = 100.0,
    ms_sd: float = 10.0,
) -> Moments:
    """Moments with exactly the given means and (n-1) standard deviations."""
    ss = (n - 1) * conf_sd**2 + n * conf**2
    ts = (n - 1) * ms_sd**2 + n * ms**2
    return Moments(n, errors, n * conf, ss, n * ms, ts)


def t_half(se: float, dof: float, alpha: float) -> float:
    return float(scipy.stats.t.ppf(1 - alpha / 2, dof)) * se


# -- 1. harm -----------------------------------------------------------------------------------
# At the defaults three harm tests share alpha: error rate, confidence (max_confidence_drop
# 0.02) and latency (max_latency_increase 10%), each judged at alpha / 3.
HARM_ALPHA = 0.05 / 3


def rates_half(nc: int, ec: int, nt: int, et: int, alpha: float) -> tuple[float, float]:
    """Agresti-Caffo Welch interval of the error-rate difference, by hand: (centre, half)."""
    pc, pt = (ec + 1) / (nc + 2), (et + 1) / (nt + 2)
    va, vb = pc * (1 - pc) / (nc + 2), pt * (1 - pt) / (nt + 2)
    dof = (va + vb) ** 2 / (va**2 / (nc + 1) + vb**2 / (nt + 1))
    return pt - pc, t_half(math.sqrt(va + vb), dof, alpha)


def test_error_rate_harm_rolls_back_at_once_with_the_shared_budget() -> None:
    # 2% vs 12% errors in 1000 requests each, on day 1 of 7: harm overrides duration.
    got = decide("t", cfg(), arm(1000, 20), arm(1000, 120), 1.0)
    assert (got.decision, got.rollback_cause) == ("rollback", "harm")
    guard = got.metrics["guardrails"]["error_rate"]
    assert guard["alpha"] == pytest.approx(HARM_ALPHA) and guard["harm"] is True
    centre, half = rates_half(1000, 20, 1000, 120, HARM_ALPHA)
    assert guard["ci"] == pytest.approx([centre - half, centre + half], rel=1e-9)
    assert guard["estimate"] == pytest.approx(0.10)
    assert got.reasons[0] == (
        f"error rate up +0.1000, interval [{centre - half:+.3f}, {centre + half:+.3f}] at "
        "alpha 0.0167 wholly above 0"
    )
    # The reported error_rate_diff stays at level alpha (narrower).
    reported = got.metrics["error_rate_diff"]["ci"]
    assert reported[0] > guard["ci"][0] and reported[1] < guard["ci"][1]


def test_any_clear_error_increase_is_harm_though_under_the_promotion_margin() -> None:
    # 2% -> 6% (+0.04, inside max_error_rate_increase 0.05), 2000 requests a arm.
    control, treatment = arm(2000, 40), arm(2000, 120)
    centre, half = rates_half(2000, 40, 2000, 120, HARM_ALPHA)
    assert centre - half > 0.02  # the hand-computed lower end at alpha / 3: about +0.025
    got = decide("t", cfg(), control, treatment, 8.0)
    assert (got.decision, got.rollback_cause) == ("rollback", "harm")
    # A tolerance below the lower end still rolls back; one above it does not.
    tol = cfg(harm_tolerance={"error_rate": 0.02})
    assert decide("t", tol, control, treatment, 8.0).rollback_cause == "harm"
    wide = decide("t", cfg(harm_tolerance={"error_rate": 0.03}), control, treatment, 8.0)
    assert wide.rollback_cause != "harm"
    assert wide.metrics["guardrails"]["error_rate"]["tolerance"] == 0.03
    # A test started under the old rules keeps them: harm needed the estimate above 0.05.
    legacy = cfg(decision_rules=1, max_latency_increase=None)
    assert decide("t", legacy, control, treatment, 8.0).rollback_cause != "harm"
    old_harm = decide("t", legacy, arm(1000, 20), arm(1000, 120), 1.0)
    assert old_harm.reasons[0].startswith("error rate +0.1000 exceeds the allowed +0.0500")


def test_harm_budget_is_split_across_the_set_guardrails() -> None:
    assert Rules.from_config(cfg()).harm_alpha == pytest.approx(0.05 / 3)
    assert Rules.from_config(cfg(max_latency_increase=None)).harm_alpha == 0.025
    absolute = Rules.from_config(cfg(max_latency_increase_ms=20))
    assert absolute.harm_alpha == pytest.approx(0.05 / 3)
    assert absolute.max_latency_increase is None  # the absolute margin replaces the relative
    bare = cfg(max_confidence_drop=None, max_latency_increase=None)
    assert Rules.from_config(bare).harm_alpha == 0.05


def test_a_clear_confidence_drop_is_harm_though_within_its_margin() -> None:
    # -0.01 (inside max_confidence_drop 0.02), se 0.00316: the interval at alpha / 3 lies
    # wholly below 0.
    got = decide("t", cfg(), arm(2000, conf=0.80), arm(2000, conf=0.79), 0.5)
    assert (got.decision, got.rollback_cause) == ("rollback", "harm")
    guard = got.metrics["guardrails"]["confidence"]
    half = t_half(math.sqrt(0.01 / 2000 * 2), 3998, HARM_ALPHA)
    assert guard["ci"] == pytest.approx([-0.01 - half, -0.01 + half], rel=1e-9)
    assert guard["ci"][1] < 0 and guard["margin"] == 0.02
    assert got.reasons[0].startswith("confidence down -0.010, interval [")
    assert got.reasons[0].endswith("at alpha 0.0167 wholly below 0")
    legacy = cfg(decision_rules=1, max_latency_increase=None)
    old = decide("t", legacy, arm(2000, conf=0.80), arm(2000, conf=0.79), 0.5)
    assert (old.decision, old.rollback_cause) == ("rollback", "futility")


def relative_interval(
    nc: int, mc: float, sc: float, nt: int, mt: float, st: float, alpha: float
) -> tuple[float, float]:
    """Delta-method interval of mt / mc - 1 by hand (fixed: Welch's dof of the means)."""
    va, vb = sc * sc / nc, st * st / nt
    dof = (va + vb) ** 2 / (va**2 / (nc - 1) + vb**2 / (nt - 1))
    se = math.sqrt(vb / mc**2 + mt**2 * va / mc**4)
    half = t_half(se, dof, alpha)
    return mt / mc - 1 - half, mt / mc - 1 + half


def test_latency_guardrail_is_on_by_default_with_a_relative_margin() -> None:
    control, treatment = arm(500, ms=100, ms_sd=30), arm(500, ms=160, ms_sd=30)
    got = decide("t", cfg(), control, treatment, 8.0)
    assert (got.decision, got.rollback_cause) == ("rollback", "harm")
    guard = got.metrics["guardrails"]["inference_time_ms"]
    assert (guard["scale"], guard["margin"], guard["harm"]) == ("relative", 0.1, True)
    want = relative_interval(500, 100, 30, 500, 160, 30, HARM_ALPHA)
    assert guard["ci"] == pytest.approx(list(want), rel=1e-9)
    assert guard["estimate"] == pytest.approx(0.6)
    assert "inference time up +60.0% of the control's mean" in got.reasons[0]
    absolute = decide("t", cfg(max_latency_increase_ms=20.0), control, treatment, 8.0)
    assert absolute.reasons[0].startswith("inference time up +60.0 ms, interval [")
    assert absolute.reasons[0].endswith("wholly above 0 ms")  # the units of its interval
    off = decide("t", cfg(max_latency_increase=None), control, treatment, 8.0)
    assert "inference_time_ms" not in off.metrics["guardrails"]
    assert off.rollback_cause != "harm"


def test_relative_latency_sequential_interval_by_hand() -> None:
    control, treatment = arm(400, ms=100, ms_sd=30), arm(600, ms=104, ms_sd=40)
    got = decide("t", cfg(method="sequential"), control, treatment, 8.0)
    guard = got.metrics["guardrails"]["inference_time_ms"]
    # eq. 9 of Waudby-Smith et al. on the delta-method variance, N = 1000 requests
    var = 1600 / 600 / 100**2 + 104**2 * 900 / 400 / 100**4
    n, alpha = 1000, HARM_ALPHA
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / 5000
    half = math.sqrt(var * n) * math.sqrt(
        2 * (n * rho2 + 1) * math.log(math.sqrt(n * rho2 + 1) / alpha) / (n * n * rho2)
    )
    assert guard["ci"] == pytest.approx([0.04 - half, 0.04 + half], rel=1e-9)


def test_relative_latency_interval_covers_at_its_level() -> None:
    # 2,000 simulated A/A-like tests with a true +5% (lognormal latency): the fixed 95%
    # delta-method interval covers the true ratio in 93-97% of them.
    rng = np.random.default_rng(11)
    covered = 0
    runs = 2000
    for _ in range(runs):
        a = rng.lognormal(math.log(100), 0.4, 300)
        b = rng.lognormal(math.log(105), 0.4, 300)
        got = differences(
            Moments(300, 0, 0.0, 0.0, float(a.sum()), float(a @ a)),
            Moments(300, 0, 0.0, 0.0, float(b.sum()), float(b @ b)),
            0.05,
            "fixed",
            5000,
        ).inference_time_relative
        assert got is not None
        covered += got.ci[0] <= 0.05 <= got.ci[1]
    assert 0.93 <= covered / runs <= 0.97


def test_absolute_latency_margin_replaces_the_relative_one() -> None:
    control, treatment = arm(500, ms=100, ms_sd=30), arm(500, ms=160, ms_sd=30)
    on = decide("t", cfg(max_latency_increase_ms=20), control, treatment, 8.0)
    assert (on.decision, on.rollback_cause) == ("rollback", "harm")
    guard = on.metrics["guardrails"]["inference_time_ms"]
    half = t_half(math.sqrt(900 / 500 * 2), 998, HARM_ALPHA)
    assert guard["ci"] == pytest.approx([60 - half, 60 + half], rel=1e-9)
    assert guard["scale"] == "absolute" and guard["non_inferior"] is False


def test_under_the_old_rules_a_guardrail_harms_only_beyond_its_margin() -> None:
    # Latency +26 ms, se 2.83: the interval at alpha (half 5.55) lies above the 20 ms margin,
    # at alpha / 3 (half 6.75) it does not.
    control, treatment = arm(100, ms=100, ms_sd=20), arm(100, ms=126, ms_sd=20)
    rules = cfg(max_latency_increase_ms=20, decision_rules=1)
    main = differences(control, treatment, 0.05, "fixed", 5000).inference_time_ms
    assert main.ci[0] > 20
    got = decide("t", rules, control, treatment, 8.0)
    assert got.metrics["guardrails"]["inference_time_ms"]["ci"][0] < 20
    assert got.rollback_cause != "harm"
    # the current rules: the interval lies wholly above 0, harm
    assert decide("t", cfg(max_latency_increase_ms=20), control, treatment, 8.0).rollback_cause == (
        "harm"
    )


# -- 2. promote --------------------------------------------------------------------------------


def test_promote_needs_every_set_guardrail_non_inferior() -> None:
    # +3% latency on 100 requests a arm: no clear harm, but the interval at alpha reaches past
    # the 10% margin, so not yet non-inferior.
    control = arm(100, conf=0.80, ms=100, ms_sd=30)
    treatment = arm(100, conf=0.85, ms=103, ms_sd=30)
    rules = cfg(min_requests=0)
    got = decide("t", rules, control, treatment, 8.0)
    high = relative_interval(100, 100, 30, 100, 103, 30, 0.05)[1]
    assert high > 0.1
    assert (got.decision, got.rollback_cause) == ("continue", None)
    assert got.reasons == [
        f"inference time may rise by up to {high:+.1%} of the control's mean, allowed +10%"
    ]
    loose = cfg(min_requests=0, max_latency_increase=0.2)
    assert decide("t", loose, control, treatment, 8.0).decision == "promote"
    # the absolute margin under the old rules
    control = arm(2000, conf=0.80, ms=100, ms_sd=30)
    treatment = arm(2000, conf=0.85, ms=119, ms_sd=30)
    legacy = {"decision_rules": 1, "max_latency_increase": None}
    half = t_half(math.sqrt(900 / 2000 * 2), 3998, 0.05)
    got = decide("t", cfg(max_latency_increase_ms=20, **legacy), control, treatment, 8.0)
    assert got.metrics["inference_time_ms_diff"]["ci"][1] == pytest.approx(19 + half)
    assert got.reasons == [f"inference time may rise by up to +{19 + half:.3f} ms, allowed +20 ms"]
    assert decide("t", cfg(max_latency_increase_ms=25, **legacy), control, treatment, 8.0).decision == (
        "promote"
    )


def test_promote_lists_every_unmet_condition() -> None:
    got = decide("t", cfg(), arm(300, conf=0.80), arm(300, conf=0.81), 3.0)
    assert got.decision == "continue"
    assert got.reasons[:2] == ["600 of 1000 requests", "4.0 days left"]
    assert "confidence +0.010, needs +0.020" in got.reasons
    assert got.recommendation == "Keep the test running: 600 of 1000 requests."


# -- 3. futility -------------------------------------------------------------------------------


def test_futility_rolls_back_when_the_gain_cannot_reach_the_minimum() -> None:
    # +0.005 with half-width 0.0062 (fixed, n = 2000 a arm): upper end 0.0112 < 0.02.
    got = decide("t", cfg(), arm(2000, conf=0.80), arm(2000, conf=0.805), 1.0)
    half = t_half(math.sqrt(0.01 / 2000 * 2), 3998, 0.05)
    assert got.metrics["confidence_diff"]["ci"][1] == pytest.approx(0.005 + half)
    assert (got.decision, got.rollback_cause) == ("rollback", "futility")
    assert got.reasons == [
        f"confidence gain at most +{0.005 + half:.3f} (interval upper end), cannot reach the "
        "required +0.020"
    ]
    # A wider interval (fewer requests) still reaches +0.02: keep going.
    wide = decide("t", cfg(), arm(200, conf=0.80), arm(200, conf=0.805), 1.0)
    assert (wide.decision, wide.rollback_cause) == ("continue", None)


def test_harm_is_checked_before_futility() -> None:
    got = decide("t", cfg(), arm(2000, 40), arm(2000, 240, conf=0.8), 1.0)
    assert got.rollback_cause == "harm"


# -- units, sample ratio, output ---------------------------------------------------------------


def users_arm(users: int, requests_each: int, conf: float, errors: int = 0) -> UserArm:
    """Every user sends the same requests with the same confidence (so D is constant)."""
    d = float(requests_each)
    m = conf * d
    # per-user metric spread: half the users 0.05 above, half below
    hi, lo = (conf + 0.05) * d, (conf - 0.05) * d
    msq = users / 2 * (hi * hi + lo * lo)
    conf_sums = RatioSums(users, users * m, msq, users * d, users * d * d, users * m * d)
    err = RatioSums(users, errors, errors, users * d, users * d * d, errors * d)
    time = RatioSums(
        users,
        users * 100 * d,
        users * (100 * d) ** 2,
        users * d,
        users * d * d,
        users * 100 * d * d,
    )
    return UserArm(err, conf_sums, time)


def test_user_level_sample_ratio_blocks_promotion() -> None:
    control, treatment = users_arm(1000, 5, 0.80), users_arm(1300, 5, 0.90)
    got = decide("t", cfg(), control, treatment, 8.0)
    srm = got.metrics["srm"]
    chi2 = 150**2 / 1150 * 2
    assert srm["p_value"] == pytest.approx(scipy.stats.chi2.sf(chi2, 1), rel=1e-9)
    assert srm["mismatch"] and srm["unit"] == "user" and srm["testable"]
    assert got.unit == "user" and got.decision == "continue"
    assert got.reasons[0].startswith("sample ratio mismatch p=")
    assert got.metrics["treatment"]["users"] == 1300


def test_without_user_ids_the_split_is_reported_untestable_and_does_not_block() -> None:
    # The same 5000 vs 6500 request counts would be a glaring mismatch per request.
    got = decide("t", cfg(), arm(5000, conf=0.80), arm(6500, conf=0.85), 8.0)
    srm = got.metrics["srm"]
    assert srm["p_value"] < 1e-20
    assert (srm["mismatch"], srm["judged"], srm["testable"]) == (False, False, False)
    assert srm["note"] == SRM_UNTESTABLE and srm["unit"] == "request"
    assert got.decision == "promote" and got.unit == "request"


def test_user_level_intervals_are_gbstats_ratio_intervals() -> None:
    by_kind = {v["kind"]: v for v in RATIO["vectors"] if v["alpha"] == 0.05}
    conf_v, time_v, err_v = by_kind["confidence"], by_kind["latency"], by_kind["errors"]
    arms = [
        UserArm(RatioSums(**err_v[a]), RatioSums(**conf_v[a]), RatioSums(**time_v[a]))
        for a in ("control", "treatment")
    ]
    for method in ("fixed", "sequential"):
        got = decide(
            "t", cfg(method=method, sequential_tuning=conf_v["sequential_tuning"]), *arms, 8.0
        )
        assert got.metrics["confidence_diff"]["ci"] == pytest.approx(conf_v[method]["ci"], rel=1e-6)
        assert got.metrics["confidence_diff"]["estimate"] == pytest.approx(conf_v["estimate"])
        timed = decide(
            "t", cfg(method=method, sequential_tuning=time_v["sequential_tuning"]), *arms, 8.0
        )
        assert timed.metrics["inference_time_ms_diff"]["ci"] == pytest.approx(
            time_v[method]["ci"], rel=1e-6
        )
        errs = decide(
            "t", cfg(method=method, sequential_tuning=err_v["sequential_tuning"]), *arms, 8.0
        )
        # Errors: the estimate is gbstats' raw ratio difference, the interval that of the
        # sums with one Agresti-Caffo pseudo-user a arm.
        assert errs.metrics["error_rate_diff"]["estimate"] == pytest.approx(err_v["estimate"])
        want = compare_ratio(
            arms[0].errors.agresti_caffo(),
            arms[1].errors.agresti_caffo(),
            0.05,
            method,
            err_v["sequential_tuning"],
        )
        assert errs.metrics["error_rate_diff"]["ci"] == pytest.approx(list(want.ci), rel=1e-12)
        assert want.ci == pytest.approx(err_v[method]["ci"], rel=0.05)  # a small adjustment


def test_request_level_intervals_are_the_gbstats_welch_intervals() -> None:
    vectors = json.loads((Path(__file__).parent / "data" / "ab_vectors.json").read_text())
    v = next(x for x in vectors["vectors"] if x["kind"] == "mean" and x["alpha"] == 0.05)
    c, t = v["control"], v["treatment"]
    for method in ("fixed", "sequential"):
        got = decide(
            "t",
            cfg(method=method, sequential_tuning=v["sequential_tuning"]),
            Moments(c["n"], 0, c["sum"], c["sum_squares"], 0.0, 0.0),
            Moments(t["n"], 0, t["sum"], t["sum_squares"], 0.0, 0.0),
            8.0,
        )
        assert got.metrics["confidence_diff"]["ci"] == pytest.approx(v[method]["ci"], rel=1e-6)


def test_error_rate_interval_is_clipped_to_minus_one_one() -> None:
    # 10 of 10 requests fail in control, none in treatment: the unclipped sequential interval
    # reaches below -1, an impossible difference of rates.
    raw = compare_rates(10, 10, 10, 0, 0.05, "sequential", 5000)
    assert raw.ci[0] < -1
    got = decide("t", cfg(method="sequential"), arm(10, 10), arm(10, 0), 0.0)
    lo, hi = got.metrics["error_rate_diff"]["ci"]
    assert lo == -1.0 and hi == pytest.approx(raw.ci[1]) and hi <= 1.0
    assert got.metrics["guardrails"]["error_rate"]["ci"][0] == -1.0


def test_every_existing_key_is_kept_and_new_ones_added() -> None:
    got = decide("t", cfg(max_latency_increase_ms=20), arm(600), arm(600), 2.0).to_dict()
    assert list(got)[:9] == [
        "test",
        "decision",
        "recommendation",
        "reasons",
        "method",
        "alpha",
        "requests",
        "days_elapsed",
        "metrics",
    ]
    assert {"rollback_cause", "unit"} <= got.keys()
    metrics = got["metrics"]
    assert {"control", "treatment", "error_rate_diff", "confidence_diff"} <= metrics.keys()
    assert {"inference_time_ms_diff", "srm", "guardrails"} <= metrics.keys()
    assert set(metrics["control"]) >= {
        "version",
        "requests",
        "error_rate",
        "avg_confidence",
        "avg_inference_time_ms",
    }
    assert {"p_value", "mismatch"} <= metrics["srm"].keys()
    for diff in ("error_rate_diff", "confidence_diff", "inference_time_ms_diff"):
        assert set(metrics[diff]) == {"estimate", "ci", "p_value"}
    for guard in metrics["guardrails"].values():
        assert {"estimate", "ci", "margin", "alpha"} <= guard.keys()
    assert set(metrics["guardrails"]) == {"error_rate", "confidence", "inference_time_ms"}
    json.dumps(got)


def test_mixed_units_are_refused() -> None:
    with pytest.raises(TypeError):
        decide("t", cfg(), arm(10), users_arm(10, 2, 0.8), 1.0)


# -- per-user totals ---------------------------------------------------------------------------


def test_user_totals_hand_checked_ratio_sums() -> None:
    totals = UserTotals()
    totals.add("control", "a", 100.0, 0.5, False)
    totals.add("control", "a", 120.0, 0.7, True)
    totals.add("control", 7, 90.0, 0.9, False)
    totals.add("control", "7", 110.0, 0.8, True)  # int 7 and "7" are one user
    assert totals.users("control") == 2 and totals.unit == "user"
    # users: a -> D=2, M=1.2 ; 7 -> D=2, M=1.7
    assert totals.ratio_sums("control", "confidence") == RatioSums(
        2, pytest.approx(2.9), pytest.approx(1.44 + 2.89), 4, 8, pytest.approx(5.8)
    )
    assert totals.ratio_sums("control", "errors") == RatioSums(2, 2, 2, 4, 8, 4)
    assert totals.ratio_sums("control", "inference_time_ms").m_sum == 420.0
    assert totals.arm("control").n == 4 and totals.arm("treatment").users == 0
    totals.add("treatment", None, 100.0, 0.5)
    assert totals.unit == "request" and totals.anonymous == {"control": 0, "treatment": 1}


def test_columns_single_adds_merge_and_round_trip_agree() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    variants = np.where(rng.random(n) < 0.3, "treatment", "control")
    ids = rng.integers(0, 400, n)
    ms, conf, err = rng.normal(100, 10, n), rng.random(n), rng.random(n) < 0.1
    one = UserTotals()
    for i in range(n):
        one.add(str(variants[i]), int(ids[i]), float(ms[i]), float(conf[i]), bool(err[i]))
    columns = UserTotals()
    columns.add_columns(variants, ids, ms, conf, err)
    first, second = UserTotals(), UserTotals()
    first.add_columns(variants[:1000], ids[:1000], ms[:1000], conf[:1000], err[:1000])
    second.add_columns(variants[1000:], ids[1000:].astype(str), ms[1000:], conf[1000:], err[1000:])
    first.merge(second)
    restored = UserTotals.from_dict(json.loads(json.dumps(first.to_dict())))
    for other in (columns, first, restored):
        for v in ("control", "treatment"):
            assert other.users(v) == one.users(v)
            for metric in ("errors", "confidence", "inference_time_ms"):
                a, b = one.ratio_sums(v, metric), other.ratio_sums(v, metric)
                assert np.allclose(a, b, rtol=1e-12)  # every field


def test_columns_with_anonymous_requests() -> None:
    totals = UserTotals()
    totals.add_columns(
        ["control", "treatment", "treatment"],
        ["u1", None, "u2"],
        [1, 2, 3],
        [0.1, 0.2, 0.3],
        [False] * 3,
    )
    assert totals.anonymous == {"control": 0, "treatment": 1}
    assert totals.users("treatment") == 1 and totals.unit == "request"
    merged = UserTotals()
    merged.merge(totals)
    assert merged.anonymous == {"control": 0, "treatment": 1} and merged.unit == "request"
    with pytest.raises(ValueError):
        totals.add_columns(["control"], ["u1", "u2"], [1], [0.1], [False])


def test_user_level_rules_wait_for_eight_users_a_arm() -> None:
    # 100% vs 0% errors, a glaring harm, but only 7 treatment users: the delta-method variance
    # of so few units is not trusted.
    few = decide("t", cfg(), users_arm(50, 5, 0.8), users_arm(7, 5, 0.8, errors=35), 1.0)
    assert (few.decision, few.rollback_cause) == ("continue", None)
    assert "treatment arm has 7 users, too few to compare" in few.reasons
    enough = decide("t", cfg(), users_arm(50, 5, 0.8), users_arm(8, 5, 0.8, errors=40), 1.0)
    assert (enough.decision, enough.rollback_cause) == ("rollback", "harm")


def test_analysis_arms_follow_the_data() -> None:
    moments = (arm(4), arm(4))
    assert analysis_arms(*moments, None) == moments
    totals = UserTotals()
    totals.add("control", "a", 100.0, 0.5)
    totals.add("treatment", "b", 100.0, 0.5)
    control, treatment = analysis_arms(*moments, totals)
    assert isinstance(control, UserArm) and treatment.n == 1
    totals.add("treatment", None, 100.0, 0.5)
    assert analysis_arms(*moments, totals) == moments


def test_columns_mixing_numeric_and_text_ids_with_anonymous_requests() -> None:
    # One column holding "a", 7, "7" and None: ids compare as text, so 7 and "7" are one user.
    totals = UserTotals()
    totals.add_columns(
        ["control"] * 4, ["a", 7, "7", None], [1.0, 2.0, 4.0, 8.0], [0.5] * 4, [False] * 4
    )
    assert totals.users("control") == 2 and totals.anonymous["control"] == 1
    n, time_sum, *_ = totals.ratio_sums("control", "inference_time_ms")
    assert (n, time_sum) == (2, 1.0 + 2.0 + 4.0)
