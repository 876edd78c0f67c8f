"""Pure statistics on summary numbers: Welch tests, confidence sequences, sample ratio mismatch.

These are GrowthBook's frequentist definitions (gbstats, absolute differences), so results
match gbstats to floating-point precision:
- fixed horizon: Welch's t test with Welch-Satterthwaite degrees of freedom;
- sequential: the asymptotic confidence sequence of Waudby-Smith et al. (2023),
  "Time-uniform central limit theory and asymptotic confidence sequences",
  arXiv:2103.06476, eqs. 9 (width), 155 (p-value) and 161 (tuning), valid under continuous
  monitoring, so a pipeline may evaluate as often as it likes;
- error rates: the same tests on proportions with the Agresti-Caffo adjustment
  (one error and two trials added to each arm).

Only the fixed method needs scipy (the t distribution); the default sequential method and the
sample ratio test use the math module alone, so `ab evaluate` starts fast.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple


# The statistics' value types are NamedTuples: immutable like a frozen dataclass, at a quarter
# of its import cost (every `ab evaluate` pays it at start-up).
class ArmStats(NamedTuple):
    """Mean and variance of one arm, with its sample size."""

    n: int
    mean: float
    variance: float

    @classmethod
    def from_sums(cls, n: int, total: float, sum_squares: float) -> ArmStats:
        """Sample mean and (n-1) sample variance from a sum and a sum of squares."""
        if n < 2:
            return cls(n, total / n if n else 0.0, 0.0)
        variance = max((sum_squares - total * total / n) / (n - 1), 0.0)
        return cls(n, total / n, variance)

    @classmethod
    def proportion(cls, n: int, events: int, agresti_caffo: bool = True) -> ArmStats:
        """A rate as a mean with variance p(1-p); Agresti-Caffo adds 1 event and 2 trials."""
        if agresti_caffo:
            n, events = n + 2, events + 1
        p = events / n if n else 0.0
        return cls(n, p, p * (1 - p))


class Difference(NamedTuple):
    """Treatment minus control: estimate, interval at level 1 - alpha, and p-value."""

    estimate: float
    ci: tuple[float, float]
    p_value: float

    def to_dict(self) -> dict[str, object]:
        return {"estimate": self.estimate, "ci": list(self.ci), "p_value": self.p_value}


# Two figures (means, weighted sums) closer than this, relative to the larger, are one figure
# computed two ways: the rounding of sums of millions of floats is below it (n * 2.2e-16 at
# n = 10^7), and no decision margin is anywhere near it.
ROUNDING = 1e-8


def settled(before: float, after: float) -> float:
    """after - before, or exactly 0 when the two differ by no more than rounding: two arms of
    one constant (confidence 0.9 in every request) must not differ by 1e-16, which an interval
    as narrow as their variance (itself rounding) would call harm."""
    difference = after - before
    if not math.isfinite(difference):  # an unbounded end stays unbounded
        return difference
    return 0.0 if abs(difference) <= ROUNDING * max(abs(before), abs(after)) else difference


def welch(control: ArmStats, treatment: ArmStats) -> tuple[float, float, float]:
    """Difference of means, its variance, and Welch-Satterthwaite degrees of freedom."""
    estimate = settled(control.mean, treatment.mean)
    if control.n < 2 or treatment.n < 2:
        return estimate, math.inf, 1.0
    va, vb = control.variance / control.n, treatment.variance / treatment.n
    variance = va + vb
    denominator = va * va / (control.n - 1) + vb * vb / (treatment.n - 1)
    dof = (
        variance * variance / denominator if denominator > 0 else float(control.n + treatment.n - 2)
    )
    return estimate, variance, dof


def fixed_test(control: ArmStats, treatment: ArmStats, alpha: float) -> Difference:
    """Welch's two-sided t test and the t interval at level 1 - alpha."""
    estimate, variance, dof = welch(control, treatment)
    if not _testable(control, treatment, variance):
        return _degenerate(estimate, variance)
    return _fixed_interval(estimate, variance, dof, alpha)


def _fixed_interval(estimate: float, variance: float, dof: float, alpha: float) -> Difference:
    from scipy.special import stdtr, stdtrit

    se = math.sqrt(variance)
    half = float(stdtrit(dof, 1 - alpha / 2)) * se
    # 2 * (1 - cdf) as gbstats computes it (so tiny p-values round to 0.0 as there).
    p_value = 2 * (1 - float(stdtr(dof, abs(estimate) / se)))
    return Difference(estimate, (estimate - half, estimate + half), min(max(p_value, 0.0), 1.0))


def sequential_rho(alpha: float, tuning: float) -> float:
    """Eq. 161: the mixing parameter that makes the sequence tightest near N = tuning."""
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)


def sequential_test(
    control: ArmStats, treatment: ArmStats, alpha: float, tuning: float
) -> Difference:
    """Asymptotic confidence sequence (eq. 9) and its always-valid p-value (eq. 155)."""
    estimate, variance, _dof = welch(control, treatment)
    if not _testable(control, treatment, variance):
        return _degenerate(estimate, variance)
    return _sequential_interval(estimate, variance, control.n + treatment.n, alpha, tuning)


def sequential_critical_value(n: float, alpha: float, tuning: float) -> float:
    """c(N): the confidence sequence's half-width in standard errors after N units (eq. 9
    with eq. 161's rho); the interval is the estimate +- c(N) se."""
    rho2 = sequential_rho(alpha, tuning) ** 2
    nr2p1 = n * rho2 + 1
    return math.sqrt(2 * nr2p1 * math.log(math.sqrt(nr2p1) / alpha) / (n * rho2))


def _sequential_interval(
    estimate: float, variance: float, n: int, alpha: float, tuning: float
) -> Difference:
    rho = sequential_rho(alpha, tuning)
    nr2p1 = n * rho * rho + 1
    s2 = variance * n
    half = math.sqrt(variance) * sequential_critical_value(n, alpha, tuning)
    # p = min(1, 1 / e-value), computed in logs so large effects do not overflow.
    log_evalue = rho * rho * (estimate * estimate * n * n / s2) / (2 * nr2p1) - 0.5 * math.log(
        nr2p1
    )
    # log_evalue >= -ln(N rho^2 + 1) / 2, so the exponential never overflows.
    p_value = min(1.0, math.exp(-log_evalue))
    return Difference(estimate, (estimate - half, estimate + half), p_value)


def interval_of(
    estimate: float,
    variance: float,
    n: int,
    alpha: float,
    method: str,
    tuning: float,
    parameters: int = 2,
) -> Difference:
    """The test's interval for an estimate with a given variance over n units: the
    confidence sequence (sequential), or the t interval with n - `parameters` degrees of
    freedom (fixed). An infinite variance (too few units) is an unbounded interval, a zero one
    an exact difference."""
    if not math.isfinite(variance) or variance <= 0 or n < 2:
        return _degenerate(estimate, variance if n >= 2 else math.inf)
    if method == "fixed":
        return _fixed_interval(estimate, variance, max(n - parameters, 1), alpha)
    return _sequential_interval(estimate, variance, n, alpha, tuning)


def compare(
    control: ArmStats, treatment: ArmStats, alpha: float, method: str, tuning: float
) -> Difference:
    if method == "fixed":
        return fixed_test(control, treatment, alpha)
    return sequential_test(control, treatment, alpha, tuning)


def compare_relative(
    control: ArmStats, treatment: ArmStats, alpha: float, method: str, tuning: float
) -> Difference:
    """Relative difference treatment / control - 1 of two means, by the delta method.

    Var = var_t / (n_t mu_c^2) + mu_t^2 var_c / (n_c mu_c^4), the first-order expansion of
    mu_t / mu_c (Deng, Knoblich, Lu 2018, "Applying the Delta Method in Metric Analytics",
    KDD, section 3; the form gbstats uses for relative effects); the interval is the same
    t interval or confidence sequence as the absolute difference's, on this variance (the
    fixed method keeps the absolute difference's Welch degrees of freedom).
    """
    _estimate, _variance, dof = welch(control, treatment)
    mc, mt = control.mean, treatment.mean
    if control.n < 2 or treatment.n < 2:
        return Difference(mt / mc - 1 if mc > 0 else 0.0, (-math.inf, math.inf), 1.0)
    if mc <= 0:  # a control that never took any time: only "no time either" is no rise
        exact = mt <= 0 and control.variance == 0 and treatment.variance == 0
        return _degenerate(0.0, 0.0 if exact else math.inf)
    estimate = mt / mc - 1 if settled(mc, mt) else 0.0
    variance = treatment.variance / (treatment.n * mc * mc) + mt * mt * control.variance / (
        control.n * mc**4
    )
    if variance <= 0:  # no variation in either arm: the ratio is exact
        return _degenerate(estimate, variance)
    if method == "fixed":
        return _fixed_interval(estimate, variance, dof, alpha)
    return _sequential_interval(estimate, variance, control.n + treatment.n, alpha, tuning)


def compare_rates(
    n_control: int,
    errors_control: int,
    n_treatment: int,
    errors_treatment: int,
    alpha: float,
    method: str,
    tuning: float,
) -> Difference:
    """Error-rate difference: interval and p-value Agresti-Caffo adjusted, estimate raw."""
    adjusted = compare(
        ArmStats.proportion(n_control, errors_control),
        ArmStats.proportion(n_treatment, errors_treatment),
        alpha,
        method,
        tuning,
    )
    raw = (errors_treatment / n_treatment if n_treatment else 0.0) - (
        errors_control / n_control if n_control else 0.0
    )
    return Difference(raw, adjusted.ci, adjusted.p_value)


def _testable(control: ArmStats, treatment: ArmStats, variance: float) -> bool:
    """A variance to build an interval on: finite (each arm has 2 units) and not zero."""
    return math.isfinite(variance) and variance > 0


def _degenerate(estimate: float, variance: float) -> Difference:
    """Too little data (an arm under 2 units: an unbounded interval that no rule can act on),
    or no variation in either arm of at least 2 units: the difference is exact (a constant
    latency in both arms is no rise, and does not hold a promotion back forever)."""
    if variance == 0:
        return Difference(estimate, (estimate, estimate), 0.0 if estimate else 1.0)
    return Difference(estimate, (-math.inf, math.inf), 1.0)


class SampleRatio(NamedTuple):
    """Pearson chi-square test of the arm counts against the configured split."""

    p_value: float
    mismatch: bool
    judged: bool

    def to_dict(self) -> dict[str, object]:
        return {"p_value": self.p_value, "mismatch": self.mismatch, "judged": self.judged}


SRM_THRESHOLD = 0.001
SRM_MIN_PER_ARM = 8


def sample_ratio_mismatch(
    n_control: int, n_treatment: int, treatment_share: float, threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Chi-square (1 df) p-value of the observed split; p < `threshold` (0.001) is a mismatch.

    Not judged below 8 requests per arm, where the chi-square approximation is poor.
    """
    total = n_control + n_treatment
    if total == 0 or not 0 < treatment_share < 1:
        return SampleRatio(1.0, False, False)
    expected_t = total * treatment_share
    expected_c = total - expected_t
    chi2 = (n_treatment - expected_t) ** 2 / expected_t + (n_control - expected_c) ** 2 / expected_c
    p_value = math.erfc(math.sqrt(chi2 / 2))  # the chi-square survival function at 1 df
    judged = min(n_control, n_treatment) >= SRM_MIN_PER_ARM
    return SampleRatio(p_value, judged and p_value < threshold, judged)


def ks_two_sample(a: Any, b: Any) -> tuple[float, float]:
    """Two-sided two-sample Kolmogorov-Smirnov statistic D and p-value, as scipy.stats.ks_2samp
    (`method="auto"`), computed in `ks.py`: no check pays the 0.5 s import of scipy.stats."""
    import numpy as np

    from .ks import ecdf_distances, ks_two_sample_pvalue

    a, b = np.sort(a), np.sort(b)
    d, _area = ecdf_distances(a, b)
    return ks_two_sample_pvalue(len(a), len(b), d)


class RatioSums(NamedTuple):
    """One arm's sums over units (users) for a ratio metric sum(M) / sum(D).

    Per user u, M_u is the metric summed over u's requests and D_u their count; these are
    the sufficient statistics of gbstats' `RatioStatistic` (n = users).
    """

    users: int
    m_sum: float
    m_sum_squares: float
    d_sum: float
    d_sum_squares: float
    m_d_sum_of_products: float

    @classmethod
    def of(cls, m: Any, d: Any) -> RatioSums:
        """The sums of per-user numpy arrays M and D (the same length; none: all zero)."""
        if not len(m):
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            len(m), float(m.sum()), float(m @ m), float(d.sum()), float(d @ d), float(m @ d)
        )

    def arm_stats(self) -> ArmStats:
        """sum(M)/sum(D) with its delta-method variance per unit, as gbstats computes them.

        Var = V_M / mu_D^2 + mu_M^2 V_D / mu_D^4 - 2 C mu_M / mu_D^3 with (n-1) sample
        (co)variances; divided by n it is the variance of the ratio estimate.
        """
        n = self.users
        if n < 1 or self.d_sum == 0:
            return ArmStats(n, 0.0, 0.0)
        mean = self.m_sum / self.d_sum
        if n < 2:
            return ArmStats(n, mean, 0.0)
        mu_m, mu_d = self.m_sum / n, self.d_sum / n
        var_m = (self.m_sum_squares - self.m_sum * self.m_sum / n) / (n - 1)
        var_d = (self.d_sum_squares - self.d_sum * self.d_sum / n) / (n - 1)
        cov = (self.m_d_sum_of_products - self.m_sum * self.d_sum / n) / (n - 1)
        variance = var_m / mu_d**2 + mu_m**2 / mu_d**4 * var_d - 2 * cov * mu_m / mu_d**3
        return ArmStats(n, mean, max(variance, 0.0))

    def agresti_caffo(self) -> RatioSums:
        """The sums with one pseudo-user of 1 event in 2 requests, so a zero-event arm has a
        real interval (the unit-level form of adding 1 event and 2 trials)."""
        return RatioSums(
            self.users + 1,
            self.m_sum + 1,
            self.m_sum_squares + 1,
            self.d_sum + 2,
            self.d_sum_squares + 4,
            self.m_d_sum_of_products + 2,
        )


def compare_ratio(
    control: RatioSums, treatment: RatioSums, alpha: float, method: str, tuning: float
) -> Difference:
    """Difference of ratio metrics, users as units (sequential N = users of both arms)."""
    return compare(control.arm_stats(), treatment.arm_stats(), alpha, method, tuning)

