"""The tail-latency guardrail: the share of requests slower than a frozen threshold tau.

Tau is the control's 95th percentile of `inference_time_ms` (`p95`: numpy's `quantile` with
`method="linear"`, Hyndman and Fan's type 7, which PostgreSQL's `percentile_cont` also
computes), taken once and recorded in the test:

- from the champion's serving history (its metrics stream, the latest
  `HISTORY_MAX_REQUESTS` requests) when that holds at least `MIN_HISTORY_REQUESTS`, at
  `ab start`: at 2,000 requests the share of the
  champion's latency distribution above the estimated p95 has a standard deviation of
  sqrt(0.05 * 0.95 / 2000) = 0.49 points, so the guardrail watches the 5% +- 1 point tail;
- else from exactly the control requests of the test's first day (`ts` before `started_at`
  plus one day), once that day is over, and at least `MIN_FIRST_DAY_REQUESTS` of them (fewer
  leave the guardrail unavailable for the test: a p95 of a handful of requests is their
  maximum). Later data never moves it.

A request is slow when its time is strictly above tau. The guardrail compares the slow share
of the two arms, treatment minus control: per user (M_u = u's slow requests, D_u = u's
requests) as a ratio metric under the test's interval method (`stats.compare_ratio`), or per
request as a proportion (`stats.compare_rates`, Agresti-Caffo) when the requests carry no
user ids. Every figure the comparison needs is a sum (a count filtered by `> tau`, grouped by
arm and user), so any engine can compute it. Pure: nothing here reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .stats import Difference, RatioSums, compare_rates, compare_ratio

QUANTILE = 0.95
QUANTILE_METHOD: Literal["linear"] = "linear"  # numpy; percentile_cont in SQL
MIN_HISTORY_REQUESTS = 2000
HISTORY_MAX_REQUESTS = 100_000  # the champion's latest requests, so an old history is bounded
MIN_FIRST_DAY_REQUESTS = 20
SOURCES = ("champion_history", "first_day")
FIRST_DAY = 1.0  # days after the start whose control requests set tau


class Threshold(NamedTuple):
    """Tau in ms, where it came from (`SOURCES`) and how many requests it was computed from."""

    ms: float
    source: str
    requests: int


def p95(values: Any) -> float:
    """The 95th percentile of the values, numpy's `linear` method (type 7)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if not data.size:
        raise ValueError("no values to take a percentile of")
    return float(np.quantile(data, QUANTILE, method=QUANTILE_METHOD))


def from_history(latencies: Any) -> Threshold | None:
    """Tau from the champion's serving history, or None when it has too few requests."""
    n = len(latencies)
    if n < MIN_HISTORY_REQUESTS:
        return None
    return Threshold(p95(latencies), "champion_history", n)


def from_first_day(latencies: Any) -> Threshold | None:
    """Tau from the first day's control requests, or None when there are too few of them."""
    n = len(latencies)
    if n < MIN_FIRST_DAY_REQUESTS:
        return None
    return Threshold(p95(latencies), "first_day", n)


class TailSums(NamedTuple):
    """One arm's slow counts: requests, slow requests (time > tau), the anonymous requests
    among them, and over named users M_u = slow, D_u = requests as ratio sums."""

    requests: int
    slow: int
    anonymous: int
    users: RatioSums

    @property
    def share(self) -> float:
        return self.slow / self.requests if self.requests else 0.0


EMPTY = TailSums(0, 0, 0, RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0))


def sums_from_users(per_user: Any, anonymous: tuple[int, ...] = (0, 0)) -> TailSums:
    """TailSums from per-user (slow, requests) pairs and the anonymous (slow, requests)."""
    if len(per_user):
        import numpy as np

        pairs = np.asarray(per_user, dtype=float).reshape(-1, 2)
        users = RatioSums.of(pairs[:, 0], pairs[:, 1])
    else:  # anonymous requests only: numpy is not needed
        users = RatioSums.of((), ())
    return TailSums(
        int(users.d_sum) + anonymous[1], int(users.m_sum) + anonymous[0], anonymous[1], users
    )


def difference(
    control: TailSums, treatment: TailSums, per_user: bool, alpha: float, method: str,
    tuning: float,
) -> Difference:
    """The slow share, treatment minus control, at level alpha: per user a ratio metric,
    per request a proportion (interval Agresti-Caffo adjusted, estimate raw)."""
    if per_user:
        found = compare_ratio(control.users, treatment.users, alpha, method, tuning)
    else:
        found = compare_rates(
            control.requests, control.slow, treatment.requests, treatment.slow, alpha, method,
            tuning,
        )
    lo, hi = found.ci
    return Difference(found.estimate, (max(lo, -1.0), min(hi, 1.0)), found.p_value)


@dataclass
class TailInput:
    """What `decision.decide` needs for the guardrail: the threshold (None while it is not
    known), why it is missing, and each arm's slow counts at it."""

    threshold: Threshold | None
    control: TailSums = EMPTY
    treatment: TailSums = EMPTY
    pending: str = ""  # why there is no threshold (yet)
    unavailable: bool = False  # the first day had too few control requests: off for the test


def entry(
    tail: TailInput,
    at_harm: Difference | None,
    main: Difference | None,
    margin: float | None,
    alpha: float,
    harm: bool,
    non_inferior: bool | None,
) -> dict[str, Any]:
    """The `metrics.guardrails.tail_latency` entry of an evaluation."""
    t = tail.threshold
    out: dict[str, Any] = {
        "threshold_ms": t.ms if t else None,
        "source": t.source if t else None,
        "threshold_requests": t.requests if t else None,
        "status": "judged" if t else ("unavailable" if tail.unavailable else "pending"),
        "note": tail.pending or None,
        "share": {"control": tail.control.share, "treatment": tail.treatment.share},
        "slow": {"control": tail.control.slow, "treatment": tail.treatment.slow},
        "estimate": at_harm.estimate if at_harm else None,
        "ci": list(at_harm.ci) if at_harm else None,
        "p_value": at_harm.p_value if at_harm else None,
        "margin": margin,
        "alpha": alpha,
        "harm": harm,
        "rule": "harm when the slow share's interval at alpha/k lies wholly above 0; "
        "non-inferior at alpha when its interval lies below +margin (when a margin is set)",
    }
    if main is not None:
        out["ci_at_alpha"] = list(main.ci)
    if non_inferior is not None:
        out["non_inferior"] = non_inferior
    return out
