"""The dashboard's one door to the library: each function takes a project location and plain
values and returns a JSON-able dict (or raises an MlopsError, as the CLI would see it).

The server, the HTML report and the tests use only these functions, so re-pointing the
dashboard at another store means changing this module alone. The few reads that go below the
public API (the A/B requests for the narrowing interval, the drift samples for the histograms)
go through the project's store.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import ConflictError, NotFoundError, ValidationError
from ..moments import Moments
from ..project import Project
from ..store.base import EVENTS, ab_stream, metrics_stream
from ..textsafe import printable

if TYPE_CHECKING:
    from ..drift import DriftDetector
    from ..state import ABTest

Location = str | os.PathLike[str] | None

# A drift check older than this is marked stale (as the staleness alert in deploy/ does), and so
# is one that samples arrived after.
STALE_AFTER_S = 36 * 3600
# Points on the "interval as requests came in" curve, and bins of the drift histograms.
NARROWING_POINTS = 12
HISTOGRAM_BINS = 30
ACTIONS = ("promote", "rollback", "deprecate", "finalize")
CHAMPION_EVENTS = ("promoted", "rolled_back", "ab_finalized")
# The audit log is served a page at a time, newest first, read from the end of the log.
EVENTS_PAGE = 100  # events a page of /api/events holds unless asked otherwise
MAX_EVENTS_PAGE = 500  # the most one request may ask for
MODEL_EVENTS = 20  # the newest events of its type a model page shows
TIMELINE_CHANGES = 200  # champion changes behind a model page's timeline (the newest)
REPORT_EVENTS = 1000  # the newest events `report --html` keeps
EVENT_KINDS = (
    "registered", "promoted", "rolled_back", "deprecated", "ab_started", "ab_finalized",
    "ab_aborted", "monitored", "unmonitored", "setting_changed",
)  # fmt: skip


def _open(location: Location) -> Project:
    return Project.open(location)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _age_s(ts: str | None, now: datetime) -> float | None:
    if not ts:
        return None
    when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (now - when).total_seconds()


def _finite_doc(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) for k, v in doc.items()}


def _finite(x: Any) -> Any:
    """What a page shows: JSON has no inf or nan (an unbounded interval end becomes null), and
    text shows its control, bidirectional and zero-width characters escaped, as `mlops
    history` prints them (`textsafe.printable`): a reason cannot read backwards or hide."""
    if isinstance(x, str):
        return printable(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {printable(k) if isinstance(k, str) else k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class Skipped(dict[str, int]):
    """Malformed lines a page left out, per stream (a view skips them and says so)."""

    def add(self, stream: str, lines: int) -> None:
        if lines:  # two reads of one log on a page skip the same lines: the larger count
            self[stream] = max(self.get(stream, 0), lines)

    def doc(self) -> list[dict[str, Any]]:
        return [
            {"stream": stream, "log": _log_of(stream), "lines": lines}
            for stream, lines in sorted(self.items())
        ]


def _log_of(stream: str) -> str:
    """Where a directory project keeps a stream's log."""
    return "events.jsonl" if stream == EVENTS else f"logs/{stream}.jsonl"


def skipped_in(docs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every malformed line the pages `docs` left out, per log (for `report --html`)."""
    found = Skipped()
    for doc in docs.values():
        for entry in doc.get("skipped", []) if isinstance(doc, dict) else []:
            found.add(entry["stream"], entry["lines"])
    return found.doc()


def _drift_badge(
    project: Project, model_type: str, version: str, now: datetime, skipped: Skipped
) -> dict[str, Any]:
    """The newest recorded check of a version (read only: nothing is computed), stale when
    old or when samples arrived after it."""
    detector = project.drift_detector(model_type, version)
    checks = detector.latest_checks(1, skip_invalid=True)
    skipped.add(detector.checks, checks.skipped)
    row = checks[-1] if checks else None
    if row is None:
        return {"version": version, "level": None, "score": None, "checked_at": None, "stale": True}
    age = _age_s(row.get("ts"), now)
    return {
        "version": version,
        "level": row["level"],
        "score": row["score"],
        "checked_at": row.get("ts"),
        "stale": age is None or age > STALE_AFTER_S or detector.samples_since(row),
    }


def _model_types(project: Project) -> list[str]:
    return sorted({v.model_type for v in project.registry.list_versions()})


def project_root(location: Location) -> str:
    """Where the project is (ProjectNotFoundError when there is none). Library: Project.open."""
    return str(_open(location).root)


def require(location: Location, page: str, *names: str) -> None:
    """NotFoundError (or ValidationError for a malformed name) unless the page's subject
    exists: cheaper than building the page's data.

    Library calls: registry.list_versions(type), ab.get_test(name), registry.get_version(type,
    v) and drift_detector(type, v).has_reference().
    """
    project = _open(location)
    if page == "model":
        project.registry.list_versions(names[0])
    elif page == "test":
        project.ab.get_test(names[0])
    elif page == "drift":
        project.registry.get_version(names[0], names[1])
        if not project.drift_detector(names[0], names[1]).has_reference():
            raise NotFoundError(f"{names[0]} {names[1]} has no drift reference set")
    else:
        raise NotFoundError(f"no page {page!r}")


def overview(location: Location) -> dict[str, Any]:
    """Every model type: champion, traffic split, running test and its decision, drift badge.

    Library calls: registry.list_versions(), ab.list_tests(), ab.evaluate_test(name) for each
    running test; the champion's last drift check.
    """
    project = _open(location)
    now = _now()
    skipped = Skipped()
    versions = project.registry.list_versions()
    for v in versions:
        skipped.add(metrics_stream(v.model_type, v.version), v.skipped_lines)
    tests = project.ab.list_tests()
    for t in tests:
        skipped.add(ab_stream(t.test.name), t.skipped_lines)
    running = {t["model_type"]: t for t in tests if t["status"] == "running"}
    out = []
    for model_type in sorted({v.model_type for v in versions}):
        mine = [v for v in versions if v.model_type == model_type]
        champion = next((v for v in mine if v.is_champion), None)
        test = running.get(model_type)
        test_doc = None
        if test is not None:
            evaluation = project.ab.evaluate_test(test["name"], skip_invalid=True)
            test_doc = {
                "name": test["name"],
                "control": test["control_version"],
                "treatment": test["treatment_version"],
                "decision": evaluation.decision,
                "recommendation": evaluation.recommendation,
                "requests": evaluation.requests,
            }
        out.append(
            {
                "model_type": model_type,
                "champion": champion.version if champion else None,
                "versions": len(mine),
                "traffic": [
                    {"version": v.version, "percentage": v.traffic_percentage}
                    for v in mine
                    if v.traffic_percentage > 0
                ],
                "test": test_doc,
                "drift": _drift_badge(project, model_type, champion.version, now, skipped)
                if champion
                else None,
            }
        )
    doc: dict[str, Any] = {
        "generated_at": _iso(now),
        "stale_after_s": STALE_AFTER_S,
        "model_types": out,
        "tests": [
            {
                "name": t["name"],
                "model_type": t["model_type"],
                "status": t["status"],
                "control": t["control_version"],
                "treatment": t["treatment_version"],
                "started_at": t.get("started_at"),
                "finalized_at": t.get("finalized_at"),
                "requests": t["requests"],
            }
            for t in tests
        ],
        "skipped": skipped.doc(),
    }
    return _finite_doc(doc)


def model(location: Location, model_type: str) -> dict[str, Any]:
    """One model type: versions (SemVer order) with checksum, metrics, drift; champion timeline;
    its newest events (a page of the audit log, with the cursor of the next).

    Library calls: registry.list_versions(type), registry.aliases(type),
    registry.history_page(type), ab.list_tests(), and each version's last drift check.
    """
    project = _open(location)
    now = _now()
    skipped = Skipped()
    versions = project.registry.list_versions(model_type)  # NotFoundError when unknown
    recent = project.registry.history_page(model_type, limit=MODEL_EVENTS, skip_invalid=True)
    changes = project.registry.history_page(
        model_type, CHAMPION_EVENTS, limit=TIMELINE_CHANGES, skip_invalid=True
    )
    skipped.add(EVENTS, max(recent.skipped, changes.skipped))
    rows = []
    for v in versions:
        skipped.add(metrics_stream(model_type, v.version), v.skipped_lines)
        row = v.to_dict()
        row["drift"] = _drift_badge(project, model_type, v.version, now, skipped)
        rows.append(row)
    tests = [
        {
            "name": t["name"],
            "status": t["status"],
            "control": t["control_version"],
            "treatment": t["treatment_version"],
        }
        for t in project.ab.list_tests()
        if t["model_type"] == model_type
    ]
    champion = next((v.version for v in versions if v.is_champion), None)
    doc: dict[str, Any] = {
        "model_type": model_type,
        "champion": champion,
        "versions": rows,
        "aliases": {a.alias: a.version for a in project.registry.aliases(model_type)},
        "tests": tests,
        "timeline": champion_timeline([e.to_dict() for e in reversed(changes)], champion, now),
        # the timeline starts at the oldest of the newest TIMELINE_CHANGES champion changes
        "timeline_complete": changes.next is None,
        "events": [e.to_dict() for e in recent],  # newest first
        "events_next": recent.next,  # `before` of the audit log's next page (None: no more)
        "skipped": skipped.doc(),
    }
    return _finite_doc(doc)


def champion_timeline(
    events: list[dict[str, Any]], champion: str | None, now: datetime
) -> list[dict[str, Any]]:
    """Which version served when, and why: one span per champion change (pure)."""
    spans: list[dict[str, Any]] = []
    for e in events:
        kind = e.get("event")
        if kind not in CHAMPION_EVENTS:
            continue
        version = e.get("version")
        if spans and spans[-1]["version"] == version:
            continue
        why = {
            "promoted": "promoted",
            "rolled_back": f"rolled back from {e.get('previous')}",
            "ab_finalized": f"A/B test {e.get('test')}: {e.get('decision')}",
        }[kind]
        if e.get("forced"):
            why += ", forced"
        if e.get("reason"):
            why += f" ({e['reason']})"
        if spans:
            spans[-1]["until"] = e.get("ts")
        spans.append(
            {
                "version": version,
                "since": e.get("ts"),
                "until": None,
                "why": why,
                "actor": e.get("actor"),
                "kind": kind,
            }
        )
    if spans and champion is not None and spans[-1]["version"] != champion:
        spans[-1]["until"] = None
    return spans


def ab_test(location: Location, name: str) -> dict[str, Any]:
    """An A/B test: its configuration, the evaluation (as `mlops ab evaluate --json`), and the
    differences' intervals evaluated on prefixes of the request log.

    Library calls: ab.get_test(name), ab.evaluate_test(name).to_dict(), ab_testing.decide on
    cumulative sums.
    """
    project = _open(location)
    test = project.ab.get_test(name)  # NotFoundError when unknown
    evaluation = project.ab.evaluate_test(name, skip_invalid=True).to_dict()
    skipped = Skipped()
    skipped.add(ab_stream(name), evaluation["skipped_lines"])
    return _finite_doc(
        {
            "test": test.to_dict(),
            "evaluation": evaluation,
            "narrowing": narrowing(project, name, test, evaluation["requests"]),
            "plan": plan_progress(project, name, evaluation),
            "skipped": skipped.doc(),
        }
    )


def controller(location: Location, name: str) -> dict[str, Any]:
    """A test's decision and `safe_to_continue` for delivery controllers (docs/controllers.md).

    Library calls: ab.controller_verdict(name).
    """
    return _finite_doc(_open(location).ab.controller_verdict(name))


def plan_progress(project: Project, name: str, evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The users the test has against those its plan needs for its `duration_days` (the plan
    from the latest earlier test of its model type with user ids; None without one).

    Library call: ab.plan_for_test(name).
    """
    plan = project.ab.plan_for_test(name)
    if plan is None:
        return None
    metrics = evaluation["metrics"]
    users = sum(metrics[arm].get("users") or 0 for arm in ("control", "treatment"))
    return {
        "users": users,
        "planned_users": plan.users,
        "progress": min(users / plan.users, 1.0),
        "effect": plan.effect,
        "power": plan.power,
        "days": plan.given_days,
        "source": plan.source,
        "summary": plan.summary(),
    }


def narrowing(
    project: Project, name: str, test: ABTest, total: int
) -> list[dict[str, Any]]:
    """The three differences (estimate, interval) after the first k of `total` requests, at
    a few k, in the unit `ab evaluate` uses: running sums over the requests, a chunk at a time
    (memory bounded by the chunk and the users)."""
    from ..decision import UserTotals, analysis_arms, decide
    from ..records import VARIANTS
    from ..summary import fold, fold_users

    if total < 4:
        return []
    points = sorted(
        {max(2, round(total * (i + 1) / NARROWING_POINTS)) for i in range(NARROWING_POINTS)}
    )
    arms: dict[str, Moments] = {}
    users = UserTotals()
    seen = 0
    out: list[dict[str, Any]] = []
    for rows in project.store.scan(ab_stream(name), skip_invalid=True):
        pos = 0
        while pos < len(rows) and len(out) < len(points):
            segment = rows[pos : pos + points[len(out)] - seen]
            fold(arms, segment, "variant", VARIANTS)
            fold_users(users, segment, "variant")
            seen += len(segment)
            pos += len(segment)
            if seen == points[len(out)]:
                control, treatment = analysis_arms(
                    arms.get("control") or Moments(), arms.get("treatment") or Moments(), users
                )
                result = decide(name, test.config(), control, treatment, 0.0)
                point: dict[str, Any] = {"requests": seen}
                for key in ("confidence_diff", "error_rate_diff", "inference_time_ms_diff"):
                    d = result.metrics[key]
                    point[key] = {"estimate": d["estimate"], "ci": list(d["ci"])}
                out.append(point)
    return out


def drift(location: Location, model_type: str, version: str) -> dict[str, Any]:
    """A version's drift: the report (as `mlops drift report --json`), check history against
    the level thresholds, and histograms of reference and window.

    Library calls: registry.get_version(type, v), drift_detector(type, v).get_drift_report(),
    .history(), project.settings.drift, the samples through the store.
    """
    require(location, "drift", model_type, version)
    project = _open(location)
    detector = project.drift_detector(model_type, version)
    from ..feature_drift import ranked

    report = detector.get_drift_report(skip_invalid=True)
    settings = project.settings.drift
    checks = detector.history(skip_invalid=True)
    skipped = Skipped()
    skipped.add(detector.checks, checks.skipped)
    now = _now()
    history = [
        {
            "ts": r.get("ts"),
            "score": r["score"],
            "level": r["level"],
            "status": r["status"],
            "components": r.get("components"),
        }
        for r in checks
    ]
    return _finite_doc(
        {
            "model_type": model_type,
            "model_version": version,
            "report": report.to_dict(),
            # The report's `checked_at` is when these figures were computed (now, read-only);
            # the last recorded check is what the overview and the alerts go by.
            "last_check": _drift_badge(project, model_type, version, now, skipped),
            "stale_after_s": STALE_AFTER_S,
            "thresholds": dict(settings["thresholds"]),
            "weights": dict(settings["weights"]),
            "history": history,
            "histograms": _histograms(detector, settings, skipped),
            # Input features most drifted first, each with its reference vs window shares.
            "feature_order": ranked(report.features),
            "feature_histograms": detector.feature_histograms(),
            "skipped": skipped.doc(),
        }
    )


def _histograms(
    detector: DriftDetector, settings: dict[str, Any], skipped: Skipped
) -> dict[str, Any]:
    """Reference and window distributions of prediction and confidence on shared bins."""
    import numpy as np

    store = detector.store
    reference = store.samples(
        detector.reference, first=int(settings["reference_size"]), skip_invalid=True
    )
    window = store.samples(
        detector.production, last=int(settings["window_size"]), skip_invalid=True
    )
    skipped.add(detector.reference, reference.skipped)
    skipped.add(detector.production, window.skipped)
    ref_pred, ref_conf = reference.prediction, reference.confidence
    win_pred, win_conf = window.prediction, window.confidence
    out: dict[str, Any] = {}
    for key, ref, win in (("prediction", ref_pred, win_pred), ("confidence", ref_conf, win_conf)):
        both = np.concatenate([ref, win])
        if both.size == 0:
            out[key] = {"edges": [], "reference": [], "window": []}
            continue
        low, high = float(both.min()), float(both.max())
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
        out[key] = {
            "edges": [round(float(x), 6) for x in edges],
            "reference": _shares(np.histogram(ref, edges)[0]),
            "window": _shares(np.histogram(win, edges)[0]),
            "n_reference": int(ref.size),
            "n_window": int(win.size),
        }
    return out


def _shares(counts: Any) -> list[float]:
    total = int(counts.sum())
    return [round(int(c) / total, 6) if total else 0.0 for c in counts]


def drift_versions(location: Location) -> list[dict[str, str]]:
    """Every (model type, version) with a drift reference set.

    Library call: project.drift_detectors().
    """
    project = _open(location)
    return [{"model_type": t, "model_version": v} for (t, v) in project.drift_detectors()]


def events(
    location: Location,
    model_type: str | None = None,
    kind: str | None = None,
    before: int | None = None,
    limit: int = EVENTS_PAGE,
) -> dict[str, Any]:
    """A page of audit events, newest first, optionally of one model type and one kind:
    the `limit` newest before the cursor `before` (the `next` of the page before it; None:
    from the newest). Read from the end of the log: memory grows with the page only.

    Library call: registry.history_page(type, kind, limit, before).
    """
    project = _open(location)
    page = project.registry.history_page(
        model_type or None, kind or None, limit, before, skip_invalid=True
    )
    skipped = Skipped()
    skipped.add(EVENTS, page.skipped)
    rows = [e.to_dict() for e in page]
    doc: dict[str, Any] = {
        "model_type": model_type or None,
        "kind": kind or None,
        "kinds": sorted(
            {*EVENT_KINDS, *(str(e.get("event")) for e in rows), *([kind] if kind else [])}
        ),
        "model_types": _model_types(project),
        "events": rows,
        "limit": limit,
        "before": before,
        "next": page.next,
        "skipped": skipped.doc(),
    }
    return _finite_doc(doc)


def act(location: Location, action: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one change the dashboard offers, with the CLI's library calls and errors.

    Library calls: registry.promote_to_champion / rollback / deprecate, ab.finalize_test.
    """
    project = _open(location)

    def text(key: str, required: bool = True) -> str | None:
        value = args.get(key)
        if value is None or value == "":
            if required:
                raise ValidationError(f"{action} needs {key!r}")
            return None
        if not isinstance(value, str):
            raise ValidationError(f"{key} must be a string")
        return value

    reason = text("reason", required=False)
    if action == "promote":
        try:
            mv = project.registry.promote_to_champion(
                str(text("model_type")), str(text("version")), reason=reason
            )
        except ConflictError as exc:
            raise _as_page_says(exc, PROMOTE_ON_PAGE) from None
        return _finite_doc({"action": action, "result": mv.to_dict()})
    if action == "rollback":
        mv = project.registry.rollback(str(text("model_type")), reason=reason)
        return _finite_doc({"action": action, "result": mv.to_dict()})
    if action == "deprecate":
        mv = project.registry.deprecate(
            str(text("model_type")), str(text("version")), reason=reason
        )
        return _finite_doc({"action": action, "result": mv.to_dict()})
    if action == "finalize":
        force = args.get("force", False)
        if not isinstance(force, bool):
            raise ValidationError("force must be true or false")
        if force and not (reason or "").strip():
            raise ValidationError("promoting anyway needs a reason (it goes into the audit log)")
        try:
            done = project.ab.finalize_test(
                str(text("test")), str(text("decision")), force=force, reason=reason
            )
        except ConflictError as exc:
            raise _as_page_says(exc, FINALIZE_ON_PAGE) from None
        return _finite_doc({"action": action, "result": done.to_dict()})
    raise NotFoundError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")


# A refusal's advice as the page offers it: the page has no command-line flags.
FINALIZE_ON_PAGE = {
    "pass force=True to promote anyway": 'use "Promote anyway" below, with a reason, to '
    "promote regardless (recorded as forced in the audit log)",
}
PROMOTE_ON_PAGE = {
    "`, or pass force=True": "` or with the Finalize buttons on the test's page",
}


def _as_page_says(exc: ConflictError, advice: dict[str, str]) -> ConflictError:
    """The library's refusal, its advice worded for the page (its `for_cli` is what the
    server answers)."""
    exc.cli = advice
    return exc


def page_path(page: str, *names: str) -> str:
    """A page's API path as the page's script builds it (`encodeURIComponent` of each name):
    the HTML report's data is keyed by it (`v1.1.0+build.7` is `v1.1.0%2Bbuild.7`)."""
    from urllib.parse import quote

    return "/" + "/".join([page, *(quote(n, safe="-_.!~*'()") for n in names)])


def bundle(
    location: Location, model_type: str | None = None, test: str | None = None
) -> dict[str, Any]:
    """Everything the HTML report shows, keyed by the API path the dashboard would fetch."""
    project = _open(location)
    types = [model_type] if model_type else _model_types(project)
    if model_type:
        project.registry.list_versions(model_type)  # NotFoundError when unknown
    if test:
        project.ab.get_test(test)
        tests = [test]
    else:
        tests = [
            t["name"]
            for t in project.ab.list_tests()
            if not model_type or t["model_type"] == model_type
        ]
    docs: dict[str, Any] = {"/overview": overview(location)}
    if model_type:
        docs["/overview"]["model_types"] = [
            m for m in docs["/overview"]["model_types"] if m["model_type"] == model_type
        ]
        docs["/overview"]["tests"] = [
            t for t in docs["/overview"]["tests"] if t["model_type"] == model_type
        ]
    if test:
        docs["/overview"]["tests"] = [t for t in docs["/overview"]["tests"] if t["name"] == test]
    for t in types:
        docs[page_path("model", t)] = model(location, t)
    for name in tests:
        docs[page_path("test", name)] = ab_test(location, name)
    for d in drift_versions(location):
        if d["model_type"] in types:
            path = page_path("drift", d["model_type"], d["model_version"])
            docs[path] = drift(location, d["model_type"], d["model_version"])
    docs["/events"] = events(location, model_type, limit=REPORT_EVENTS)
    docs["/events"]["kept"] = REPORT_EVENTS  # a report keeps the newest events, no more
    return docs
