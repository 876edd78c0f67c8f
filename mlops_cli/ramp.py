"""A test's traffic ramp: its steps, the rule that advances them, and the stratified
difference over steps (pure: numbers in, verdict out; nothing here reads a file).

A ramp raises the treatment's share step by step (`ab start --ramp 5,10,25,50`). Users keep
their sha256 bucket; a user is treated when the bucket is below the step's share, so raising
the share only moves control users into the treatment. Each request records the step it was
served at, and each step is a stratum with users as units: a user who sent requests at two
steps counts in each step's stratum, by the arm of that step.

The difference of a metric (treatment minus control, each arm a ratio metric
sum(M) / sum(D) over its users) is combined over the steps with weights
w_s = n_cs n_ts / (n_cs + n_ts) (users of each arm at step s), normalised to sum to 1: the
Cochran-Mantel-Haenszel weights, the minimum-variance combination when the effect is the same
at every step. They depend only on how many users each arm has, which assignment decides
independently of the outcomes. The variance treats users as the independent units, across
steps: each user's influence on the combined estimate (the delta-method linearisation of
each step's ratio, (M - R D) / sum(D) per arm and step, weighted and signed) is summed over
the steps the user appears in, and the variance is the sum of the squared per-user totals
(with each cell's n / (n - 1) correction). So a user who moved arm, or stayed, is one unit,
and the correlation of one user's requests across steps is counted. With a single step it is
exactly the unstratified delta-method variance (`stats.RatioSums.arm_stats`). The interval is
the test's: the asymptotic confidence sequence over N distinct users, whose validity needs an
estimate that is asymptotically a mean of independent per-unit terms with a consistent
variance, which this linearised estimate is (docs/decisions.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .decision import Differences
from .stats import (
    SRM_MIN_PER_ARM,
    SRM_THRESHOLD,
    Difference,
    interval_of,
    sample_ratio_mismatch,
    settled,
)

# Defaults of `ab start --ramp`: a step needs this many treated users and hours before the
# ramp moves on (see docs/decisions.md for the reasons).
DEFAULT_MIN_USERS = 100
DEFAULT_MIN_HOURS = 24.0
MAX_STEPS = 20
METRICS = ("errors", "confidence", "inference_time_ms", "slow")


def parse_steps(value: str | Sequence[Any]) -> list[float]:
    """The ramp's treatment shares in percent, rising, each above 0 and below 100 in steps of
    0.01 (`"5,10,25,50"` or a list); a ValueError says what is wrong."""
    items = value.split(",") if isinstance(value, str) else list(value)
    steps: list[float] = []
    for item in items:
        text = str(item).strip().rstrip("%")
        try:
            share = float(text)
        except ValueError:
            raise ValueError(f"ramp steps are percentages like 5,10,25,50, not {item!r}") from None
        if not (0 < share < 100) or abs(share * 100 - round(share * 100)) > 1e-9:
            raise ValueError(
                f"a ramp step must be above 0 and below 100 in steps of 0.01, not {item!r}"
            )
        if steps and share <= steps[-1]:
            raise ValueError(f"ramp steps must rise: {share:g} after {steps[-1]:g}")
        steps.append(round(share, 2))
    if not steps:
        raise ValueError("a ramp needs at least one step, e.g. 5,10,25,50")
    if len(steps) > MAX_STEPS:
        raise ValueError(f"a ramp has at most {MAX_STEPS} steps, not {len(steps)}")
    return steps


def new_ramp(steps: Sequence[float], min_users: int, min_hours: float, now: str) -> dict[str, Any]:
    """The ramp as a test records it: its shares, the current step (1-based), the minimums
    and when each step started."""
    return {
        "steps": list(steps),
        "step": 1,
        "min_users": int(min_users),
        "min_hours": float(min_hours),
        "started": [now],
    }


def check_ramp(value: Any, key: str) -> dict[str, Any]:
    """A recorded ramp (schema): a ValueError names what is wrong."""
    if not isinstance(value, dict) or set(value) != {
        "steps", "step", "min_users", "min_hours", "started"
    }:
        raise ValueError(f"{key}: expected steps, step, min_users, min_hours, started")
    steps = parse_steps(value["steps"])
    step = value["step"]
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= len(steps):
        raise ValueError(f"{key}.step: expected 1 to {len(steps)}, not {step!r}")
    users = value["min_users"]
    if not isinstance(users, int) or isinstance(users, bool) or users < 0:
        raise ValueError(f"{key}.min_users: expected a whole number >= 0, not {users!r}")
    hours = value["min_hours"]
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not (
        0 <= hours < 1e6
    ):
        raise ValueError(f"{key}.min_hours: expected hours >= 0, not {hours!r}")
    started = value["started"]
    if not isinstance(started, list) or len(started) != step or not all(
        isinstance(s, str) for s in started
    ):
        raise ValueError(f"{key}.started: expected one start time per step reached")
    return {**value, "steps": steps, "min_hours": float(hours)}


def srm_threshold(steps: int) -> float:
    """The sample-ratio p-value below which one step's split is a mismatch: 0.001 shared by
    the steps (Bonferroni), so the ramp as a whole keeps the unstratified test's rate."""
    return SRM_THRESHOLD / max(steps, 1)


@dataclass
class Strata:
    """A ramp test's requests grouped by (step, arm, user): one row per cell a user is in.

    `step` (1-based), `treated` (bool) and `user` (an integer code per distinct unit) are
    arrays of one value per row; `d` the row's requests and `m[metric]` its sums (errors,
    confidence, inference_time_ms, and `slow`: requests above the tail threshold, when one
    is known). `shares[s - 1]` is step s's treatment share in percent.
    """

    step: Any
    treated: Any
    user: Any
    d: Any
    m: Mapping[str, Any]
    shares: Sequence[float]
    unit: str = "user"

    @classmethod
    def of(
        cls,
        step: Any,
        treated: Any,
        user: Any,
        values: Mapping[str, Any],
        shares: Sequence[float],
        unit: str = "user",
    ) -> Strata:
        """Group per-request columns (one value per request; `user` integer codes) into
        cells."""
        import numpy as np

        step = np.asarray(step, dtype=np.int64)
        treated = np.asarray(treated, dtype=bool)
        user = np.asarray(user, dtype=np.int64)
        if step.size == 0:
            empty = np.zeros(0)
            return cls(
                step, treated, user, empty, {k: empty for k in values}, list(shares), unit
            )
        if step.min() < 1 or step.max() > len(shares):
            raise ValueError(f"a request's step is outside 1 to {len(shares)}")
        keys = np.stack([step, treated.astype(np.int64), user])
        cells, inverse = np.unique(keys, axis=1, return_inverse=True)
        inverse = inverse.ravel()
        count = cells.shape[1]
        d = np.bincount(inverse, minlength=count).astype(float)
        sums = {
            k: np.bincount(inverse, np.asarray(v, dtype=float), minlength=count)
            for k, v in values.items()
        }
        return cls(cells[0], cells[1].astype(bool), cells[2], d, sums, list(shares), unit)

    @property
    def steps(self) -> int:
        return len(self.shares)

    def users(self, step: int | None = None, treated: bool | None = None) -> int:
        """Distinct units, at a step and in an arm when given."""
        import numpy as np

        mask = np.ones(self.step.shape, bool)
        if step is not None:
            mask &= self.step == step
        if treated is not None:
            mask &= self.treated == treated
        return int(np.unique(self.user[mask]).size)

    def _cells(self, metric: str, agresti_caffo: bool) -> list[dict[str, Any]]:
        """Per step with at least 2 units in each arm: each arm's ratio, influence per row
        (already scaled by the cell's n / (n - 1)), and the step's weight."""
        import numpy as np

        out = []
        m_all = self.m[metric]
        for s in range(1, self.steps + 1):
            arms = {}
            for arm in (False, True):
                rows = np.nonzero((self.step == s) & (self.treated == arm))[0]
                m, d = m_all[rows], self.d[rows]
                n = rows.size
                if agresti_caffo:  # one pseudo-unit of 1 event in 2 requests per arm and step
                    m, d, n = np.append(m, 1.0), np.append(d, 2.0), n + 1
                if n < 2 or not d.sum():
                    break
                raw = float(m_all[rows].sum() / self.d[rows].sum()) if rows.size else 0.0
                ratio = float(m.sum() / d.sum())
                phi = (m - ratio * d) / d.sum() * math.sqrt(n / (n - 1))
                arms[arm] = {"rows": rows, "ratio": ratio, "raw": raw, "phi": phi, "n": n}
            if len(arms) < 2:
                continue
            nc, nt = arms[False]["n"], arms[True]["n"]
            out.append({"step": s, "arms": arms, "weight": nc * nt / (nc + nt)})
        total = sum(c["weight"] for c in out)
        for c in out:
            c["weight"] /= total
        return out

    def _influence(self, cells: list[dict[str, Any]], scale: Mapping[bool, float]) -> Any:
        """Per-unit sums of the weighted influences (arm `a`'s multiplied by `scale[a]`),
        pseudo-units kept apart."""
        import numpy as np

        size = int(self.user.max()) + 1 if self.user.size else 0
        total = np.zeros(size)
        pseudo = []
        for c in cells:
            for arm, a in c["arms"].items():
                phi = a["phi"] * c["weight"] * scale[arm]
                rows = a["rows"]
                total += np.bincount(self.user[rows], phi[: rows.size], minlength=size)
                pseudo.extend(phi[rows.size :].tolist())
        return np.concatenate([total, np.asarray(pseudo)])

    def _units(self, agresti_caffo: bool, cells: int) -> int:
        return self.users() + (2 * cells if agresti_caffo else 0)

    def difference(
        self, metric: str, alpha: float, method: str, tuning: float, agresti_caffo: bool = False
    ) -> Difference:
        """The stratified difference, treatment minus control, at level 1 - alpha. With
        `agresti_caffo` (error rates) the interval comes from sums with one pseudo-unit of
        1 event in 2 requests per arm and step, the estimate from the raw rates."""
        cells = self._cells(metric, agresti_caffo)
        if not cells:
            return Difference(0.0, (-math.inf, math.inf), 1.0)
        raw, adjusted = (
            settled(*(sum(c["weight"] * c["arms"][arm][key] for c in cells)
                      for arm in (False, True)))
            for key in ("raw", "ratio")
        )
        influence = self._influence(cells, {True: 1.0, False: -1.0})
        variance = float(influence @ influence)
        found = interval_of(
            adjusted, variance, self._units(agresti_caffo, len(cells)), alpha, method, tuning,
            2 * len(cells),
        )
        return Difference(raw, found.ci, found.p_value)

    def clipped(
        self, metric: str, alpha: float, method: str, tuning: float, agresti_caffo: bool = False
    ) -> Difference:
        """A difference of shares, its interval clipped to [-1, 1]."""
        found = self.difference(metric, alpha, method, tuning, agresti_caffo)
        return Difference(
            found.estimate, (max(found.ci[0], -1.0), min(found.ci[1], 1.0)), found.p_value
        )

    def differences(self, alpha: float, method: str, tuning: float) -> Differences:
        """The decision's differences, stratified (`decision.differences`' counterpart)."""
        return Differences(
            self.clipped("errors", alpha, method, tuning, agresti_caffo=True),
            self.difference("confidence", alpha, method, tuning),
            self.difference("inference_time_ms", alpha, method, tuning),
            self.relative("inference_time_ms", alpha, method, tuning),
        )

    def relative(self, metric: str, alpha: float, method: str, tuning: float) -> Difference:
        """The stratified relative difference sum_s w_s R_ts / sum_s w_s R_cs - 1 by the
        delta method (influence phi_t / B - A phi_c / B^2 with A, B the weighted means)."""
        cells = self._cells(metric, False)
        if not cells:
            return Difference(0.0, (-math.inf, math.inf), 1.0)
        a = sum(c["weight"] * c["arms"][True]["ratio"] for c in cells)
        b = sum(c["weight"] * c["arms"][False]["ratio"] for c in cells)
        if b <= 0:
            return Difference(0.0, (-math.inf, math.inf), 1.0)
        influence = self._influence(cells, {True: 1.0 / b, False: -a / (b * b)})
        variance = float(influence @ influence)
        return interval_of(
            a / b - 1 if settled(b, a) else 0.0, variance, self.users(), alpha, method, tuning,
            2 * len(cells),
        )

    def srm(self) -> dict[str, Any]:
        """The split tested per step on distinct users, at p < 0.001 / steps."""
        threshold = srm_threshold(self.steps)
        per_step: list[dict[str, Any]] = []
        for s, share in enumerate(self.shares, start=1):
            nc, nt = self.users(s, False), self.users(s, True)
            if not nc + nt:
                continue
            ratio = sample_ratio_mismatch(nc, nt, share / 100, threshold)
            per_step.append(
                {"step": s, "share": share, "control": nc, "treatment": nt, **ratio.to_dict()}
            )
        judged = [p for p in per_step if p["judged"]]
        worst = min(judged or per_step, key=lambda p: float(p["p_value"]), default=None)
        testable = self.unit == "user"
        return {
            "p_value": worst["p_value"] if worst else 1.0,
            "mismatch": testable and any(p["mismatch"] for p in per_step),
            "judged": testable and bool(judged),
            "unit": self.unit,
            "testable": testable,
            "note": None if testable else "split not tested: not every record carries a user_id",
            "threshold": threshold,
            "min_per_arm": SRM_MIN_PER_ARM,
            "steps": per_step,
        }


@dataclass
class StepStatus:
    """Where a ramp stands: its step, the share, and whether the step's minimums are met."""

    step: int
    steps: int
    share: float
    next_share: float | None
    min_users: int
    min_hours: float
    users: int  # treated users at this step
    hours: float  # since this step started
    advance: bool = False  # the rules allow the next step now
    advanced: bool = False  # `--apply` moved the ramp to the next step
    waiting: list[str] | None = None

    @property
    def last(self) -> bool:
        return self.step >= self.steps

    @property
    def minimums_met(self) -> bool:
        return self.users >= self.min_users and self.hours >= self.min_hours

    def unmet(self) -> list[str]:
        out = []
        if self.users < self.min_users:
            out.append(f"{self.users} of {self.min_users} treated users at step {self.step}")
        if self.hours < self.min_hours:
            out.append(f"{self.hours:.1f} of {self.min_hours:g} hours at step {self.step}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "steps": self.steps,
            "share": self.share,
            "next_share": self.next_share,
            "min_users": self.min_users,
            "min_hours": self.min_hours,
            "users": self.users,
            "hours": self.hours,
            "minimums_met": self.minimums_met,
            "advance": self.advance,
            "advanced": self.advanced,
            "waiting": list(self.waiting or []),
        }


def step_status(ramp: Mapping[str, Any], users: int, hours: float) -> StepStatus:
    """The current step of a recorded ramp with its treated users and hours so far."""
    steps, step = ramp["steps"], ramp["step"]
    return StepStatus(
        step,
        len(steps),
        steps[step - 1],
        steps[step] if step < len(steps) else None,
        ramp["min_users"],
        ramp["min_hours"],
        users,
        hours,
    )


def judge_step(
    status: StepStatus,
    decision: str,
    reasons: list[str],
    metrics: Mapping[str, Any],
    max_error_rate_increase: float,
) -> str:
    """The ramp's verdict before its last step, from the test's decision: harm (and
    futility) roll back at any step; otherwise `advance` when the step has its minimums, the
    split holds at every step, and every guardrail is non-inferior (error rate: the interval's
    upper end within `max_error_rate_increase`), else `continue`. At the last step the usual
    decision stands, but promotion waits for the step's own minimums too. `reasons` is
    replaced by what the ramp waits for."""
    waiting = status.unmet()
    if decision == "rollback":
        return decision
    if status.last:
        if decision == "promote" and waiting:
            reasons[:] = waiting
            status.waiting = waiting
            return "continue"
        status.waiting = [] if decision == "promote" else list(reasons)
        return decision
    srm = metrics["srm"]
    if srm.get("mismatch"):
        waiting.append(f"sample ratio mismatch at a step p={srm['p_value']:.2g}")
    upper = metrics["error_rate_diff"]["ci"][1]
    if upper is None:
        waiting.append("error rate not compared yet: an arm has no requests")
    elif not upper <= max_error_rate_increase:
        waiting.append(
            f"error rate may rise by up to {upper:+.3f}, allowed +{max_error_rate_increase:g}"
        )
    for name, g in metrics["guardrails"].items():
        if g.get("non_inferior") is False:
            waiting.append(f"{name} not shown non-inferior yet (margin {g['margin']:g})")
    status.waiting = waiting
    status.advance = not waiting
    reasons[:] = waiting or [
        f"step {status.step} ({status.share:g}%) met its minimums with no harm: "
        f"advance to {status.next_share:g}%"
    ]
    return "continue"
