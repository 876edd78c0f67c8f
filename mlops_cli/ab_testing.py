"""A/B tests between a champion and a new version: assignment, recording, decisions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .batch import Source
from .decision import ArmFigures, Evaluation, analysis_arms, decide
from .errors import ConflictError, GateError, ValidationError
from .limits import require_finite
from .naming import validate_name, validate_version
from .records import VARIANTS, plain_number, validate_request
from .registry import ModelRegistry, ModelVersion
from .results import MappingResult
from .schema import AB_FIELDS, DECISION_RULES, HARM_GUARDRAILS, TEST_RULES
from .state import ABTest
from .store.base import BatchResult, Store, Summary, ab_stream
from .timeutil import days_between, format_ts, parse_ts, stamp

__all__ = ["ABTestConfig", "ABTestManager", "ArmFigures", "Assignment", "Evaluation", "decide"]


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
    max_confidence_drop: float | None = None
    max_latency_increase_ms: float | None = None
    max_latency_increase: float | str | None = None  # a share of the control's mean: 0.1, "10%"
    harm_tolerance: dict[str, float] | None = None  # per guardrail; unset keys from settings

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ABTestConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValidationError(
                f"unknown A/B test field {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**{k: v for k, v in doc.items()})

    @classmethod
    def from_sources(
        cls, name: str, config_file: Any = None, **flags: Any
    ) -> ABTestConfig:
        """`ab start`: the fields of a YAML config file, overridden by the flags that are set."""
        from .schema import load_yaml_mapping

        doc: dict[str, Any] = load_yaml_mapping(config_file) if config_file else {}
        doc.update({k: v for k, v in flags.items() if v is not None})
        doc["name"] = name
        for key, flag in (("model_type", "--model-type"), ("treatment_version", "--treatment")):
            if not doc.get(key):
                raise ValidationError(f"{flag} is required (or {key} in --config-file)")
        return cls.from_dict(doc)

    def resolved(
        self, defaults: dict[str, Any], harm_tolerance: dict[str, float] | None = None
    ) -> ABTestConfig:
        """A copy with every unset field taken from `defaults` (and the harm tolerances from
        `harm_tolerance`, the `ab.harm_tolerance` setting), each value validated.

        The latency guardrail has one margin: the relative `max_latency_increase` when given;
        else an absolute `max_latency_increase_ms` when one is set (given, or the project's
        default); else the default relative one (10% of the control's mean). Giving both is
        an error.
        """
        if self.max_latency_increase is not None and self.max_latency_increase_ms is not None:
            raise ValidationError(
                "give one latency margin: max_latency_increase (relative, e.g. 10%) or the "
                "absolute one in ms, not both",
                field="max_latency_increase",
            )
        values = {}
        for key, check in AB_FIELDS.items():
            value = getattr(self, key)
            value = defaults[key] if value is None else value
            try:
                values[key] = check(value, key)
            except ValueError as exc:
                raise ValidationError(str(exc), field=key) from None
        if self.max_latency_increase is not None:
            values["max_latency_increase_ms"] = None  # given: the relative margin, alone
        elif values["max_latency_increase_ms"] is not None:
            values["max_latency_increase"] = None  # an absolute margin replaces the default
        tolerance = {**(harm_tolerance or {}), **(self.harm_tolerance or {})}
        try:
            values["harm_tolerance"] = TEST_RULES["harm_tolerance"](
                {k: tolerance.get(k, 0.0) for k in HARM_GUARDRAILS} | tolerance, "harm_tolerance"
            )
        except ValueError as exc:
            raise ValidationError(str(exc), field="harm_tolerance") from None
        pct = values["treatment_traffic_pct"]
        if not 0 < pct < 100 or abs(pct * 100 - round(pct * 100)) > 1e-9:
            raise ValidationError(
                "treatment_traffic_pct must be above 0 and below 100 in steps of 0.01, "
                f"not {pct!r}",
                field="treatment_traffic_pct",
            )
        return replace(self, **values)


GATES = ("harm", "rollback", "continue", "promote")


def parse_gates(value: str | None) -> frozenset[str]:
    """`--fail-on harm|rollback[,continue][,promote]`: the decisions that fail a pipeline."""
    chosen = frozenset(v.strip() for v in (value or "").split(",") if v.strip())
    wrong = sorted(chosen - set(GATES))
    if wrong:
        raise ValidationError(
            f"--fail-on takes harm, rollback, continue or promote, not {wrong[0]!r}"
        )
    return chosen


def gate(evaluation: Evaluation, gates: frozenset[str]) -> None:
    """GateError (exit 3) when the decision is one of `gates` (`harm`: a rollback for harm).

    A test finalized before this evaluation trips nothing: the pipeline that decided it has
    run, and a later run must not fail on a decision already carried out.
    """
    if evaluation.status != "running" and not evaluation.applied:
        return
    decision = evaluation.decision
    harm = decision == "rollback" and evaluation.rollback_cause == "harm"
    if decision in gates or (harm and "harm" in gates):
        cause = f" ({evaluation.rollback_cause})" if evaluation.rollback_cause else ""
        raise GateError(
            f"decision {decision}{cause} of {evaluation.test} (--fail-on {','.join(sorted(gates))})"
        )


@dataclass
class Assignment(MappingResult):
    """Which variant serves a user: `name` (control, treatment, or champion), its version."""

    name: str
    version: str
    model: ModelVersion
    test: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "model": self.model.to_dict()}

    def __getitem__(self, key: str) -> Any:  # per request: no to_dict (it reads the metrics)
        if key in ("name", "version", "model"):
            return getattr(self, key)
        raise KeyError(key)


@dataclass
class TestStatus(MappingResult):
    """A test as the registry keeps it, with the requests recorded per arm."""

    test: ABTest
    requests: dict[str, int]
    days_elapsed: float | None = None
    torn_bytes: int | None = None
    skipped_lines: int = 0  # malformed log lines left out of `requests` (a view skips them)

    def to_dict(self) -> dict[str, Any]:
        doc = self.test.to_dict()
        if self.days_elapsed is not None:
            doc["days_elapsed"] = self.days_elapsed
        doc["requests"] = self.requests
        if self.torn_bytes is not None:
            doc["torn_bytes"] = self.torn_bytes
        doc["skipped_lines"] = self.skipped_lines
        return doc


class ABTestManager:
    """Starts, routes, records and decides the A/B tests of a project."""

    def __init__(self, store: Store, registry: ModelRegistry) -> None:
        self.store = store
        self.registry = registry

    # -- reading -----------------------------------------------------------------------------

    @property
    def active_tests(self) -> dict[str, ABTest]:
        """Running tests by name (the seed's `_active_tests`), as of this process's snapshot."""
        return self.store.snapshot().running_tests()

    _active_tests = active_tests

    def get_test(self, name: str) -> ABTest:
        """A running test from the registry, or a finalized one from the archive."""
        state = self.store.read()
        validate_name(name, "A/B test name")
        if name in state.ab_tests:
            return state.ab_tests[name]
        archived = self.store.archived_test(name)
        if archived is not None:
            return archived
        return state.test(name)  # NotFoundError naming the running tests

    def requests(
        self, name: str, skip_invalid: bool = False, test: ABTest | None = None
    ) -> Summary:
        """Per-arm sufficient statistics of a test's requests, and per-user totals. A finalized
        `test` counts the records up to its `finalized_at`: a record that raced the finalize
        (recorded in a process whose snapshot still showed the test running) stays in the
        log, not in the final figures."""
        until = stamp(parse_ts(test.finalized_at)) if test and test.finalized_at else None
        return self.store.summary(
            ab_stream(name), "variant", VARIANTS, skip_invalid, True, until=until
        )

    def list_tests(self) -> list[TestStatus]:
        """Every test, running and archived, by name. A view: a malformed line of a test's
        log is left out and counted (`skipped_lines`), never an error."""
        tests = {t.name: t for t in self.store.archived_tests()}
        tests.update(self.store.read().ab_tests)  # a copy in the registry wins
        out = []
        for name, test in sorted(tests.items()):
            summary = self.requests(name, skip_invalid=True, test=test)
            requests = {v: summary.arm(v).n for v in VARIANTS}
            out.append(TestStatus(test, requests, skipped_lines=len(summary.skipped)))
        return out

    def status(self, name: str) -> TestStatus:
        """A test and its requests per arm (a view, as `list_tests`)."""
        test = self.get_test(name)
        summary = self.requests(name, skip_invalid=True, test=test)
        return TestStatus(
            test,
            {v: summary.arm(v).n for v in VARIANTS},
            days_between(test.started_at, self.store.clock()),
            summary.torn_bytes,
            len(summary.skipped),
        )

    # -- starting and routing ----------------------------------------------------------------

    def start_test(self, config: ABTestConfig) -> ABTest:
        """Start a test: the treatment gets `treatment_traffic_pct`, the control the rest."""
        validate_name(config.name, "A/B test name")
        validate_name(config.model_type, "model type")
        validate_version(config.treatment_version)
        if config.control_version is not None:
            validate_version(config.control_version)
        with self.store.transaction() as txn:
            state = txn.state
            cfg = config.resolved(state.settings.ab_defaults, state.settings.harm_tolerance)
            if cfg.name in state.ab_tests:
                raise ConflictError(f"A/B test {cfg.name} already exists; choose another name")
            ended = self.store.archived_test(cfg.name)
            if ended is not None:  # a name stays taken: its log and events name the old test
                raise ConflictError(
                    f"A/B test {cfg.name} already exists (finalized {ended.status} at "
                    f"{ended.finalized_at}); choose another name"
                )
            model = state.model(cfg.model_type)
            running = state.running_test(cfg.model_type)
            if running is not None:
                raise ConflictError(
                    f"A/B test {running.name} is already running on {cfg.model_type}; finalize "
                    "it first (one running test per model type)"
                )
            champion = model.champion
            if champion is None:
                raise ConflictError(f"{cfg.model_type} has no champion to test against")
            control = model.canonical(cfg.control_version) if cfg.control_version else champion
            cfg = replace(cfg, treatment_version=model.canonical(cfg.treatment_version))
            if control != champion:
                raise ConflictError(
                    f"control {control} is not the champion of {cfg.model_type} ({champion}); "
                    "the control must be the champion"
                )
            if cfg.treatment_version == control:
                raise ValidationError("treatment and control are the same version; pick another")
            if model.version(cfg.treatment_version).deprecated:
                raise ConflictError(
                    f"{cfg.model_type} {cfg.treatment_version} is deprecated and cannot be tested"
                )
            test = ABTest(
                name=cfg.name,
                model_type=cfg.model_type,
                control_version=control,
                treatment_version=cfg.treatment_version,
                **{k: getattr(cfg, k) for k in AB_FIELDS},
                harm_tolerance=dict(cfg.harm_tolerance or {}),
                decision_rules=DECISION_RULES,
                status="running",
                started_at=format_ts(self.store.clock()),
                finalized_at=None,
            )
            state.ab_tests[cfg.name] = test
            model.split_traffic(control, cfg.treatment_version, test.treatment_traffic_pct)
            txn.event(
                "ab_started",
                test=cfg.name,
                model_type=cfg.model_type,
                control=control,
                treatment=cfg.treatment_version,
                traffic_pct=test.treatment_traffic_pct,
            )
        return test

    def assign_variant(self, model_type: str, user_id: str) -> Assignment:
        """Deterministic, sticky assignment: {"name", "version", "model"}, routed by this
        process's snapshot of the registry; the model's serving metrics are computed when
        first read."""
        state = self.store.snapshot()
        variant, version, test = state.route(model_type, user_id)
        model = self.registry.build(model_type, version, state.models[model_type], lazy=True)
        return Assignment(variant, version, model, test.name if test else None)

    # -- recording ---------------------------------------------------------------------------

    def _running(self, name: str) -> ABTest:
        test = self.store.snapshot().ab_tests.get(name)
        if test is not None and test.running:
            return test
        test = self.get_test(name)
        if not test.running:
            raise ConflictError(
                f"A/B test {name} is already finalized ({test.status}); start a new test"
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
            "ts": ts or stamp(self.store.clock()),
            "variant": variant,
            "inference_time_ms": plain_number(inference_time_ms),
            "confidence": plain_number(confidence),
            "error": plain_number(error),
        }
        if user_id is not None:
            doc["user_id"] = user_id
        validate_request(doc, judge_ts=ts is not None)
        self.store.append(ab_stream(test_name), doc)

    def record_batch(
        self,
        test_name: str,
        data: Source,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Record a JSONL batch (bytes, or a binary stream read a chunk at a time) all or
        nothing, exactly once per batch id (bytes default to their hash, a stream to none)."""
        self._running(test_name)
        return self.store.append_batch(
            ab_stream(test_name), data, validate_request, batch_id, progress
        )

    # -- deciding ----------------------------------------------------------------------------

    def evaluate_test(
        self, test_name: str, apply: bool = False, skip_invalid: bool = False
    ) -> Evaluation:
        """Evaluate the decision rules on all recorded requests (reading only new lines).

        A malformed line in the log is an error, or with `skip_invalid` skipped and counted.
        """
        test = self.get_test(test_name)
        summary = self.requests(test_name, skip_invalid, test)
        end = parse_ts(test.finalized_at) if test.finalized_at else self.store.clock()
        days = days_between(test.started_at, end)
        for arm in VARIANTS:  # never decide on sums that overflowed
            for key, value in asdict(summary.arm(arm)).items():
                require_finite(key, value, f"the {arm} requests of A/B test {test_name}")
        control, treatment = analysis_arms(
            summary.arm("control"), summary.arm("treatment"), summary.users
        )
        result = decide(test_name, test.config(), control, treatment, days)
        result.status = test.status
        result.skipped_lines = len(summary.skipped)
        result.torn_bytes = summary.torn_bytes
        if apply and test.running and result.decision in ("promote", "rollback"):
            cause = f" ({result.rollback_cause})" if result.rollback_cause else ""
            self.finalize_test(
                test_name, result.decision, reason=f"ab evaluate --apply: {result.decision}{cause}"
            )
            result.applied = True
            result.status = "promoted" if result.decision == "promote" else "rolled_back"
        if result.applied:
            result.recommendation = f"Applied: the test is finalized ({result.status})."
        elif not test.running:
            result.recommendation = (
                f"Nothing to do: the test was finalized ({test.status}"
                + (f", {test.end_reason}" if test.end_reason else "")
                + "); these are its final figures."
            )
        return result

    def finalize_test(
        self, test_name: str, decision: str, force: bool = False, reason: str | None = None
    ) -> ABTest:
        """End a test: `promote` makes the treatment champion, `rollback` keeps the control.

        `promote` is refused unless the evaluation says promote (or `force`). `reason` goes
        into the audit event (default: the decision, and whether it was forced).
        """
        if decision not in ("promote", "rollback"):
            raise ValidationError(
                f"decision must be promote or rollback, not {decision!r}", field="decision"
            )
        self._running(test_name)
        if decision == "promote" and not force:
            evaluation = self.evaluate_test(test_name)
            if evaluation.decision != "promote":
                raise ConflictError(
                    f"the evaluation of {test_name} says {evaluation.decision}, not promote "
                    f"({'; '.join(evaluation.reasons)}); pass force=True to promote anyway",
                    cli={"force=True": "--force"},
                )
        with self.store.transaction() as txn:
            test = txn.state.test(test_name)
            if not test.running:
                raise ConflictError(f"A/B test {test_name} was finalized meanwhile")
            model = txn.state.models[test.model_type]
            test.status = "promoted" if decision == "promote" else "rolled_back"
            test.finalized_at = format_ts(self.store.clock())
            keep = test.treatment_version if decision == "promote" else test.control_version
            model.make_champion(keep)
            txn.event(
                "ab_finalized",
                reason or f"ab finalize {decision}" + (" --force" if force else ""),
                test=test_name,
                model_type=test.model_type,
                decision=decision,
                version=keep,
                forced=force or None,
            )
        return test
