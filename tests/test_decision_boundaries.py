"""Every decision boundary on intervals given by hand: each test holds a rule exactly at its
threshold and just past it, so flipping a comparison (`<` for `<=`, a day off, an interval's
end for its estimate) fails here, in milliseconds, not only in a slow simulation."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlops_cli.decision import (
    Differences,
    Rules,
    UserArm,
    Verdict,
    decide,
    differences,
    guardrails,
    judge,
)
from mlops_cli.moments import Moments
from mlops_cli.stats import (
    ArmStats,
    Difference,
    RatioSums,
    SampleRatio,
    compare,
    compare_relative,
    sample_ratio_mismatch,
)
from tests.test_decision import BASE  # the same test configuration

LEGACY = {"decision_rules": 1, "max_latency_increase": None}
NO_SRM = {"mismatch": False, "p_value": 1.0}


def iv(lo: float, hi: float, estimate: float | None = None) -> Difference:
    """An interval given by hand (its estimate the midpoint unless given)."""
    return Difference((lo + hi) / 2 if estimate is None else estimate, (lo, hi), 0.5)


def diffs(
    errors: Difference | None = None,
    confidence: Difference | None = None,
    latency: Difference | None = None,
    relative: Difference | None = None,
) -> Differences:
    """A treatment that would be promoted: +0.05 confidence, no harm, every margin met."""
    return Differences(
        errors or iv(-0.01, 0.01, 0.0),
        confidence or iv(0.03, 0.07, 0.05),
        latency or iv(-2.0, 2.0, 0.0),
        relative or iv(-0.02, 0.02, 0.0),
    )


def verdict(
    main: Differences,
    at_harm: Differences | None = None,
    days: float = 7.0,
    n: int = 500,
    **config: Any,
) -> Verdict:
    rules = Rules.from_config({**BASE, **config})
    guards = guardrails(rules, main, at_harm or main, 100.0)
    return judge("t", rules, Moments(n), Moments(n), days, main, guards, NO_SRM)


def test_the_baseline_is_promoted() -> None:
    assert verdict(diffs()).decision == "promote"


# -- harm: the interval at alpha/k wholly past 0 (rules 2) -------------------------------------


def harmed(at_harm: Differences, **config: Any) -> bool:
    got = verdict(diffs(), at_harm, **config)
    return (got.decision, got.cause) == ("rollback", "harm")


def test_error_harm_needs_the_lower_end_above_0_not_at_it() -> None:
    assert not harmed(diffs(errors=iv(0.0, 0.08)))
    assert harmed(diffs(errors=iv(1e-9, 0.08)))
    # the estimate alone, however large, is not harm
    assert not harmed(diffs(errors=iv(-1e-9, 0.5, 0.3)))


def test_error_harm_tolerance_is_exclusive() -> None:
    tol = {"harm_tolerance": {"error_rate": 0.01}}
    assert not harmed(diffs(errors=iv(0.01, 0.08)), **tol)
    assert harmed(diffs(errors=iv(0.010001, 0.08)), **tol)


def test_confidence_harm_needs_the_upper_end_below_0_not_at_it() -> None:
    assert not harmed(diffs(confidence=iv(-0.05, 0.0)))
    assert harmed(diffs(confidence=iv(-0.05, -1e-9)))
    tol = {"harm_tolerance": {"confidence": 0.25}}
    assert not harmed(diffs(confidence=iv(-0.5, -0.25)), **tol)
    assert harmed(diffs(confidence=iv(-0.5, -0.250001)), **tol)


def test_relative_latency_harm_needs_the_lower_end_above_0_not_at_it() -> None:
    assert not harmed(diffs(relative=iv(0.0, 0.2)))
    assert harmed(diffs(relative=iv(1e-9, 0.2)))
    tol = {"harm_tolerance": {"inference_time_ms": 0.05}}
    assert not harmed(diffs(relative=iv(0.05, 0.2)), **tol)
    assert harmed(diffs(relative=iv(0.050001, 0.2)), **tol)


def test_absolute_latency_harm_tolerance_is_a_share_of_the_control_mean() -> None:
    absolute = {"max_latency_increase_ms": 20.0}
    assert not harmed(diffs(latency=iv(0.0, 9.0)), **absolute)
    assert harmed(diffs(latency=iv(1e-9, 9.0)), **absolute)
    # 5% of the control's 100 ms: 5 ms
    tol = {**absolute, "harm_tolerance": {"inference_time_ms": 0.05}}
    assert not harmed(diffs(latency=iv(5.0, 9.0)), **tol)
    assert harmed(diffs(latency=iv(5.000001, 9.0)), **tol)


def test_harm_is_judged_on_the_alpha_over_k_intervals_not_those_at_alpha() -> None:
    main = diffs(errors=iv(0.01, 0.04))  # at alpha: wholly above 0
    got = verdict(main, diffs(errors=iv(-0.001, 0.05)))
    assert got.cause != "harm"
    assert verdict(main, diffs(errors=iv(0.001, 0.05))).cause == "harm"


def test_harm_waits_for_two_requests_a_arm() -> None:
    rules = Rules.from_config(BASE)
    bad = diffs(errors=iv(0.5, 0.9))
    guards = guardrails(rules, bad, bad, 100.0)
    one = judge("t", rules, Moments(1), Moments(500), 7.0, bad, guards, NO_SRM)
    assert one.decision == "continue"
    assert "control arm has 1 requests, too few to compare" in one.reasons
    two = judge("t", rules, Moments(2), Moments(500), 7.0, bad, guards, NO_SRM)
    assert (two.decision, two.cause) == ("rollback", "harm")


# -- harm under the rules a test started with before schema 4 ----------------------------------


def test_legacy_error_harm_needs_the_estimate_above_the_allowance_and_the_interval_above_0() -> (
    None
):
    assert not harmed(diffs(errors=iv(0.01, 0.09, 0.05)), **LEGACY)
    assert harmed(diffs(errors=iv(0.01, 0.09, 0.050001)), **LEGACY)
    assert not harmed(diffs(errors=iv(0.0, 0.2, 0.1)), **LEGACY)
    assert harmed(diffs(errors=iv(1e-9, 0.2, 0.1)), **LEGACY)


def test_legacy_guardrails_harm_beyond_their_margins() -> None:
    assert not harmed(diffs(confidence=iv(-0.1, -0.02)), **LEGACY)
    assert harmed(diffs(confidence=iv(-0.1, -0.020001)), **LEGACY)
    absolute = {**LEGACY, "max_latency_increase_ms": 20.0}
    assert not harmed(diffs(latency=iv(20.0, 30.0)), **absolute)
    assert harmed(diffs(latency=iv(20.000001, 30.0)), **absolute)


# -- promote -----------------------------------------------------------------------------------


def test_promote_at_exactly_min_requests_not_one_fewer() -> None:
    assert verdict(diffs(), n=500).decision == "promote"  # 1000 of 1000
    got = Rules.from_config(BASE)
    main = diffs()
    guards = guardrails(got, main, main, 100.0)
    short = judge("t", got, Moments(500), Moments(499), 7.0, main, guards, NO_SRM)
    assert short.decision == "continue" and short.reasons == ["999 of 1000 requests"]


def test_promote_when_the_duration_has_passed_not_a_day_or_an_hour_before() -> None:
    assert verdict(diffs(), days=7.0).decision == "promote"
    assert verdict(diffs(), days=6.5).reasons == ["0.5 days left"]
    assert verdict(diffs(), days=6.99).reasons == ["0.0 days left"]


def test_promote_needs_the_gain_at_least_the_minimum() -> None:
    assert verdict(diffs(confidence=iv(0.01, 0.03, 0.02))).decision == "promote"
    got = verdict(diffs(confidence=iv(0.01, 0.03, 0.0199)))
    assert got.reasons == ["confidence +0.020, needs +0.020"]


def test_promote_needs_the_confidence_interval_wholly_above_0() -> None:
    got = verdict(diffs(confidence=iv(0.0, 0.1, 0.05)))
    assert got.decision == "continue"
    assert got.reasons == ["confidence interval [+0.000, +0.100] not wholly above 0"]
    assert verdict(diffs(confidence=iv(1e-9, 0.1, 0.05))).decision == "promote"


def test_promote_needs_the_error_interval_within_the_allowance() -> None:
    assert verdict(diffs(errors=iv(-0.01, 0.05, 0.0))).decision == "promote"
    got = verdict(diffs(errors=iv(-0.01, 0.050001, 0.0)))
    assert got.reasons == ["error rate may rise by up to +0.050, allowed +0.050"]


def test_promote_needs_latency_within_its_margin() -> None:
    assert verdict(diffs(relative=iv(-0.1, 0.1))).decision == "promote"
    got = verdict(diffs(relative=iv(-0.1, 0.100001)))
    assert got.reasons == ["inference time may rise by up to +10.0% of the control's mean, allowed +10%"]
    absolute = {"max_latency_increase_ms": 20.0}
    assert verdict(diffs(latency=iv(-20.0, 20.0)), **absolute).decision == "promote"
    assert verdict(diffs(latency=iv(-20.0, 20.000001)), **absolute).decision == "continue"


def test_confidence_non_inferiority_at_its_margin() -> None:
    rules = Rules.from_config(BASE)
    for lo, expected in ((-0.02, True), (-0.020001, False)):
        main = diffs(confidence=iv(lo, 0.1))
        (confidence,) = [g for g in guardrails(rules, main, main, 100.0) if g.name == "confidence"]
        assert confidence.non_inferior is expected


def test_a_margin_met_exactly_in_floating_point_is_met() -> None:
    """Constant arms make exact intervals: 110 ms over 100 ms is +10% (0.10000000000000009 as
    computed), 0.88 against 0.9 is -0.02 (-0.020000000000000018), a mean 20 ms above another
    is +20 ms (20.000000000000004);
    each exactly at its margin, so within it. A true excess (1e-6) still is not."""
    rules = Rules.from_config(BASE)
    for (lo, hi), expected in (((0.88 - 0.9, 0.1), True), ((-0.0200001, 0.1), False)):
        main = diffs(confidence=iv(lo, hi))
        (confidence,) = [g for g in guardrails(rules, main, main, 100.0) if g.name == "confidence"]
        assert confidence.non_inferior is expected
    assert 110 / 100 - 1 > 0.1 and 0.88 - 0.9 < -0.02  # what floating point makes of them
    harmless = diffs()  # the harm test's intervals (at alpha/k) hold 0
    rise = 110 / 100 - 1
    assert verdict(diffs(relative=iv(-0.1, rise)), harmless).decision == "promote"
    assert verdict(diffs(relative=iv(-0.1, 0.100001)), harmless).decision == "continue"
    absolute = {"max_latency_increase_ms": 20.0}
    exact = (90 / 7 + 20) - 90 / 7  # 20.000000000000004
    assert exact > 20
    assert verdict(diffs(latency=iv(-20.0, exact)), harmless, **absolute).decision == "promote"


# -- futility ----------------------------------------------------------------------------------


def test_futility_when_the_upper_end_is_below_the_minimum_not_at_it() -> None:
    at = verdict(diffs(confidence=iv(-0.02, 0.02, 0.0)))
    assert (at.decision, at.cause) == ("continue", None)
    below = verdict(diffs(confidence=iv(-0.02, 0.019999, 0.0)))
    assert (below.decision, below.cause) == ("rollback", "futility")


# -- intervals ---------------------------------------------------------------------------------


def welch_ci(a: list[float], b: list[float], alpha: float) -> tuple[float, float]:
    """Welch's t interval of mean(b) - mean(a) by hand (scipy's t quantile)."""
    import scipy.stats

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, dof)) * math.sqrt(va + vb)
    return mb - ma - half, mb - ma + half


@pytest.mark.parametrize("method", ["fixed", "sequential"])
def test_an_arm_under_two_units_has_no_interval_two_units_do(method: str) -> None:
    one_c, one_t = ArmStats.from_sums(1, 0.7, 0.49), ArmStats.from_sums(1, 0.9, 0.81)
    for got in (
        compare(one_c, one_t, 0.05, method, 5000),
        compare_relative(one_c, one_t, 0.05, method, 5000),
        compare(ArmStats.from_sums(1, 0.7, 0.49), ArmStats(50, 0.8, 0.01), 0.05, method, 5000),
    ):
        assert got.ci == (-math.inf, math.inf) and got.p_value == 1.0
    a, b = [0.6, 0.8], [0.8, 1.2]
    two = compare(
        ArmStats.from_sums(2, sum(a), sum(x * x for x in a)),
        ArmStats.from_sums(2, sum(b), sum(x * x for x in b)),
        0.05,
        method,
        5000,
    )
    assert math.isfinite(two.ci[0]) and two.ci[0] < two.ci[1]
    if method == "fixed":
        assert two.ci == pytest.approx(welch_ci(a, b, 0.05), rel=1e-9)
    relative = compare_relative(
        ArmStats.from_sums(2, sum(a), sum(x * x for x in a)),
        ArmStats.from_sums(2, sum(b), sum(x * x for x in b)),
        0.05,
        method,
        5000,
    )
    # 1.0 / 0.7 - 1, with a finite interval around it
    assert relative.estimate == pytest.approx(1.0 / 0.7 - 1)
    assert -math.inf < relative.ci[0] < relative.estimate < relative.ci[1] < math.inf


@pytest.mark.parametrize("method", ["fixed", "sequential"])
def test_arms_without_variation_give_the_exact_difference(method: str) -> None:
    # every value the same in each arm (binary-exact): no uncertainty, the interval is a point
    c, t = ArmStats.from_sums(5, 3.75, 2.8125), ArmStats.from_sums(5, 2.5, 1.25)
    assert (c.variance, t.variance) == (0.0, 0.0)
    got = compare(c, t, 0.05, method, 5000)
    assert got == Difference(-0.25, (-0.25, -0.25), 0.0)
    ratio = compare_relative(c, t, 0.05, method, 5000)
    assert ratio.ci == (ratio.estimate, ratio.estimate) and ratio.estimate == pytest.approx(-1 / 3)
    # the same value in both arms: exactly no difference (no harm, and within any margin:
    # a constant latency must not hold a promotion back forever), p-value 1
    same = compare(c, c, 0.05, method, 5000)
    assert same == Difference(0.0, (0.0, 0.0), 1.0)
    assert compare_relative(c, c, 0.05, method, 5000) == Difference(0.0, (0.0, 0.0), 1.0)
    zero = ArmStats.from_sums(5, 0.0, 0.0)  # a latency never measured: 0 ms every time
    assert compare_relative(zero, zero, 0.05, method, 5000) == Difference(0.0, (0.0, 0.0), 1.0)
    assert compare_relative(zero, c, 0.05, method, 5000).ci == (-math.inf, math.inf)


def test_one_user_a_arm_has_no_interval() -> None:
    one = RatioSums(1, 4.0, 16.0, 5.0, 25.0, 20.0)
    other = RatioSums(1, 3.0, 9.0, 5.0, 25.0, 15.0)
    arm_c = UserArm(one, one, one)
    arm_t = UserArm(other, other, other)
    got = differences(arm_c, arm_t, 0.05, "sequential", 5000)
    assert got.confidence.estimate == pytest.approx(3 / 5 - 4 / 5)
    assert got.confidence.ci == (-math.inf, math.inf)
    assert got.inference_time_ms.ci == (-math.inf, math.inf)
    assert got.inference_time_relative is not None
    assert got.inference_time_relative.ci == (-math.inf, math.inf)


def test_two_users_a_arm_have_an_interval() -> None:
    # users (M, D): control (4, 5), (2, 5); treatment (3, 5), (5, 5): D constant, so the
    # delta-method variance is that of M / 5, and the fixed interval is Welch's on M / 5.
    control = RatioSums(2, 6.0, 20.0, 10.0, 50.0, 30.0)
    treatment = RatioSums(2, 8.0, 34.0, 10.0, 50.0, 40.0)
    got = differences(
        UserArm(control, control, control), UserArm(treatment, treatment, treatment), 0.05,
        "fixed", 5000,
    )
    assert got.confidence.ci == pytest.approx(welch_ci([0.8, 0.4], [0.6, 1.0], 0.05), rel=1e-9)


def test_error_rate_interval_is_clipped_above_at_one() -> None:
    # none of 10 control requests fail, all 10 treatment ones do: the unclipped sequential
    # interval reaches above +1, an impossible difference of rates.
    got = decide("t", {**BASE, "method": "sequential"}, Moments(10, 0), Moments(10, 10), 0.0)
    lo, hi = got.metrics["error_rate_diff"]["ci"]
    assert hi == 1.0 and -1.0 < lo < 1.0
    assert got.metrics["guardrails"]["error_rate"]["ci"][1] == 1.0


def test_sample_ratio_is_not_judged_against_a_split_of_0_or_1() -> None:
    for share in (0.0, 1.0):
        assert sample_ratio_mismatch(10, 10, share) == SampleRatio(1.0, False, False)
    assert sample_ratio_mismatch(0, 0, 0.5) == SampleRatio(1.0, False, False)


def test_the_old_rules_name_each_guardrail_in_their_reasons() -> None:
    confidence = verdict(diffs(), diffs(confidence=iv(-0.1, -0.05, -0.075)), **LEGACY)
    assert confidence.reasons[0].startswith(
        "confidence -0.075 is worse than the allowed drop -0.020, interval [-0.100, -0.050]"
    )
    absolute = {**LEGACY, "max_latency_increase_ms": 20.0}
    latency = verdict(diffs(), diffs(latency=iv(25.0, 35.0)), **absolute)
    assert latency.reasons[0].startswith("inference time +30.0 ms is worse than the allowed +20 ms")


def test_relative_difference_without_a_positive_control_mean_has_no_interval() -> None:
    zero = ArmStats(100, 0.0, 1.0)
    got = compare_relative(zero, ArmStats(100, 5.0, 1.0), 0.05, "fixed", 5000)
    assert got.ci == (-math.inf, math.inf)
