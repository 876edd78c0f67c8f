"""How many users and days an A/B test needs to promote a given gain, and the reverse.

Pure functions of summary numbers (no I/O). The test analysed is the project's default: the
confidence gain, users as units (a ratio of per-user sums, delta-method variance), judged by
the asymptotic confidence sequence of `stats.sequential_test` (Waudby-Smith et al. 2023,
arXiv:2103.06476, eq. 9 with the tuning of eq. 161). With N users in all, a share p of them in
the treatment and a per-user standard deviation sigma in each arm:

    se(N)   = sigma * sqrt(1 / (N p (1 - p)))                 the estimate's standard error
    c(N)    = sqrt(2 (N rho^2 + 1) ln(sqrt(N rho^2 + 1) / alpha) / (N rho^2))
    half(N) = c(N) * se(N)                                    the sequence's half-width

Promotion needs the interval wholly above 0 and the estimate at least `min_effect` (the test's
`min_confidence_improvement`), so with a true gain delta the chance of promoting at a look at
N users is, for a normal estimate,

    power(N) = Phi((delta - max(half(N), min_effect)) / se(N))

`required_users` is the smallest N with power(N) >= the power asked for (and at least 8 users
in each arm, the fewest the rules act on); `detectable_effect` inverts it for a given N:
delta = max(half(N), min_effect) + z_power se(N). The chance at one look is a lower bound for
the chance over daily looks up to it. Sources and a check by simulation: docs/decisions.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import ValidationError
from .results import MappingResult
from .stats import RatioSums, sequential_critical_value

if TYPE_CHECKING:
    from statistics import NormalDist

MIN_USERS_PER_ARM = 8  # as decision.MIN_USERS_PER_ARM: no rule acts on fewer
MAX_USERS = 10**12  # beyond this a plan is not a plan


class PlanInputs(NamedTuple):
    """What a plan needs to know about the traffic: per-user spread and arrival rate."""

    user_sd: float  # sd of one user's contribution to the ratio (delta method), per user
    requests_per_user: float
    users_per_day: float
    source: str  # where the numbers come from ("given", or "test NAME")
    request_sd: float | None = None  # per-request sd, when estimated from a log
    correlation: float | None = None  # intra-user correlation implied by the two sds


@dataclass
class Plan(MappingResult):
    """Users and days a test needs for `effect` at `power` (or the effect `days` can detect)."""

    metric: str
    effect: float
    power: float
    alpha: float
    treatment_traffic_pct: float
    sequential_tuning: float
    min_effect: float
    users: int  # both arms
    users_control: int
    users_treatment: int
    requests: int
    days: float  # days of traffic to reach `users` at `users_per_day`
    days_needed: float  # the test's length: also its duration_days and min_requests
    duration_days: float
    min_requests: int
    user_sd: float
    requests_per_user: float
    users_per_day: float
    source: str
    request_sd: float | None = None
    correlation: float | None = None
    given_days: float | None = None  # set when the plan answers "what can N days detect"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line a person can act on."""
        if self.given_days is not None:
            head = (
                f"in {self.given_days:g} days (~{self.users:,} users) the test promotes a "
                f"confidence gain of {self.effect:+.4f} with {self.power:.0%} power"
            )
        else:
            head = (
                f"a confidence gain of {self.effect:+.4f} needs {self.users:,} users "
                f"({self.users_treatment:,} treatment), about {self.requests:,} requests: "
                f"{self.days_needed:.1f} days at {self.users_per_day:,.0f} users a day, for "
                f"{self.power:.0%} power"
            )
        return f"{head} (per-user sd {self.user_sd:.4g}, from {self.source})"


def _normal() -> NormalDist:
    from statistics import NormalDist  # imported when a plan is made, not at start-up

    return NormalDist()


# c(N) at N users in all: the project's sequential interval is the estimate +- c(N) se(N).
critical_value = sequential_critical_value


def standard_error(users: float, user_sd: float, share: float) -> float:
    """se(N) of the difference of two arms' ratio means, a share `share` in the treatment."""
    return user_sd / math.sqrt(users * share * (1 - share))


def power_at(
    users: float,
    effect: float,
    user_sd: float,
    share: float,
    alpha: float,
    tuning: float,
    min_effect: float = 0.0,
) -> float:
    """The chance that a look at `users` users promotes a true gain `effect`."""
    se, bar = _promotion_bar(users, user_sd, share, alpha, tuning, min_effect)
    return _normal().cdf((effect - bar) / se)


def _promotion_bar(
    users: float, user_sd: float, share: float, alpha: float, tuning: float, min_effect: float
) -> tuple[float, float]:
    """(se(N), the least estimate a look at N users promotes: above the interval's half-width
    and at least `min_effect`)."""
    se = standard_error(users, user_sd, share)
    return se, max(critical_value(users, alpha, tuning) * se, min_effect)


def smallest_users(share: float) -> int:
    """The fewest users in all that put 8 in the smaller arm."""
    return math.ceil(MIN_USERS_PER_ARM / min(share, 1 - share) - 1e-9)


def required_users(
    effect: float,
    user_sd: float,
    share: float,
    alpha: float,
    power: float,
    tuning: float,
    min_effect: float = 0.0,
) -> int:
    """The smallest N (users, both arms) with power_at(N) >= power; ValidationError if none."""
    if effect <= max(min_effect, 0.0):
        raise ValidationError(
            f"the effect {effect:g} must be above 0 and above min_confidence_improvement "
            f"{min_effect:g}: a test never promotes a smaller gain"
        )

    def enough(n: int) -> bool:
        return power_at(n, effect, user_sd, share, alpha, tuning, min_effect) >= power

    low = smallest_users(share)
    if enough(low):
        return low
    high = low
    while not enough(high):  # power rises with N: sqrt(N) outgrows c(N) ~ sqrt(ln N)
        if high > MAX_USERS:
            raise ValidationError(
                f"no test of fewer than {MAX_USERS:,} users reaches {power:.0%} power for an "
                f"effect of {effect:g}; plan for a larger effect"
            )
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return high


def detectable_effect(
    users: float,
    user_sd: float,
    share: float,
    alpha: float,
    power: float,
    tuning: float,
    min_effect: float = 0.0,
) -> float:
    """The true gain a look at `users` users promotes with probability `power`."""
    se, bar = _promotion_bar(users, user_sd, share, alpha, tuning, min_effect)
    return bar + _normal().inv_cdf(power) * se


def inputs_from_arms(
    arms: list[RatioSums], request_sd: float | None, days: float, source: str
) -> PlanInputs:
    """Plan inputs from a past test's per-user sums of confidence (one `RatioSums` an arm).

    The per-user sd pools the arms' delta-method variances (each about its own arm's mean).
    Under a random user effect (share rho of the per-request variance s^2), a user with D
    requests contributes a variance s^2 (rho D^2 + (1 - rho) D) about the mean, so
    sigma_u^2 = s^2 (rho E[D^2] + (1 - rho) E[D]) / E[D]^2, which gives the implied rho.
    """
    users = sum(a.users for a in arms)
    counted = [a for a in arms if a.users >= 2]
    if not counted or users < 2 * MIN_USERS_PER_ARM:
        raise ValidationError(
            f"{source} has {users} users with ids: too few to estimate the per-user variance"
        )
    pooled = sum((a.users - 1) * a.arm_stats().variance for a in counted) / sum(
        a.users - 1 for a in counted
    )
    requests = sum(a.d_sum for a in arms)
    mean_d = requests / users
    mean_d2 = sum(a.d_sum_squares for a in arms) / users
    correlation = None
    if request_sd is not None and request_sd > 0 and mean_d2 > mean_d:
        ratio = pooled * mean_d * mean_d / request_sd**2
        correlation = min(max((ratio - mean_d) / (mean_d2 - mean_d), 0.0), 1.0)
    if days <= 0:
        raise ValidationError(f"{source} covers no time: users per day cannot be estimated")
    return PlanInputs(math.sqrt(pooled), mean_d, users / days, source, request_sd, correlation)


def make_plan(
    inputs: PlanInputs,
    *,
    effect: float | None,
    days: float | None,
    treatment_traffic_pct: float,
    alpha: float,
    power: float,
    sequential_tuning: float,
    min_effect: float,
    duration_days: float = 0.0,
    min_requests: int = 0,
) -> Plan:
    """The plan for `effect` (users and days needed) or for `days` (the effect detectable)."""
    _check(inputs, effect, days, treatment_traffic_pct, alpha, power)
    share = treatment_traffic_pct / 100
    args = (inputs.user_sd, share, alpha, power, sequential_tuning, min_effect)
    if effect is not None:
        users = required_users(effect, *args)
    else:
        days = float(days or 0.0)
        users = max(math.floor(inputs.users_per_day * days), 1)
        if users < smallest_users(share):
            raise ValidationError(
                f"{days:g} days bring about {users} users, fewer than 8 in an arm: no rule acts "
                "on so few"
            )
        effect = detectable_effect(users, *args)
    treatment = math.ceil(users * share)
    requests = math.ceil(users * inputs.requests_per_user)
    traffic_days = users / inputs.users_per_day
    request_days = min_requests / (inputs.users_per_day * inputs.requests_per_user)
    return Plan(
        metric="confidence",
        effect=effect,
        power=power,
        alpha=alpha,
        treatment_traffic_pct=treatment_traffic_pct,
        sequential_tuning=sequential_tuning,
        min_effect=min_effect,
        users=users,
        users_control=users - treatment,
        users_treatment=treatment,
        requests=requests,
        days=traffic_days,
        days_needed=max(traffic_days, duration_days, request_days),
        duration_days=duration_days,
        min_requests=min_requests,
        user_sd=inputs.user_sd,
        requests_per_user=inputs.requests_per_user,
        users_per_day=inputs.users_per_day,
        source=inputs.source,
        request_sd=inputs.request_sd,
        correlation=inputs.correlation,
        given_days=days,
    )


def _check(
    inputs: PlanInputs,
    effect: float | None,
    days: float | None,
    pct: float,
    alpha: float,
    power: float,
) -> None:
    if (effect is None) == (days is None):
        raise ValidationError(
            "give either the effect to detect (--effect) or the days to plan for (--days)"
        )
    for name, value in (
        ("per-user sd", inputs.user_sd),
        ("requests per user", inputs.requests_per_user),
        ("users per day", inputs.users_per_day),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValidationError(f"{name} must be a positive number, not {value!r}")
    if inputs.requests_per_user < 1:
        raise ValidationError(
            f"requests per user must be at least 1, not {inputs.requests_per_user!r}"
        )
    if effect is not None and not math.isfinite(effect):
        raise ValidationError(f"the effect must be a number, not {effect!r}")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise ValidationError(f"days must be above 0, not {days!r}")
    if not 0 < pct < 100:
        raise ValidationError(f"the treatment share must be above 0 and below 100, not {pct!r}")
    if not 0 < alpha < 1:
        raise ValidationError(f"alpha must be between 0 and 1, not {alpha!r}")
    if not 0.5 <= power < 1:
        raise ValidationError(f"power must be at least 0.5 and below 1, not {power!r}")
