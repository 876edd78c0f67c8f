"""The watch after a promotion: the new champion's serving metrics against the previous
champion's from before the promotion, for `watch.hours` (default 24) after it.

A promotion (`mlops promote`, `ab finalize promote`, `ab evaluate --apply`) opens the window:
its audit event is the record of it, so no other state is kept. `mlops watch check` (a cron
step; `drift check --all` runs it too) compares, per request (serving metrics carry no user
ids), the new champion's requests since the promotion with the previous champion's latest
requests before it (at most `HISTORY_MAX_REQUESTS`):

- error rate: the difference of proportions (Agresti-Caffo), breach when its interval at
  alpha / 2 lies wholly above 0;
- mean latency, relative to the previous champion's: breach when its interval at alpha / 2
  lies wholly above the latency margin (`ab.defaults.max_latency_increase`, 10%);
- drift, where the new champion has a recorded drift check since the promotion (`drift
  check`, a cron step): its latest level against the previous champion's last recorded check
  before the promotion; a breach when it is at `retrain` or above and higher than that level.
  With no check of the previous champion there is nothing to compare with, and no breach
  (the level alone raises the drift alarms and hooks as ever): a shift in the inputs would
  move both versions alike.

Both intervals are the project's confidence sequences (stats.py), valid however often the
watch is checked; the two tests share alpha (`ab.defaults.alpha`). **Caveat**: this is a
historical comparison, confounded by time: traffic, inputs or load that changed at the
promotion move the figures as a worse model would. The latency test's margin absorbs some of
that; the error test has none. A breach is reported (`watch_breached` audit event) and, with
`watch.rollback` on (default off), rolled back at once (`rolled_back`, its reason naming the
breach, then `watch_rolled_back`). Each window breaches once: a breach already in the audit
log is not reported again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .drift import DriftMonitor
from .errors import GateError
from .results import MappingResult
from .state import Level, ModelType
from .stats import ArmStats, Difference, compare_rates, compare_relative, settled
from .store.base import EVENTS, Store, metrics_stream
from .tail import HISTORY_MAX_REQUESTS
from .timeutil import format_ts, parse_ts

CAVEAT = (
    "a historical comparison, confounded by time: the previous champion's requests before the "
    "promotion against the new champion's after it, so anything else that changed at that "
    "time moves it too"
)
# Per side before anything is compared: a variance from a handful of requests is too unsure
# for the interval built on it (two latencies 13% apart "breached" a 10% margin).
MIN_REQUESTS = 100
PAGE = 10_000  # requests read at a time, from the end, for the previous champion's baseline
LEVELS = {level.value for level in Level}


@dataclass
class WatchResult(MappingResult):
    """One model type's watch: its window, the comparisons, and what was done."""

    model_type: str
    status: str  # open, closed, none (no promotion to watch)
    version: str | None = None
    previous: str | None = None
    promoted_at: str | None = None
    ends_at: str | None = None
    requests: dict[str, int] = field(default_factory=dict)
    error_rate: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None  # level, score, checked_at, previous_level; or None
    breach: bool = False
    reasons: list[str] = field(default_factory=list)
    rolled_back: bool = False
    caveat: str = CAVEAT

    @property
    def waiting(self) -> bool:
        """An open window with too few requests on a side to compare yet."""
        return self.status == "open" and self.error_rate is None and not self.rolled_back

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__},
                "waiting": self.waiting}


def _moments(records: list[dict[str, Any]]) -> tuple[int, int, ArmStats]:
    n = len(records)
    errors = sum(1 for r in records if r.get("error"))
    times = [float(r["inference_time_ms"]) for r in records]
    total = sum(times)
    return n, errors, ArmStats.from_sums(n, total, sum(t * t for t in times))


def judge(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    alpha: float,
    tuning: float,
    margin: float,
) -> tuple[Difference, Difference, list[str]]:
    """The two comparisons (after minus before) and the breaches they show (pure)."""
    n_b, e_b, t_b = _moments(before)
    n_a, e_a, t_a = _moments(after)
    level = alpha / 2
    errors = compare_rates(n_b, e_b, n_a, e_a, level, "sequential", tuning)
    latency = compare_relative(t_b, t_a, level, "sequential", tuning)
    reasons = []
    enough = min(n_b, n_a) >= MIN_REQUESTS
    if enough and errors.ci[0] > 0:
        reasons.append(
            f"error rate up {errors.estimate:+.4f} on the previous champion's, interval "
            f"[{errors.ci[0]:+.4f}, {errors.ci[1]:+.4f}] at alpha {level:g} wholly above 0"
        )
    # (above the margin by more than rounding: 110 ms over 100 ms is +10%, not +10.00...09%)
    if enough and math.isfinite(latency.ci[0]) and settled(margin, latency.ci[0]) > 0:
        reasons.append(
            f"latency up {latency.estimate:+.1%} on the previous champion's, interval "
            f"[{latency.ci[0]:+.1%}, {latency.ci[1]:+.1%}] at alpha {level:g} wholly above "
            f"+{margin:.0%}"
        )
    return errors, latency, reasons


def drift_breach(level: str, previous_level: str | None) -> bool:
    """Whether the new champion's drift level breaches: an active level at `retrain` or above
    and above the previous champion's level before the promotion (none: no comparison)."""
    if level not in LEVELS or previous_level not in LEVELS:
        return False
    return Level(level) >= Level.RETRAIN and Level(level) > Level(previous_level)


class WatchMonitor:
    """Checks the watch window that a promotion opens (see the module's docstring)."""

    def __init__(self, store: Store, drift: DriftMonitor) -> None:
        self.store = store
        self.drift = drift

    def check(self, model_type: str | None = None, ended: bool = True) -> list[WatchResult]:
        """Every model type's watch (or one's); a breach rolls back with `watch.rollback`.
        `gate` turns a breach into an exit code. With `ended` False a window that has ended
        is given without its figures (a cron step need not read its requests again)."""
        state = self.store.read()
        types = [model_type] if model_type is not None else sorted(state.models)
        if model_type is not None:
            state.model(model_type)  # NotFoundError for an unknown type
        events = self.store.history(EVENTS)
        return [self._check(state.model(t), events, state.settings.data, ended) for t in types]

    def _check(
        self, model: ModelType, events: list[dict[str, Any]], settings: dict[str, Any],
        ended: bool = True,
    ) -> WatchResult:
        model_type = model.name
        mine = [e for e in events if e.get("model_type") == model_type]
        change = next((e for e in reversed(mine)
                       if _promotes(e) or e.get("event") == "rolled_back"), None)
        if change is not None and change["event"] == "rolled_back":
            return self._undone(model_type, mine, change, settings)
        if change is None or not model.champion_history:
            return WatchResult(model_type, "none")
        version, previous = model.champion, model.champion_history[-1]
        if change.get("version") != version:
            return WatchResult(model_type, "none")
        watch = settings.get("watch", {})
        start = parse_ts(change["ts"])
        end = start + timedelta(hours=float(watch.get("hours", 24.0)))
        now = self.store.clock()
        result = WatchResult(
            model_type, "open" if now < end else "closed", version, previous,
            format_ts(start), format_ts(end),
        )
        assert version is not None
        if result.status == "closed" and not ended:
            return result
        after = [
            r for r in self.store.history(metrics_stream(model_type, version), since=start)
            if _at(r) >= start and _at(r) < end
        ]
        before = self._served_until(metrics_stream(model_type, previous), start)
        result.requests = {"previous": len(before), "champion": len(after)}
        if min(len(before), len(after)) >= MIN_REQUESTS:
            ab = settings["ab"]["defaults"]
            margin = ab.get("max_latency_increase") or 0.10
            errors, latency, result.reasons = judge(
                before, after, float(ab["alpha"]), float(ab["sequential_tuning"]), float(margin)
            )
            result.error_rate = errors.to_dict()
            result.latency = {**latency.to_dict(), "margin": margin, "scale": "relative"}
        result.drift = self._drift(model_type, version, previous, start)
        if result.drift is not None and drift_breach(
            result.drift["level"], result.drift["previous_level"]
        ):
            result.reasons.append(
                f"drift at {result.drift['level']} (score {result.drift['score']:.3f}) against "
                f"{version}'s reference; {previous} was at {result.drift['previous_level']} "
                "before the promotion"
            )
        reasons = result.reasons
        breached_before = any(
            e.get("event") == "watch_breached" and parse_ts(e["ts"]) >= start for e in mine
        )
        if not reasons or result.status != "open":
            return result
        result.breach = True
        self._act(result, "; ".join(reasons), breached_before, bool(watch.get("rollback")))
        return result

    def _act(self, result: WatchResult, why: str, reported: bool, rollback: bool) -> None:
        """Audit the breach (once) and, with `rollback`, roll back: in one change that first
        checks the new champion still serves, so concurrent checks roll back once (another
        check's rollback is reported as done). A rollback that cannot be made (a test runs, no
        earlier champion that is not deprecated) is reported with the breach, not raised."""
        name, version = result.model_type, str(result.version)
        with self.store.transaction() as txn:
            model = txn.state.model(name)
            if model.champion != version:  # moved meanwhile: by another check, or by hand
                result.rolled_back = model.champion == result.previous
                result.reasons.append(
                    f"{name} was rolled back to {model.champion} by another check"
                    if result.rolled_back else
                    f"not rolled back: {name}'s champion is {model.champion} now"
                )
                return
            if not reported:  # (each window's breach is audited once)
                txn.event("watch_breached", why, model_type=name, version=version,
                          previous=result.previous)
            if not rollback:  # (also when turned on after the breach was reported)
                return
            test = txn.state.running_test(name)
            earlier = [v for v in model.champion_history if not model.versions[v].deprecated]
            if test is not None or not earlier:
                result.reasons.append(
                    "not rolled back: " + (f"A/B test {test.name} is running on {name}"
                                           if test is not None else
                                           f"{name} has no earlier champion that is not "
                                           "deprecated")
                )
                return
            restored, _ = model.restore_previous_champion()
            txn.event("rolled_back", f"watch after promotion: {why}", model_type=name,
                      version=restored, previous=version)
            txn.event("watch_rolled_back", why, model_type=name, version=version,
                      restored=restored)
        result.rolled_back = True


    def _served_until(self, stream: str, start: datetime) -> list[dict[str, Any]]:
        """The stream's latest requests up to `start` (at most HISTORY_MAX_REQUESTS), oldest
        first: read from the end a page at a time, past those served after it (a previous
        champion an alias still routes to keeps serving)."""
        found: list[dict[str, Any]] = []
        before = None
        while len(found) < HISTORY_MAX_REQUESTS:
            page = self.store.page(stream, PAGE, before)
            found += [r for r in page.records if _at(r) <= start]
            if page.next is None:
                break
            before = page.next
        return found[:HISTORY_MAX_REQUESTS][::-1]

    def _undone(
        self,
        model_type: str,
        events: list[dict[str, Any]],
        rollback: dict[str, Any],
        settings: dict[str, Any],
    ) -> WatchResult:
        """After a rollback: the window it ended, when the watch made it (a
        `watch_rolled_back` event follows), as rolled back; else no promotion to watch."""
        at = parse_ts(rollback["ts"])
        undone = next((e for e in reversed(events) if e.get("event") == "watch_rolled_back"
                       and parse_ts(e["ts"]) >= at), None)
        promoted = next((e for e in reversed(events) if _promotes(e)
                         and parse_ts(e["ts"]) <= at), None)
        if undone is None or promoted is None:
            return WatchResult(model_type, "none")
        start = parse_ts(promoted["ts"])
        end = start + timedelta(hours=float(settings.get("watch", {}).get("hours", 24.0)))
        open_ = self.store.clock() < end
        return WatchResult(
            model_type, "open" if open_ else "closed", undone.get("version"),
            undone.get("restored"), format_ts(start), format_ts(end), breach=open_,
            reasons=[str(undone.get("reason"))], rolled_back=True,
        )

    def _drift(
        self, model_type: str, version: str, previous: str, start: datetime
    ) -> dict[str, Any] | None:
        """The new champion's latest recorded drift check since the promotion (`drift check`,
        a cron step, records them) beside the previous champion's last one before it; None
        when the new champion has no check since the promotion."""
        latest = self.drift.detector(model_type, version).last_check()
        if latest is None or _at(latest) < start or latest.get("status") != "active":
            return None
        days = (self.store.clock() - start).total_seconds() / 86400 + 7
        before = [r for r in self.drift.detector(model_type, previous).history(days)
                  if _at(r) <= start and r.get("status") == "active"]
        return {
            "level": latest["level"],
            "score": latest["score"],
            "checked_at": latest["ts"],
            "previous_level": before[-1]["level"] if before else None,
        }


def gate(results: list[WatchResult]) -> None:
    """GateError (exit 3) when an open watch window breached (rolled back or not)."""
    breached = [r for r in results if r.breach]
    if breached:
        names = ", ".join(
            f"{r.model_type} {r.version}" + (" (rolled back)" if r.rolled_back else "")
            for r in breached
        )
        raise GateError(f"watch breached: {names} (--fail-on breach)")


def _promotes(event: dict[str, Any]) -> bool:
    """A promotion's audit event: `promoted`, or `ab_finalized` with decision promote."""
    kind = event.get("event")
    return kind == "promoted" or (kind == "ab_finalized" and event.get("decision") == "promote")


def _at(record: dict[str, Any]) -> datetime:
    ts = record.get("ts")
    return ts if isinstance(ts, datetime) else parse_ts(str(ts))
