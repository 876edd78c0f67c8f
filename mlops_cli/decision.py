"""The decision rules of an A/B test: harm, promotion, futility (pure: numbers in, verdict out).

`decide` takes the test's configuration values and each arm's sufficient statistics, either
per request (`moments.Moments`) or per user (`UserArm`, from
`UserTotals`), and returns the `Evaluation` that `mlops ab evaluate` prints. Rules, in the
order of DESIGN section 5:

1. rollback, cause `harm`: a guardrail shows a clear deterioration: its interval at alpha / k
   lies wholly on the harmful side of zero (errors above 0, confidence below 0, latency above
   0), widened by the test's `harm_tolerance`. The k deterioration tests in force share one
   error budget (Bonferroni), so together they keep the A/A false-rollback rate at alpha. A
   test recorded with `decision_rules` 1 (started before registry schema 4) keeps the old
   rule: errors above `max_error_rate_increase` with the interval above 0, a guardrail's
   interval wholly beyond its margin.
2. promote: enough requests and days, no sample ratio mismatch, the confidence gain at least
   `min_confidence_improvement` with its interval above 0, the error-rate interval below its
   allowance and each set guardrail non-inferior (interval within its margin, at level alpha:
   non-inferiority conditions need no correction; Schultzberg, Ankargren, Frånberg 2024).
   Latency's margin is relative to the control's mean (`max_latency_increase`, delta method)
   unless an absolute `max_latency_increase_ms` is set.
3. rollback, cause `futility`: the confidence interval's upper end is below
   `min_confidence_improvement`, so the gain cannot reach it.
4. continue, naming every unmet condition.

With the sequential method every interval is a confidence sequence, valid however often the
test is evaluated. No rule acts on an interval before each arm has 8 users (per user) or 2
requests (per request). Nothing here reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .moments import Moments
from .results import MappingResult
from .schema import DECISION_RULES as CURRENT_RULES
from .schema import LEGACY_RULES
from .stats import (
    ArmStats,
    Difference,
    RatioSums,
    compare,
    compare_rates,
    compare_ratio,
    compare_relative,
    sample_ratio_mismatch,
    settled,
)
from .tail import TailInput  # tail-latency guardrail
from .tail import difference as tail_difference  # tail-latency guardrail
from .tail import entry as tail_entry  # tail-latency guardrail

if TYPE_CHECKING:
    from .ramp import Strata

VARIANTS = ("control", "treatment")
DECISIONS = ("promote", "rollback", "continue")
ROLLBACK_CAUSES = ("harm", "futility")
DEFAULT_MAX_CONFIDENCE_DROP = 0.02
DEFAULT_MAX_LATENCY_INCREASE = 0.10  # of the control's mean latency
# Fewest units a arm before any interval is acted on: 2 requests (a variance), or 8 users,
# since the delta method's variance from fewer users is too unstable to roll back on.
MIN_USERS_PER_ARM = 8
MIN_REQUESTS_PER_ARM = 2
METRICS = ("errors", "confidence", "inference_time_ms")
SRM_UNTESTABLE = (
    "split not tested: not every record carries a user_id, and requests are not the unit of "
    "assignment (one user's requests all go to one arm), so a request-count test would raise "
    "false alarms; record user_id with every request to test it"
)


class UserArm(NamedTuple):
    """One arm with users as units: the ratio sums of each metric (D_u = u's requests)."""

    errors: RatioSums
    confidence: RatioSums
    inference_time_ms: RatioSums

    @property
    def users(self) -> int:
        return self.confidence.users

    @property
    def n(self) -> int:
        """Requests."""
        return int(self.confidence.d_sum)

    def rate(self, metric: str) -> float:
        sums: RatioSums = getattr(self, metric)
        return sums.m_sum / sums.d_sum if sums.d_sum else 0.0


Arm = Moments | UserArm


@dataclass
class ArmFigures:
    version: str
    requests: int
    error_rate: float | None  # None (JSON null) for an arm without requests: no mean
    avg_confidence: float | None
    avg_inference_time_ms: float | None
    users: int | None = None  # distinct users, when users are the unit


@dataclass
class Evaluation(MappingResult):
    """The decision on an A/B test and the figures behind it."""

    test: str
    decision: str
    recommendation: str
    reasons: list[str]
    method: str
    alpha: float
    requests: int
    days_elapsed: float
    metrics: dict[str, Any]
    status: str = "running"
    applied: bool = False
    skipped_lines: int = 0
    torn_bytes: int = 0  # an incomplete last line (a write cut short), ignored
    rollback_cause: str | None = None  # "harm" or "futility" when the decision is rollback
    unit: str = "request"  # "user" when records carry user ids
    ramp: dict[str, Any] | None = None  # a ramp test's step (ramp.StepStatus.to_dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.ramp is None:
            del out["ramp"]  # only a ramp test's evaluation has the key
        return out


# -- per-user totals ---------------------------------------------------------------------------

_COLUMNS = ("requests", "errors", "confidence_sum", "time_sum")
_GROWTH = 2


class _ArmUsers:
    """One arm's per-user totals: an id -> row index and four float64 columns."""

    __slots__ = ("columns", "index")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.columns: Any = None  # numpy, imported with the first user: anonymous-only
        # requests (no user ids) never pay for the import

    def rows(self, user_ids: Iterable[str]) -> list[int]:
        """Row of each id, adding unseen ids (and growing the columns) as needed."""
        import numpy as np

        if self.columns is None:
            self.columns = np.zeros((len(_COLUMNS), 16))
        index = self.index
        out = []
        for uid in user_ids:
            row = index.get(uid)
            if row is None:
                row = index[uid] = len(index)
            out.append(row)
        capacity = self.columns.shape[1]
        if len(index) > capacity:
            grown = np.zeros((len(_COLUMNS), max(len(index), capacity * _GROWTH)))
            grown[:, :capacity] = self.columns
            self.columns = grown
        return out

    def ratio_sums(self, metric: int) -> RatioSums:
        n = len(self.index)
        if not n:  # no named user: no columns (numpy is imported with the first)
            return RatioSums.of((), ())
        return RatioSums.of(self.columns[metric, :n], self.columns[0, :n])


class UserTotals:
    """Running per-user totals of an A/B test's requests, per arm; mergeable.

    Per user: requests, errors, confidence sum and inference-time sum. Memory grows with
    distinct users, not requests: about 160 bytes per user (a dict entry with its row index,
    four float64 columns kept at most half empty; measured with tracemalloc) plus the user id
    string itself (49 bytes + its length for an ASCII id), so a million users of 10-character
    ids take about 220 MB.
    Requests recorded without a `user_id` are counted in `anonymous`; any of them makes the
    request the unit of analysis (`unit`).
    """

    def __init__(self) -> None:
        self._arms = {v: _ArmUsers() for v in VARIANTS}
        self.anonymous = dict.fromkeys(VARIANTS, 0)

    def add(
        self,
        variant: str,
        user_id: str | int | None,
        inference_time_ms: float,
        confidence: float,
        error: bool = False,
    ) -> None:
        """Add one recorded request."""
        arm = self._arms[variant]
        if user_id is None:
            self.anonymous[variant] += 1
            return
        (row,) = arm.rows([str(user_id)])
        column = arm.columns[:, row]
        column += (1.0, float(bool(error)), float(confidence), float(inference_time_ms))

    def add_columns(
        self,
        variants: Any,
        user_ids: Any,
        inference_time_ms: Any,
        confidence: Any,
        errors: Any,
    ) -> None:
        """Add many requests given as equal-length columns (lists or numpy arrays).

        A user id of None is an anonymous request. Ids are compared as strings (`7` and
        `"7"` are one user, as in assignment). Grouping runs in numpy; Python touches each
        distinct user once per call, not each request.
        """
        import numpy as np

        variant = np.asarray(variants)
        values = np.stack(
            [
                np.ones(variant.shape[0]),
                np.asarray(errors, dtype=bool).astype(float),
                np.asarray(confidence, dtype=float),
                np.asarray(inference_time_ms, dtype=float),
            ]
        )
        ids = np.asarray(user_ids)
        if values.shape[1:] != variant.shape or ids.shape != variant.shape:
            raise ValueError("columns must have one value per request")
        if ids.dtype == object:
            named = np.fromiter((u is not None for u in ids), bool, ids.shape[0])
        else:
            named = np.ones(ids.shape[0], bool)
        for name in VARIANTS:
            mask = variant == name
            self.anonymous[name] += int((mask & ~named).sum())
            mask &= named
            if not mask.any():
                continue
            named_ids = ids[mask]
            if named_ids.dtype == object:  # `7` and `"7"` in one column: compared as text
                named_ids = named_ids.astype(str)
            unique, inverse = np.unique(named_ids, return_inverse=True)
            arm = self._arms[name]
            rows = np.asarray(arm.rows(str(u) for u in unique.tolist()))[inverse.ravel()]
            for k in range(len(_COLUMNS)):
                arm.columns[k] += np.bincount(rows, values[k, mask], minlength=arm.columns.shape[1])

    def add_user(
        self,
        variant: str,
        user_id: str | int | None,
        requests: int,
        errors: int,
        confidence_sum: float,
        time_sum: float,
    ) -> None:
        """Add one user's totals at once (a store that groups by user in SQL); None is the
        anonymous requests of the arm."""
        if user_id is None:
            self.anonymous[variant] += requests
            return
        arm = self._arms[variant]
        (row,) = arm.rows([str(user_id)])
        arm.columns[:, row] += (float(requests), float(errors), confidence_sum, time_sum)

    def merge(self, other: UserTotals) -> None:
        """Add another accumulator's totals (say, of a later batch) into this one."""
        for name in VARIANTS:
            self.anonymous[name] += other.anonymous[name]
            theirs = other._arms[name]
            if not theirs.index:
                continue
            arm = self._arms[name]
            ids = list(theirs.index)
            rows = arm.rows(ids)
            arm.columns[:, rows] += theirs.columns[:, list(theirs.index.values())]

    def users(self, variant: str) -> int:
        return len(self._arms[variant].index)

    @property
    def unit(self) -> str:
        """`user` when every request carried a user id (and there is one), else `request`."""
        named = any(self._arms[v].index for v in VARIANTS)
        return "user" if named and not any(self.anonymous.values()) else "request"

    def ratio_sums(self, variant: str, metric: str) -> RatioSums:
        """n users, sum M, sum M^2, sum D, sum D^2, sum M*D for `errors`, `confidence` or
        `inference_time_ms` (M_u the metric's sum over u's requests, D_u their count)."""
        return self._arms[variant].ratio_sums(METRICS.index(metric) + 1)

    def arm(self, variant: str) -> UserArm:
        return UserArm(*(self.ratio_sums(variant, m) for m in METRICS))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready) to keep beside the log; `from_dict` restores it."""
        out: dict[str, Any] = {"anonymous": dict(self.anonymous)}
        for name in VARIANTS:
            arm = self._arms[name]
            n = len(arm.index)
            columns = arm.columns[:, :n].tolist() if n else [[] for _ in _COLUMNS]
            out[name] = {"users": list(arm.index), "columns": columns}
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> UserTotals:
        totals = cls()
        for name in VARIANTS:
            arm = totals._arms[name]
            users = [str(u) for u in doc[name]["users"]]
            totals.anonymous[name] = int(doc["anonymous"][name])
            if not users:
                continue
            import numpy as np

            columns = np.asarray(doc[name]["columns"], dtype=float).reshape(len(_COLUMNS), -1)
            if columns.shape[1] != len(users) or len(set(users)) != len(users):
                raise ValueError(f"per-user totals of {name}: users and columns disagree")
            arm.rows(users)
            arm.columns[:, : len(users)] = columns
        return totals


def analysis_arms(
    control: Moments, treatment: Moments, totals: UserTotals | None
) -> tuple[Arm, Arm]:
    """The arms to decide on: per user when `totals` saw user ids on every request, else the
    per-request moments (the caller keeps both; the unit follows the data)."""
    if totals is not None and totals.unit == "user":
        return totals.arm("control"), totals.arm("treatment")
    return control, treatment


# -- the rules ---------------------------------------------------------------------------------


class Rules(NamedTuple):
    """The configuration values the decision reads (an A/B test's fields)."""

    alpha: float
    method: str
    sequential_tuning: float
    treatment_traffic_pct: float
    min_requests: int
    duration_days: float
    max_error_rate_increase: float
    min_confidence_improvement: float
    max_confidence_drop: float | None = DEFAULT_MAX_CONFIDENCE_DROP
    max_latency_increase_ms: float | None = None
    control_version: str = ""
    treatment_version: str = ""
    max_latency_increase: float | None = DEFAULT_MAX_LATENCY_INCREASE
    harm_tolerance: Mapping[str, float] = {}
    decision_rules: int = CURRENT_RULES
    tail_latency: bool = False  # tail-latency guardrail (off for a test recorded without it)
    max_tail_latency_increase: float | None = None  # tail-latency promotion margin

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Rules:
        """From a test's record; the guardrail fields take their defaults when absent (the
        relative latency margin only when no absolute one is set), the rules the current."""
        absolute = config.get("max_latency_increase_ms")
        relative = config.get(
            "max_latency_increase", DEFAULT_MAX_LATENCY_INCREASE if absolute is None else None
        )
        return cls(
            alpha=config["alpha"],
            method=config["method"],
            sequential_tuning=config["sequential_tuning"],
            treatment_traffic_pct=config["treatment_traffic_pct"],
            min_requests=config["min_requests"],
            duration_days=config["duration_days"],
            max_error_rate_increase=config["max_error_rate_increase"],
            min_confidence_improvement=config["min_confidence_improvement"],
            max_confidence_drop=config.get("max_confidence_drop", DEFAULT_MAX_CONFIDENCE_DROP),
            max_latency_increase_ms=absolute,
            control_version=config.get("control_version") or "",
            treatment_version=config.get("treatment_version") or "",
            max_latency_increase=None if absolute is not None else relative,
            harm_tolerance=dict(config.get("harm_tolerance") or {}),
            decision_rules=config.get("decision_rules", CURRENT_RULES),
            tail_latency=bool(config.get("tail_latency", False)),  # tail-latency guardrail
            max_tail_latency_increase=config.get("max_tail_latency_increase"),  # tail latency
        )

    @property
    def latency_guarded(self) -> bool:
        return self.max_latency_increase_ms is not None or self.max_latency_increase is not None

    @property
    def harm_tests(self) -> int:
        """Deterioration tests sharing the error budget: error rate plus each set guardrail."""
        return (
            1
            + (self.max_confidence_drop is not None)
            + self.latency_guarded
            + self.tail_latency  # tail-latency guardrail: counted while its tau is pending too
        )

    @property
    def harm_alpha(self) -> float:
        return self.alpha / self.harm_tests

    def tolerance(self, guardrail: str) -> float:
        return float(self.harm_tolerance.get(guardrail, 0.0))


@dataclass
class Differences:
    """The three differences, treatment minus control, at one level alpha."""

    errors: Difference
    confidence: Difference
    inference_time_ms: Difference
    # treatment / control - 1 of the mean latency (delta method), for a relative margin
    inference_time_relative: Difference | None = None


def differences(
    control: Arm, treatment: Arm, alpha: float, method: str, tuning: float
) -> Differences:
    """Error-rate, confidence and latency differences (treatment minus control) at `alpha`.

    Per user: gbstats' ratio statistic, the error rate's interval from sums with one
    Agresti-Caffo pseudo-user per arm (estimate raw). Per request: Welch on the moments,
    Agresti-Caffo proportions for errors. The error-rate interval is clipped to [-1, 1].
    """
    if isinstance(control, UserArm) and isinstance(treatment, UserArm):
        adjusted = compare_ratio(
            control.errors.agresti_caffo(), treatment.errors.agresti_caffo(), alpha, method, tuning
        )
        raw = treatment.rate("errors") - control.rate("errors")
        error = Difference(raw, adjusted.ci, adjusted.p_value)
        confidence = compare_ratio(control.confidence, treatment.confidence, alpha, method, tuning)
        latency = compare_ratio(
            control.inference_time_ms, treatment.inference_time_ms, alpha, method, tuning
        )
    elif isinstance(control, UserArm) or isinstance(treatment, UserArm):
        raise TypeError("both arms must be per user or both per request")
    else:
        error = compare_rates(
            control.n, control.errors, treatment.n, treatment.errors, alpha, method, tuning
        )

        def means(c: ArmStats, t: ArmStats) -> Difference:
            return compare(c, t, alpha, method, tuning)

        confidence = means(
            ArmStats.from_sums(control.n, control.confidence_sum, control.confidence_sum_squares),
            ArmStats.from_sums(
                treatment.n, treatment.confidence_sum, treatment.confidence_sum_squares
            ),
        )
        latency = means(
            ArmStats.from_sums(control.n, control.time_sum, control.time_sum_squares),
            ArmStats.from_sums(treatment.n, treatment.time_sum, treatment.time_sum_squares),
        )
    lo, hi = error.ci
    error = Difference(error.estimate, (max(lo, -1.0), min(hi, 1.0)), error.p_value)
    relative = compare_relative(
        _latency_stats(control), _latency_stats(treatment), alpha, method, tuning
    )
    return Differences(error, confidence, latency, relative)


@dataclass
class Guardrail:
    """A deterioration test at the shared harm level, and its non-inferiority at alpha."""

    name: str
    harm_interval: Difference
    margin: float
    alpha: float
    harm: bool
    non_inferior: bool | None = None
    rule: str = ""
    scale: str = "absolute"  # "relative": estimate, interval and margin as shares of control
    tolerance: float = 0.0  # harm needs the interval wholly beyond this (rules 2)
    main: Difference | None = None  # the interval at alpha, for non-inferiority

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "estimate": self.harm_interval.estimate,
            "ci": list(self.harm_interval.ci),
            "margin": self.margin,
            "alpha": self.alpha,
            "harm": self.harm,
            "rule": self.rule,
            "scale": self.scale,
            "tolerance": self.tolerance,
        }
        if self.non_inferior is not None:
            out["non_inferior"] = self.non_inferior
        return out


def _latency_stats(arm: Arm) -> ArmStats:
    if isinstance(arm, UserArm):
        return arm.inference_time_ms.arm_stats()
    return ArmStats.from_sums(arm.n, arm.time_sum, arm.time_sum_squares)


def guardrails(
    rules: Rules, main: Differences, at_harm: Differences, control_latency: float
) -> list[Guardrail]:
    """The harm tests in force (at alpha/k) and their non-inferiority (at alpha).

    Rules 2 (tests started since schema 4): harm is an interval wholly on the harmful side of
    zero, widened by the guardrail's tolerance; margins only decide non-inferiority. Rules 1
    (older tests, kept as they started): harm on errors needs the estimate above
    `max_error_rate_increase` and the interval above 0; a guardrail harms beyond its margin.
    """
    harm_alpha = rules.harm_alpha
    legacy = rules.decision_rules == LEGACY_RULES
    max_err = rules.max_error_rate_increase
    errors = at_harm.errors
    if legacy:
        error_harm = errors.estimate > max_err and errors.ci[0] > 0
        error_rule = "harm when the estimate exceeds the margin and the interval lies above 0"
    else:
        error_harm = errors.ci[0] > rules.tolerance("error_rate")
        error_rule = (
            "harm when the interval at alpha/k lies wholly above 0 (plus the tolerance); "
            "promotion needs error_rate_diff's upper end within the margin"
        )
    out = [
        Guardrail(
            "error_rate",
            errors,
            max_err,
            harm_alpha,
            error_harm,
            rule=error_rule,
            tolerance=0.0 if legacy else rules.tolerance("error_rate"),
        )
    ]
    if rules.max_confidence_drop is not None:
        drop = rules.max_confidence_drop
        tolerance = drop if legacy else rules.tolerance("confidence")
        out.append(
            Guardrail(
                "confidence",
                at_harm.confidence,
                drop,
                harm_alpha,
                at_harm.confidence.ci[1] < -tolerance,
                at_least(main.confidence.ci[0], -drop),
                rule=(
                    "harm when the interval lies below -margin"
                    if legacy
                    else "harm when the interval at alpha/k lies wholly below 0 (minus the "
                    "tolerance)"
                )
                + "; non-inferior at alpha when confidence_diff's interval lies above -margin",
                tolerance=0.0 if legacy else tolerance,
                main=main.confidence,
            )
        )
    if rules.max_latency_increase_ms is not None:
        rise = rules.max_latency_increase_ms
        if legacy:
            bound, tolerance = rise, 0.0
        else:
            tolerance = rules.tolerance("inference_time_ms")
            bound = tolerance * control_latency
        out.append(
            Guardrail(
                "inference_time_ms",
                at_harm.inference_time_ms,
                rise,
                harm_alpha,
                at_harm.inference_time_ms.ci[0] > bound,
                at_most(main.inference_time_ms.ci[1], rise),
                rule=(
                    "harm when the interval lies above +margin"
                    if legacy
                    else "harm when the interval at alpha/k lies wholly above 0 (plus the "
                    "tolerance, a share of the control's mean)"
                )
                + "; non-inferior at alpha when inference_time_ms_diff's interval lies below "
                "+margin",
                tolerance=tolerance,
                main=main.inference_time_ms,
            )
        )
    elif rules.max_latency_increase is not None:
        share = rules.max_latency_increase
        tolerance = rules.tolerance("inference_time_ms")
        relative_main, relative_harm = main.inference_time_relative, at_harm.inference_time_relative
        assert relative_main is not None and relative_harm is not None
        out.append(
            Guardrail(
                "inference_time_ms",
                relative_harm,
                share,
                harm_alpha,
                relative_harm.ci[0] > tolerance,
                at_most(relative_main.ci[1], share),
                rule="relative to the control's mean (delta method): harm when the interval at "
                "alpha/k lies wholly above 0 (plus the tolerance); non-inferior at alpha when "
                "the interval at alpha lies below +margin",
                scale="relative",
                tolerance=tolerance,
                main=relative_main,
            )
        )
    return out


@dataclass
class Verdict:
    decision: str = "continue"
    cause: str | None = None
    reasons: list[str] = field(default_factory=list)
    recommendation: str = ""


def decide(
    name: str,
    config: Mapping[str, Any] | Rules,
    control: Arm,
    treatment: Arm,
    days_elapsed: float,
    tail: TailInput | None = None,
    strata: Strata | None = None,
) -> Evaluation:
    """Apply the decision rules, in order, to the arms' sufficient statistics (no I/O).

    `strata`: a ramp test's requests by step (`ramp.Strata`); the differences and the split
    are then the stratified ones (the arms still give the figures and the unit counts).

    `control` and `treatment` are both per request (`Moments`) or both per user (`UserArm`,
    e.g. `UserTotals.arm("control")`); the latter makes users the unit of analysis. `tail`:
    the tail-latency guardrail's threshold and slow counts (`tail.TailInput`), judged when the
    test has the guardrail on (`Rules.tail_latency`).
    """
    rules = config if isinstance(config, Rules) else Rules.from_config(config)
    alpha, method, tuning = rules.alpha, rules.method, rules.sequential_tuning
    per_user = isinstance(control, UserArm) and isinstance(treatment, UserArm)
    if strata is not None:
        main = strata.differences(alpha, method, tuning)
        at_harm = strata.differences(rules.harm_alpha, method, tuning)
    else:
        main = differences(control, treatment, alpha, method, tuning)
        at_harm = differences(control, treatment, rules.harm_alpha, method, tuning)
    guards = guardrails(rules, main, at_harm, _latency_stats(control).mean)

    # -- tail-latency guardrail (tail.py): harm when the slow share's interval lies above 0
    tail_doc: dict[str, Any] | None = None
    if rules.tail_latency:
        tail = tail or TailInput(None, pending="no threshold given")
        margin = rules.max_tail_latency_increase
        if tail.threshold is None:
            tail_doc = tail_entry(tail, None, None, margin, rules.harm_alpha, False, None)
        elif strata is not None:
            t_harm = strata.clipped("slow", rules.harm_alpha, method, tuning)
            t_main = strata.clipped("slow", alpha, method, tuning)
        else:
            t_harm = tail_difference(
                tail.control, tail.treatment, per_user, rules.harm_alpha, method, tuning
            )
            t_main = tail_difference(tail.control, tail.treatment, per_user, alpha, method, tuning)
        if tail.threshold is not None:
            t_ok = None if margin is None else at_most(t_main.ci[1], margin)
            t_tolerance = rules.tolerance("tail_latency")
            t_harmed = t_harm.ci[0] > t_tolerance
            guards.append(
                Guardrail(
                    "tail_latency",
                    t_harm,
                    margin or 0.0,
                    rules.harm_alpha,
                    t_harmed,
                    t_ok,
                    tolerance=t_tolerance,
                    main=t_main,
                )
            )
            tail_doc = tail_entry(
                tail, t_harm, t_main, margin, rules.harm_alpha, t_harmed, t_ok
            )
    # -- end of the tail-latency guardrail

    if strata is not None:
        srm = strata.srm()
    else:
        srm = _sample_ratio(control, treatment, rules.treatment_traffic_pct / 100)
    verdict = judge(name, rules, control, treatment, days_elapsed, main, guards, srm)
    requests = control.n + treatment.n
    metrics = {
        "control": asdict(_figures(rules.control_version, control)),
        "treatment": asdict(_figures(rules.treatment_version, treatment)),
        "error_rate_diff": main.errors.to_dict(),
        "confidence_diff": main.confidence.to_dict(),
        "inference_time_ms_diff": main.inference_time_ms.to_dict(),
        "srm": srm,
        "guardrails": {g.name: g.to_dict() for g in guards},
    }
    if tail_doc is not None:  # tail-latency guardrail
        tail_doc.setdefault("tolerance", rules.tolerance("tail_latency"))
        metrics["guardrails"]["tail_latency"] = tail_doc
        if tail_doc["status"] == "pending" and rules.max_tail_latency_increase is not None:
            _tail_pending(verdict, tail_doc)
    if not (control.n and treatment.n):
        _no_differences(metrics)
    return Evaluation(
        name,
        verdict.decision,
        verdict.recommendation,
        verdict.reasons,
        method,
        alpha,
        requests,
        days_elapsed,
        metrics,
        rollback_cause=verdict.cause,
        unit="user" if per_user else "request",
    )


def judge(
    name: str,
    rules: Rules,
    control: Arm,
    treatment: Arm,
    days_elapsed: float,
    main: Differences,
    guards: list[Guardrail],
    srm: dict[str, Any],
) -> Verdict:
    """The decision from the differences and guardrails (rules 1-4 in order): a pure function,
    so each rule's boundary is tested on intervals given by hand."""
    treatment_v = rules.treatment_version
    max_err, min_conf = rules.max_error_rate_increase, rules.min_confidence_improvement
    confidence, error = main.confidence, main.errors
    verdict = Verdict()

    per_user = isinstance(control, UserArm)
    unit, least = ("users", MIN_USERS_PER_ARM) if per_user else ("requests", MIN_REQUESTS_PER_ARM)
    sizes = [
        (arm, m.users if isinstance(m, UserArm) else m.n)
        for arm, m in (("control", control), ("treatment", treatment))
    ]
    empty = [f"{arm} arm has {n} {unit}, too few to compare" for arm, n in sizes if n < least]

    # 1. harm, acted on at once
    harmed = [g for g in guards if g.harm]
    if harmed and not empty:
        verdict.decision, verdict.cause = "rollback", "harm"
        for g in harmed:
            verdict.reasons.append(_harm_reason(g, rules.decision_rules == LEGACY_RULES))
        verdict.recommendation = (
            f"Roll back {treatment_v}: {verdict.reasons[0]}; run "
            f"`mlops ab finalize {name} rollback`."
        )
        return verdict

    # 2. promote when every condition holds
    reasons = verdict.reasons
    requests = control.n + treatment.n
    if requests < rules.min_requests:
        reasons.append(f"{requests} of {rules.min_requests} requests")
    left = rules.duration_days - days_elapsed
    if left > 0:
        reasons.append(f"{left:.1f} days left")
    if srm["mismatch"]:
        reasons.append(f"sample ratio mismatch p={srm['p_value']:.2g}")
    if empty:
        reasons.extend(empty)
    else:
        if not confidence.estimate >= min_conf:
            reasons.append(f"confidence {confidence.estimate:+.3f}, needs {min_conf:+.3f}")
        if not confidence.ci[0] > 0:
            reasons.append(
                f"confidence interval [{_fmt(confidence.ci[0])}, {_fmt(confidence.ci[1])}] "
                "not wholly above 0"
            )
        if not error.ci[1] <= max_err:
            reasons.append(
                f"error rate may rise by up to {_fmt(error.ci[1])}, allowed +{max_err:.3f}"
            )
        for g in guards:
            if g.non_inferior is False:
                reasons.append(_inferiority_reason(g))
    if not reasons:
        verdict.decision = "promote"
        reasons.append(
            f"confidence {confidence.estimate:+.3f} (interval {_fmt(confidence.ci[0])} to "
            f"{_fmt(confidence.ci[1])}), error rate at most {_fmt(error.ci[1])}, "
            f"{requests} requests over {days_elapsed:.1f} days"
        )
        verdict.recommendation = (
            f"Promote {treatment_v}: confidence up {confidence.estimate:+.3f} with no "
            f"error-rate harm beyond +{max_err:.3f}; run `mlops ab finalize {name} promote`."
        )
        return verdict

    # 3. futility: the gain cannot reach the minimum
    if not empty and confidence.ci[1] < min_conf:
        verdict.decision, verdict.cause = "rollback", "futility"
        verdict.reasons = [
            f"confidence gain at most {_fmt(confidence.ci[1])} (interval upper end), cannot "
            f"reach the required {min_conf:+.3f}"
        ]
        verdict.recommendation = (
            f"Roll back {treatment_v}: its confidence gain cannot reach {min_conf:+.3f} "
            f"(at most {_fmt(confidence.ci[1])}); run `mlops ab finalize {name} rollback`."
        )
        return verdict

    # 4. continue
    if srm["mismatch"]:
        verdict.recommendation = (
            "Check the traffic split before trusting this test: the arms' user counts do not "
            "match the configured share (sample ratio mismatch)."
        )
    else:
        verdict.recommendation = f"Keep the test running: {reasons[0]}."
    return verdict


def _sample_ratio(control: Arm, treatment: Arm, share: float) -> dict[str, Any]:
    """The split tested on distinct users; without user ids, reported but not judged."""
    if isinstance(control, UserArm) and isinstance(treatment, UserArm):
        ratio = sample_ratio_mismatch(control.users, treatment.users, share)
        return {**ratio.to_dict(), "unit": "user", "testable": True, "note": None}
    ratio = sample_ratio_mismatch(control.n, treatment.n, share)
    return {
        "p_value": ratio.p_value,
        "mismatch": False,
        "judged": False,
        "unit": "request",
        "testable": False,
        "note": SRM_UNTESTABLE,
    }


def _harm_reason(g: Guardrail, legacy: bool) -> str:
    lo, hi = _fmt(g.harm_interval.ci[0]), _fmt(g.harm_interval.ci[1])
    level = f"interval [{lo}, {hi}] at alpha {g.alpha:.3g}"
    estimate = g.harm_interval.estimate
    if legacy:
        if g.name == "error_rate":
            return (
                f"error rate {estimate:+.4f} exceeds the allowed +{g.margin:.4f}, "
                f"{level} wholly above 0"
            )
        if g.name == "confidence":
            return (
                f"confidence {estimate:+.3f} is worse than the allowed drop -{g.margin:.3f}, "
                f"{level}"
            )
        return (
            f"inference time {estimate:+.1f} ms is worse than the allowed +{g.margin:g} ms, "
            f"{level}"
        )
    if g.name == "error_rate":
        return f"error rate up {estimate:+.4f}, {level} wholly above {_bound(g.tolerance)}"
    if g.name == "tail_latency":  # tail-latency guardrail
        return (
            f"the share of requests slower than the control's p95 up {estimate:+.4f}, {level} "
            f"wholly above {_bound(g.tolerance)}"
        )
    if g.name == "confidence":
        return f"confidence down {estimate:+.3f}, {level} wholly below {_bound(-g.tolerance)}"
    if g.scale == "relative":
        lo, hi = _pct(g.harm_interval.ci[0]), _pct(g.harm_interval.ci[1])
        return (
            f"inference time up {estimate:+.1%} of the control's mean, interval [{lo}, {hi}] "
            f"at alpha {g.alpha:.3g} wholly above {_bound(100 * g.tolerance)}%"
        )
    return (
        f"inference time up {estimate:+.1f} ms, {level} wholly above "
        + (f"{_bound(100 * g.tolerance)}% of the control's mean" if g.tolerance else "0 ms")
    )


def _inferiority_reason(g: Guardrail) -> str:
    assert g.main is not None
    if g.name == "tail_latency":  # tail-latency guardrail
        return (
            f"the share of slow requests may rise by up to {_fmt(g.main.ci[1])}, allowed "
            f"+{g.margin:g} (tail latency)"
        )
    if g.name == "confidence":
        return f"confidence may drop by {_fmt(g.main.ci[0])}, allowed -{g.margin:.3f}"
    if g.scale == "relative":
        return (
            f"inference time may rise by up to {_pct(g.main.ci[1])} of the control's mean, "
            f"allowed +{g.margin:.0%}"
        )
    return f"inference time may rise by up to {_fmt(g.main.ci[1])} ms, allowed +{g.margin:g} ms"


def _bound(x: float) -> str:
    return f"{x:g}" if x else "0"


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else f"{x:+}"  # +inf, -inf


def _fmt(x: float) -> str:
    return f"{x:+.3f}"  # +inf, -inf as such


def _no_differences(metrics: dict[str, Any]) -> None:
    """An arm without requests has no mean: no difference is estimated (not 0 minus the
    other arm's mean). The rules see the arms' counts ("too few to compare")."""
    for key in ("error_rate_diff", "confidence_diff", "inference_time_ms_diff"):
        metrics[key] = {"estimate": None, "ci": [None, None], "p_value": None}
    for guardrail in metrics["guardrails"].values():
        guardrail.update(estimate=None, ci=[None, None])


def _figures(version: str, arm: Arm) -> ArmFigures:
    if not arm.n:
        users = arm.users if isinstance(arm, UserArm) else None
        return ArmFigures(version, 0, None, None, None, users)
    if isinstance(arm, UserArm):
        return ArmFigures(
            version,
            arm.n,
            arm.rate("errors"),
            arm.rate("confidence"),
            arm.rate("inference_time_ms"),
            arm.users,
        )
    n = arm.n
    return ArmFigures(version, n, arm.errors / n, arm.confidence_sum / n, arm.time_sum / n)


def _tail_pending(verdict: Verdict, doc: dict[str, Any]) -> None:
    """A promotion that needs the tail-latency margin waits for the threshold."""
    if verdict.decision != "promote":
        return
    verdict.decision = "continue"
    verdict.reasons = [f"tail-latency threshold not known yet: {doc['note']}"]
    verdict.recommendation = f"Keep the test running: {verdict.reasons[0]}."


def at_most(end: float, margin: float) -> bool:
    """A non-inferiority check of an interval's upper end against +margin, a value at the
    margin included also when floating point puts it a rounding beyond (110 ms over 100 ms is
    +10%, not +10.000000000000009%)."""
    return settled(margin, end) <= 0


def at_least(end: float, margin: float) -> bool:
    """An interval's lower end against -margin, the same way (`at_most`'s mirror)."""
    return settled(margin, end) >= 0
