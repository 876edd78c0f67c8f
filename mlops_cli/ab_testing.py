"""A/B tests between a champion and a new version: assignment, recording, decisions."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from . import jsonl
from .batch import BatchResult, append_batch, check_ts
from .errors import ConflictError, NotFoundError, ValidationError
from .limits import INFERENCE_TIME_MS, require_finite
from .naming import validate_name, validate_version
from .registry import bucket, check_finite
from .schema import AB_FIELDS
from .summary import Moments, Summary, summarize

if TYPE_CHECKING:
    from .project import Project, Transaction

VARIANTS = ("control", "treatment")
REQUEST_FIELDS = {"variant", "inference_time_ms", "confidence", "error", "user_id", "ts"}
NUMBER = (int, float)
DECISIONS = ("promote", "rollback", "continue")


@dataclass
class ABTestConfig:
    """An A/B test. Fields left None take the project's `ab.defaults` when the test starts."""

    name: str
    model_type: str
    control_version: str | None = None
    treatment_version: str = ""
    treatment_traffic_pct: float | None = None
    duration_days: float | None = None
    min_requests: int | None = None
    max_error_rate_increase: float | None = None
    min_confidence_improvement: float | None = None
    alpha: float | None = None
    method: str | None = None
    sequential_tuning: int | None = None

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ABTestConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValidationError(
                f"unknown A/B test field {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**{k: v for k, v in doc.items()})

    def resolved(self, defaults: dict[str, Any]) -> ABTestConfig:
        """A copy with every unset field taken from `defaults`, each value validated."""
        values = {}
        for key, check in AB_FIELDS.items():
            value = getattr(self, key)
            value = defaults[key] if value is None else value
            try:
                values[key] = check(value, key)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
        pct = values["treatment_traffic_pct"]
        if not 0 < pct < 100 or abs(pct * 100 - round(pct * 100)) > 1e-9:
            raise ValidationError(
                f"treatment_traffic_pct must be above 0 and below 100 in steps of 0.01, not {pct!r}"
            )
        return replace(self, **values)


@dataclass
class ArmFigures:
    version: str
    requests: int
    error_rate: float
    avg_confidence: float
    avg_inference_time_ms: float


@dataclass
class Evaluation:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def days_between(start: str, now: datetime) -> float:
    started = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return max((now - started).total_seconds() / 86400.0, 0.0)


def decide(
    name: str, config: dict[str, Any], control: Moments, treatment: Moments, days_elapsed: float
) -> Evaluation:
    """Apply the decision rules, in order, to the arms' sufficient statistics (no I/O)."""
    from .stats import ArmStats, Difference, compare, compare_rates, sample_ratio_mismatch

    alpha, method, tuning = config["alpha"], config["method"], config["sequential_tuning"]
    error = compare_rates(
        control.n, control.errors, treatment.n, treatment.errors, alpha, method, tuning
    )

    def means(total: str, squares: str) -> Difference:
        arms = [
            ArmStats.from_sums(m.n, getattr(m, total), getattr(m, squares))
            for m in (control, treatment)
        ]
        return compare(arms[0], arms[1], alpha, method, tuning)

    confidence = means("confidence_sum", "confidence_sum_squares")
    latency = means("time_sum", "time_sum_squares")
    srm = sample_ratio_mismatch(control.n, treatment.n, config["treatment_traffic_pct"] / 100)
    requests = control.n + treatment.n
    max_err, min_conf = config["max_error_rate_increase"], config["min_confidence_improvement"]
    treatment_v = config["treatment_version"]

    reasons: list[str] = []
    if error.estimate > max_err and error.ci[0] > 0:
        decision = "rollback"
        reasons.append(
            f"error rate {error.estimate:+.4f} exceeds the allowed +{max_err:.4f}, interval "
            f"[{error.ci[0]:+.4f}, {error.ci[1]:+.4f}] wholly above 0"
        )
        recommendation = (
            f"Roll back {treatment_v}: it raises the error rate by {error.estimate:+.2%} "
            f"(at least {error.ci[0]:+.2%}); run `mlops ab finalize {name} rollback`."
        )
    else:
        if requests < config["min_requests"]:
            reasons.append(f"{requests} of {config['min_requests']} requests")
        left = config["duration_days"] - days_elapsed
        if left > 0:
            reasons.append(f"{left:.1f} days left")
        if srm.mismatch:
            reasons.append(f"sample ratio mismatch p={srm.p_value:.2g}")
        empty = [
            f"{arm} arm has {m.n} requests, too few to compare"
            for arm, m in (("control", control), ("treatment", treatment))
            if m.n < 2
        ]
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
        decision = "continue" if reasons else "promote"
        if decision == "promote":
            reasons.append(
                f"confidence {confidence.estimate:+.3f} (interval {_fmt(confidence.ci[0])} to "
                f"{_fmt(confidence.ci[1])}), error rate at most {_fmt(error.ci[1])}, "
                f"{requests} requests over {days_elapsed:.1f} days"
            )
            recommendation = (
                f"Promote {treatment_v}: confidence up {confidence.estimate:+.3f} with no "
                f"error-rate harm beyond +{max_err:.3f}; run `mlops ab finalize {name} promote`."
            )
        elif srm.mismatch:
            recommendation = (
                "Check the traffic split before trusting this test: the arms' counts do not "
                "match the configured share (sample ratio mismatch)."
            )
        else:
            recommendation = f"Keep the test running: {reasons[0]}."

    metrics = {
        "control": asdict(_arm(config["control_version"], control)),
        "treatment": asdict(_arm(treatment_v, treatment)),
        "error_rate_diff": error.to_dict(),
        "confidence_diff": confidence.to_dict(),
        "inference_time_ms_diff": latency.to_dict(),
        "srm": srm.to_dict(),
    }
    return Evaluation(
        name, decision, recommendation, reasons, method, alpha, requests, days_elapsed, metrics
    )


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def _arm(version: str, m: Moments) -> ArmFigures:
    return ArmFigures(version, m.n, m.error_rate, m.avg_confidence, m.avg_inference_time_ms)


def validate_request(doc: Any, where: str = "") -> dict[str, Any]:
    """A recorded request with its fields checked; `where` prefixes messages (batch line)."""
    if type(doc) is dict and doc.keys() <= REQUEST_FIELDS and "ts" not in doc:
        # The common case, checked without building any message.
        t: Any = doc.get("inference_time_ms")
        c: Any = doc.get("confidence")
        if (
            doc.get("variant") in VARIANTS
            and type(t) in NUMBER
            and 0 <= t <= INFERENCE_TIME_MS.high
            and type(c) in NUMBER
            and 0 <= c <= 1
            and type(doc.get("error", False)) is bool
            and type(doc.get("user_id", "")) in (str, int)
        ):
            return doc
    if not isinstance(doc, dict):
        raise ValidationError(f"{where}expected a JSON object")
    unknown = set(doc) - REQUEST_FIELDS
    if unknown:
        raise ValidationError(f"{where}unknown field {sorted(unknown)[0]!r}")
    for key in ("variant", "inference_time_ms", "confidence"):
        if key not in doc:
            raise ValidationError(f"{where}missing {key!r}")
    if doc["variant"] not in VARIANTS:
        raise ValidationError(
            f"{where}variant must be control or treatment, not {doc['variant']!r}"
        )
    check_finite(f"{where}inference_time_ms", doc["inference_time_ms"], 0, INFERENCE_TIME_MS.high)
    check_finite(f"{where}confidence", doc["confidence"], 0, 1)
    if not isinstance(doc.get("error", False), bool):
        raise ValidationError(f"{where}error must be true or false, not {doc['error']!r}")
    if not isinstance(doc.get("user_id", ""), (str, int)):
        raise ValidationError(f"{where}user_id must be a string")
    if "ts" in doc:
        check_ts(doc["ts"], where)
    return doc


class ABTestManager:
    """Starts, routes, records and decides the A/B tests of a project."""

    def __init__(self, project: Project, clock: Callable[[], datetime] | None = None) -> None:
        self.project = project
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # -- reading -----------------------------------------------------------------------------

    def _test(self, name: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        validate_name(name, "A/B test name")
        tests = (state or self.project.state())["ab_tests"]
        if name not in tests:
            known = ", ".join(sorted(tests)) or "none started yet"
            raise NotFoundError(f"unknown A/B test {name!r} (known: {known})")
        return tests[name]  # type: ignore[no-any-return]

    @property
    def active_tests(self) -> dict[str, dict[str, Any]]:
        """Running tests by name (the seed's `_active_tests`)."""
        return {
            n: t for n, t in self.project.state()["ab_tests"].items() if t["status"] == "running"
        }

    _active_tests = active_tests

    def get_test(self, name: str) -> dict[str, Any]:
        return {"name": name, **self._test(name)}

    def list_tests(self) -> list[dict[str, Any]]:
        out = []
        for name, test in sorted(self.project.state()["ab_tests"].items()):
            summary = self._summary(name)
            out.append(
                {
                    "name": name,
                    **test,
                    "requests": {v: summary.arm(v).n for v in VARIANTS},
                }
            )
        return out

    def status(self, name: str) -> dict[str, Any]:
        test = self._test(name)
        summary = self._summary(name)
        return {
            "name": name,
            **test,
            "days_elapsed": days_between(test["started_at"], self.clock()),
            "requests": {v: summary.arm(v).n for v in VARIANTS},
            "torn_bytes": summary.torn_bytes,
        }

    # -- starting and routing ----------------------------------------------------------------

    def start_test(self, config: ABTestConfig) -> dict[str, Any]:
        """Start a test: the treatment gets `treatment_traffic_pct`, the control the rest."""
        validate_name(config.name, "A/B test name")
        validate_name(config.model_type, "model type")
        validate_version(config.treatment_version)
        if config.control_version is not None:
            validate_version(config.control_version)
        with self.project.transaction() as txn:
            state = txn.state
            cfg = config.resolved(state["settings"]["ab"]["defaults"])
            if cfg.name in state["ab_tests"]:
                raise ConflictError(f"A/B test {cfg.name} already exists; choose another name")
            registry = self.project.registry
            model = registry._model(state, cfg.model_type)
            for name, test in state["ab_tests"].items():
                if test["model_type"] == cfg.model_type and test["status"] == "running":
                    raise ConflictError(
                        f"A/B test {name} is already running on {cfg.model_type}; finalize it "
                        "first (one running test per model type)"
                    )
            champion = model["champion"]
            if champion is None:
                raise ConflictError(f"{cfg.model_type} has no champion to test against")
            control = cfg.control_version or champion
            if control != champion:
                raise ConflictError(
                    f"control {control} is not the champion of {cfg.model_type} ({champion}); "
                    "the control must be the champion"
                )
            if cfg.treatment_version == control:
                raise ValidationError("treatment and control are the same version; pick another")
            treatment = registry._record(state, cfg.model_type, cfg.treatment_version)
            if treatment["deprecated"]:
                raise ConflictError(
                    f"{cfg.model_type} {cfg.treatment_version} is deprecated and cannot be tested"
                )
            record = {
                "model_type": cfg.model_type,
                "control_version": control,
                "treatment_version": cfg.treatment_version,
                **{k: getattr(cfg, k) for k in AB_FIELDS},
                "status": "running",
                "started_at": self.clock().isoformat().replace("+00:00", "Z"),
                "finalized_at": None,
            }
            state["ab_tests"][cfg.name] = record
            pct = record["treatment_traffic_pct"]
            model["versions"][control]["traffic_percentage"] = round(100.0 - pct, 2)
            model["versions"][cfg.treatment_version]["traffic_percentage"] = pct
            txn.event(
                "ab_started",
                test=cfg.name,
                model_type=cfg.model_type,
                control=control,
                treatment=cfg.treatment_version,
                traffic_pct=pct,
            )
        return {"name": cfg.name, **record}

    def assign_variant(self, model_type: str, user_id: str) -> dict[str, Any]:
        """Deterministic, sticky assignment: {"name", "version", "model"}."""
        state = self.project.state()
        registry = self.project.registry
        model = registry._model(state, model_type)
        for name, test in state["ab_tests"].items():
            if test["model_type"] == model_type and test["status"] == "running":
                treated = bucket(name, str(user_id)) < round(test["treatment_traffic_pct"] * 100)
                variant = "treatment" if treated else "control"
                version = test[f"{variant}_version"]
                return {
                    "name": variant,
                    "version": version,
                    "model": registry._build(model_type, version, model),
                    "test": name,
                }
        champion = registry.require_champion(model_type)
        return {"name": "champion", "version": champion.version, "model": champion, "test": None}

    # -- recording ---------------------------------------------------------------------------

    def _running(self, name: str) -> dict[str, Any]:
        test = self._test(name)
        if test["status"] != "running":
            raise ConflictError(
                f"A/B test {name} is finalized ({test['status']}); start a new test to record"
            )
        return test

    def record_result(
        self,
        test_name: str,
        variant: str,
        inference_time_ms: float,
        confidence: float,
        error: bool = False,
        user_id: str | None = None,
        ts: str | None = None,
    ) -> None:
        """Record one request of a running test (cheap: one appended line)."""
        self._running(test_name)
        doc: dict[str, Any] = {
            "ts": ts or jsonl.utc_now(),
            "variant": variant,
            "inference_time_ms": inference_time_ms,
            "confidence": confidence,
            "error": error,
        }
        if user_id is not None:
            doc["user_id"] = user_id
        validate_request(doc)
        self.project.append_log(self.project.ab_log(test_name), orjson.dumps(doc) + b"\n")

    def record_batch(
        self,
        test_name: str,
        data: bytes,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Record a JSONL batch all or nothing, exactly once per batch id (default: its hash)."""
        self._running(test_name)
        return append_batch(
            self.project.ab_log(test_name),
            data,
            validate_request,
            self.project._lock_timeout(),
            batch_id,
            progress,
            root=self.project.root,
        )

    # -- deciding ----------------------------------------------------------------------------

    def _summary(self, name: str, skip_invalid: bool = False) -> Summary:
        return summarize(self.project.ab_log(name), "variant", skip_invalid, VARIANTS)

    def evaluate_test(
        self, test_name: str, apply: bool = False, skip_invalid: bool = False
    ) -> Evaluation:
        """Evaluate the decision rules on all recorded requests (reading only new lines).

        A malformed line in the log is an error, or with `skip_invalid` skipped and counted.
        """
        test = self._test(test_name)
        summary = self._summary(test_name, skip_invalid)
        days = days_between(test["started_at"], self.clock())
        if test["finalized_at"]:
            days = days_between(test["started_at"], _parse(test["finalized_at"]))
        for arm in ("control", "treatment"):  # never decide on sums that overflowed
            for name, value in asdict(summary.arm(arm)).items():
                require_finite(name, value, f"the {arm} requests of A/B test {test_name}")
        result = decide(test_name, test, summary.arm("control"), summary.arm("treatment"), days)
        result.status = test["status"]
        result.skipped_lines = len(summary.skipped)
        result.torn_bytes = summary.torn_bytes
        if apply and test["status"] == "running" and result.decision in ("promote", "rollback"):
            self.finalize_test(test_name, result.decision)
            result.applied = True
            result.status = "promoted" if result.decision == "promote" else "rolled_back"
        return result

    def finalize_test(self, test_name: str, decision: str, force: bool = False) -> dict[str, Any]:
        """End a test: `promote` makes the treatment champion, `rollback` keeps the control.

        `promote` is refused unless the evaluation says promote (or `force`).
        """
        if decision not in ("promote", "rollback"):
            raise ValidationError(f"decision must be promote or rollback, not {decision!r}")
        test = self._running(test_name)
        evaluation = None
        if decision == "promote" and not force:
            evaluation = self.evaluate_test(test_name)
            if evaluation.decision != "promote":
                raise ConflictError(
                    f"the evaluation of {test_name} says {evaluation.decision}, not promote "
                    f"({'; '.join(evaluation.reasons)}); pass --force to promote anyway"
                )
        with self.project.transaction() as txn:
            test = self._test(test_name, txn.state)
            if test["status"] != "running":
                raise ConflictError(f"A/B test {test_name} was finalized meanwhile")
            self._finish(txn, test_name, test, decision, forced=force)
        return {"name": test_name, **test}

    def _finish(
        self, txn: Transaction, name: str, test: dict[str, Any], decision: str, forced: bool
    ) -> None:
        from .registry import ModelRegistry

        model = txn.state["models"][test["model_type"]]
        test["status"] = "promoted" if decision == "promote" else "rolled_back"
        test["finalized_at"] = self.clock().isoformat().replace("+00:00", "Z")
        keep = test["treatment_version"] if decision == "promote" else model["champion"]
        ModelRegistry._make_champion(model, keep)
        txn.event(
            "ab_finalized",
            test=name,
            model_type=test["model_type"],
            decision=decision,
            version=keep,
            forced=forced or None,
        )


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))
