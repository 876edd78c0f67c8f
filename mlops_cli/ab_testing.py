"""A/B tests between a champion and a new version: assignment, recording, decisions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from . import sources
from .batch import Source
from .decision import ArmFigures, Evaluation, UserArm, analysis_arms, decide
from .errors import ConflictError, GateError, MlopsError, ValidationError
from .limits import require_finite
from .naming import validate_name, validate_version
from .plan import Plan, PlanInputs, inputs_from_arms, make_plan
from .ramp import (
    DEFAULT_MIN_HOURS,
    DEFAULT_MIN_USERS,
    Strata,
    judge_step,
    new_ramp,
    parse_steps,
    step_status,
)
from .records import VARIANTS, plain_number, plain_request, validate_request
from .registry import ModelRegistry, ModelVersion
from .results import MappingResult
from .schema import AB_FIELDS, DECISION_RULES, HARM_GUARDRAILS, TEST_RULES
from .state import ABTest, RegistryState, Router
from .store.base import BatchResult, Store, Summary, ab_stream, metrics_stream
from .store.snapshot import Bound
from .tail import (
    FIRST_DAY,
    HISTORY_MAX_REQUESTS,
    MIN_FIRST_DAY_REQUESTS,
    TailInput,
    Threshold,
    from_first_day,
    from_history,
)
from .timeutil import days_between, format_ts, parse_ts, stamp, stamp_now

__all__ = [
    "ABTestConfig",
    "ABTestManager",
    "ArmFigures",
    "Assignment",
    "Evaluation",
    "Plan",
    "decide",
]

NO_USER_IDS = (
    "the champion's serving metrics carry no user ids, so they cannot give the per-user "
    "variance a plan needs"
)
GIVE_NUMBERS = "give user_sd, requests_per_user and users_per_day"
LATENCY_MARGINS = {"max_latency_increase", "max_latency_increase_ms"}  # one per test
MIN_PLAN_DAYS = 1.0  # of a test's traffic, to take its users per day from
PLAN_FLAGS = {
    "user_sd": "--user-sd",
    "requests_per_user": "--requests-per-user",
    "users_per_day": "--users-per-day",
    "from_test": "--from-test",
    "model_type": "--model-type",
}


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
    tail_latency: bool | None = None
    max_tail_latency_increase: float | None = None
    max_latency_increase: float | str | None = None  # a share of the control's mean: 0.1, "10%"
    harm_tolerance: dict[str, float] | None = None  # per guardrail; unset keys from settings
    ramp: str | list[float] | None = None  # treatment shares step by step: "5,10,25,50"
    ramp_min_users: int | None = None  # treated users a step needs before the next
    ramp_min_hours: float | None = None  # hours a step needs before the next

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
        given = {k: v for k, v in flags.items() if v is not None}
        if given.keys() & LATENCY_MARGINS:  # a flag's latency margin replaces the file's
            for key in LATENCY_MARGINS:
                doc.pop(key, None)
        doc.update(given)
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
        if self.max_tail_latency_increase is not None and self.tail_latency is False:
            raise ValidationError(
                "max_tail_latency_increase is a margin of the tail-latency guardrail, which is "
                "turned off here: give one or the other",
                field="max_tail_latency_increase",
            )
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
        if self.ramp is not None:
            values.update(self._ramp_values(self.treatment_traffic_pct))
        elif self.ramp_min_users is not None or self.ramp_min_hours is not None:
            raise ValidationError(
                "ramp_min_users and ramp_min_hours are minimums of a ramp's steps: give ramp too",
                field="ramp",
            )
        pct = values["treatment_traffic_pct"]
        if not 0 < pct < 100 or abs(pct * 100 - round(pct * 100)) > 1e-9:
            raise ValidationError(
                "treatment_traffic_pct must be above 0 and below 100 in steps of 0.01, "
                f"not {pct!r}",
                field="treatment_traffic_pct",
            )
        return replace(self, **values)

    def _ramp_values(self, given_pct: float | None) -> dict[str, Any]:
        """The ramp's validated fields; its first step is the treatment's share."""
        try:
            steps = parse_steps(self.ramp or "")
        except ValueError as exc:
            raise ValidationError(str(exc), field="ramp") from None
        if given_pct is not None and float(given_pct) != steps[0]:
            raise ValidationError(
                "a ramp sets the treatment's share step by step: give the ramp or the "
                "traffic share, not both",
                field="ramp",
            )
        users = DEFAULT_MIN_USERS if self.ramp_min_users is None else self.ramp_min_users
        hours = DEFAULT_MIN_HOURS if self.ramp_min_hours is None else self.ramp_min_hours
        if isinstance(users, bool) or not isinstance(users, int) or users < 0:
            raise ValidationError(
                f"ramp_min_users must be a whole number >= 0, not {users!r}", field="ramp_min_users"
            )
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not (
            0 <= hours <= 24 * 365
        ):
            raise ValidationError(
                f"ramp_min_hours must be hours from 0 to {24 * 365}, not {hours!r}",
                field="ramp_min_hours",
            )
        return {
            "ramp": steps,
            "ramp_min_users": users,
            "ramp_min_hours": float(hours),
            "treatment_traffic_pct": steps[0],
        }


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
    step: int | None = None  # the ramp step the user was routed at (record it with the request)

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
    ramp_status: dict[str, Any] | None = None  # a ramp test's step now (StepStatus.to_dict)

    def to_dict(self) -> dict[str, Any]:
        doc = self.test.to_dict()
        if self.ramp_status is not None:
            doc["ramp_status"] = self.ramp_status
        if self.days_elapsed is not None:
            doc["days_elapsed"] = self.days_elapsed
        doc["requests"] = self.requests
        if self.torn_bytes is not None:
            doc["torn_bytes"] = self.torn_bytes
        doc["skipped_lines"] = self.skipped_lines
        return doc


class _Route(NamedTuple):
    """How a model type's requests are served in one registry state: who serves a user, and
    the version each arm hands out."""

    router: Router
    models: dict[str, Callable[[], ModelVersion]]
    step: int | None  # the running test's ramp step


class ABTestManager:
    """Starts, routes, records and decides the A/B tests of a project."""

    def __init__(self, store: Store, registry: ModelRegistry) -> None:
        self.store = store
        self.registry = registry
        # Worked out once per registry snapshot, for the per-request calls:
        self._routes: Bound[str, _Route] = Bound()  # by model type
        # a running test's stream and ramp step, by its name
        self._streams: Bound[str, tuple[str, int | None]] = Bound()

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
            requests = self._counts(test, summary)
            out.append(TestStatus(test, requests, skipped_lines=len(summary.skipped)))
        return out

    def status(self, name: str) -> TestStatus:
        """A test and its requests per arm (a view, as `list_tests`)."""
        test = self.get_test(name)
        summary = self.requests(name, skip_invalid=True, test=test)
        return TestStatus(
            test,
            self._counts(test, summary),
            days_between(test.started_at, self.store.clock()),
            summary.torn_bytes,
            len(summary.skipped),
            self.ramp_status(test, skip_invalid=True),
        )

    def ramp_status(self, test: ABTest, skip_invalid: bool = False) -> dict[str, Any] | None:
        """A ramp test's current step: its share, treated users and hours so far, and
        whether its minimums are met (None without a ramp)."""
        if test.ramp is None:
            return None
        strata = self.strata(test, None, skip_invalid)
        step = test.ramp["step"]
        end = parse_ts(test.finalized_at) if test.finalized_at else self.store.clock()
        since = parse_ts(test.ramp["started"][step - 1])
        hours = max((end - since).total_seconds(), 0.0) / 3600
        return step_status(test.ramp, strata.users(step, True), hours).to_dict()

    # -- starting and routing ----------------------------------------------------------------

    def start_test(
        self, config: ABTestConfig, source: sources.Source | None = None
    ) -> ABTest:
        """Start a test: the treatment gets `treatment_traffic_pct`, the control the rest.
        With a `source`, its requests are read from there (checked now: its columns and
        their types), never recorded into the project."""
        validate_name(config.name, "A/B test name")
        if source is not None and config.ramp is not None:
            raise ValidationError(
                "a test whose requests live in a source cannot ramp: its requests carry no step",
                field="ramp",
            )
        if source is not None:
            sources.check_ab(source)
        validate_name(config.model_type, "model type")
        validate_version(config.treatment_version)
        if config.control_version is not None:
            validate_version(config.control_version)
        history = self._history_threshold(config)
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
                source=source.to_doc() if source is not None else None,
            )
            if cfg.ramp is not None:
                test.ramp = new_ramp(
                    parse_steps(cfg.ramp),
                    int(cfg.ramp_min_users or 0),
                    float(cfg.ramp_min_hours or 0),
                    test.started_at,
                )
            if test.tail_latency and history is not None and history[0] == control:
                self._freeze(test, history[1])
            state.ab_tests[cfg.name] = test
            model.split_traffic(control, cfg.treatment_version, test.treatment_traffic_pct)
            ramp = {"ramp": test.ramp["steps"]} if test.ramp else {}  # the key only with a ramp
            txn.event(
                "ab_started",
                test=cfg.name,
                model_type=cfg.model_type,
                control=control,
                treatment=cfg.treatment_version,
                traffic_pct=test.treatment_traffic_pct,
                **ramp,
            )
        return test

    # -- the tail-latency threshold (tail.py) --------------------------------------------------

    def _history_threshold(self, config: ABTestConfig) -> tuple[str, Threshold] | None:
        """(the control version, tau from its serving history) when the test will have the
        tail-latency guardrail and that history holds enough requests; read before the
        registry is locked (`start_test` keeps it only for the control it settles on)."""
        state = self.store.read()
        model = state.models.get(config.model_type)
        on = config.tail_latency
        if on is None:
            on = bool(state.settings.ab_defaults.get("tail_latency"))
        if model is None or not on:
            return None
        try:
            control = (
                model.canonical(config.control_version)
                if config.control_version
                else model.champion
            )
        except MlopsError:
            return None
        if control is None:
            return None
        stream = metrics_stream(config.model_type, control)
        served = self.store.history(stream, limit=HISTORY_MAX_REQUESTS, skip_invalid=True)
        found = from_history([r["inference_time_ms"] for r in served])
        return (control, found) if found is not None else None

    @staticmethod
    def _freeze(test: ABTest, threshold: Threshold) -> None:
        test.tail_latency_ms = threshold.ms
        test.tail_latency_source = threshold.source
        test.tail_latency_requests = threshold.requests

    def tail_input(self, test: ABTest, end: datetime, until: str | None) -> TailInput:
        """The tail-latency guardrail's threshold and slow counts for an evaluation at
        `end`. A threshold not recorded at the start comes from exactly the control
        requests of the test's first day, once that day is over, and is then recorded in the
        running test (so later data never moves it)."""
        threshold = None
        if test.tail_latency_ms is not None and test.tail_latency_source is not None:
            threshold = Threshold(
                test.tail_latency_ms, test.tail_latency_source, test.tail_latency_requests or 0
            )
        else:
            started = parse_ts(test.started_at)
            left = FIRST_DAY - days_between(test.started_at, end)
            if left > 0:
                return TailInput(
                    None,
                    pending=f"set from the first day's control requests, {left:.1f} days left",
                )
            limit = started + timedelta(days=FIRST_DAY)
            times = [
                r["inference_time_ms"]
                for chunk in self.store.scan(ab_stream(test.name), skip_invalid=True)
                for r in chunk
                if r.get("variant") == "control" and _before(r.get("ts"), limit)
            ]
            threshold = from_first_day(times)
            if threshold is None:
                return TailInput(
                    None,
                    pending=f"the first day had {len(times)} control requests, too few for a "
                    f"p95 (needs {MIN_FIRST_DAY_REQUESTS}): the guardrail is off for this test",
                    unavailable=True,
                )
            if test.running:
                self._record_threshold(test.name, threshold)
        sums = self.store.tail_sums(ab_stream(test.name), threshold.ms, VARIANTS, until)
        return TailInput(threshold, sums["control"], sums["treatment"])

    def _record_threshold(self, name: str, threshold: Threshold) -> None:
        """Record a first-day threshold in the running test, unless one is there already. A
        store that cannot be written (read-only) recomputes the same value next time."""
        with contextlib.suppress(MlopsError, OSError), self.store.transaction() as txn:
            test = txn.state.ab_tests.get(name)
            if test is None or not test.running or test.tail_latency_ms is not None:
                return
            self._freeze(test, threshold)
            txn.event(
                "ab_tail_threshold",
                test=name,
                model_type=test.model_type,
                threshold_ms=threshold.ms,
                source=threshold.source,
                requests=threshold.requests,
            )

    def assign_variant(self, model_type: str, user_id: str) -> Assignment:
        """Deterministic, sticky assignment: {"name", "version", "model"}, routed by this
        process's snapshot of the registry; the model's serving metrics are computed when
        first read."""
        state = self.store.snapshot()
        route = self._routes.of(state).get(model_type)
        if route is None:
            route = self._route(state, model_type)
        variant, version, test = route.router.route(user_id)
        if test is None:
            return Assignment(variant, version, route.models[version](), None)
        return Assignment(variant, version, route.models[version](), test.name, route.step)

    def _route(self, state: RegistryState, model_type: str) -> _Route:
        """How a model type's requests are served in `state`, bound to it (or the error)."""
        router = state.router(model_type)
        model = state.models[model_type]
        test = router.test
        versions = (test.control_version, test.treatment_version) if test else (model.champion,)
        route = _Route(
            router,
            {v: self.registry.served_version(model_type, v, model) for v in versions if v},
            test.ramp_step if test else None,
        )
        self._routes.of(state)[model_type] = route
        return route

    # -- recording ---------------------------------------------------------------------------

    def _running(self, name: str, state: RegistryState | None = None) -> ABTest:
        test = (state or self.store.snapshot()).ab_tests.get(name)
        if test is not None and test.running:
            return test
        test = self.get_test(name)
        if not test.running:
            raise ConflictError(
                f"A/B test {name} is already finalized ({test.status}); start a new test"
            )
        return test

    def _recordable(self, name: str, state: RegistryState | None = None) -> ABTest:
        """A running test that takes recorded requests (not one whose requests live in a
        source)."""
        test = self._running(name, state)
        if test.source is not None:
            where = sources.Source.from_doc(test.source).describe()
            raise ConflictError(
                f"A/B test {name} reads its requests from a source ({where}); requests are "
                "not recorded into the project for it: write them to the source"
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
        step: int | None = None,
    ) -> None:
        """Record one request of a running test (cheap: one appended line). A ramp test's
        request carries its step: `step` (the assignment's), else the step now in force."""
        store = self.store
        state = store.snapshot()
        bound = self._streams.of(state).get(test_name)
        if bound is None:
            bound = self._stream(state, test_name)
        stream, current = bound
        doc: dict[str, Any] = {
            "ts": ts or stamp_now(store.clock),
            "variant": variant,
            "inference_time_ms": inference_time_ms,
            "confidence": confidence,
            "error": error,
        }
        if user_id is not None:
            doc["user_id"] = user_id
        if step is not None:
            check_step_reached(test_name, step, current)
        if current is not None:
            doc["step"] = current if step is None else step
        if ts is not None or step is not None or not plain_request(
            variant, inference_time_ms, confidence, error, "" if user_id is None else user_id
        ):
            for key in ("inference_time_ms", "confidence", "error"):
                doc[key] = plain_number(doc[key])  # a numpy scalar as its Python value
            validate_request(doc, judge_ts=ts is not None)  # or says what is wrong
        store.append(stream, doc)

    def _stream(self, state: RegistryState, test_name: str) -> tuple[str, int | None]:
        """The stream of a running test, bound to the snapshot when it holds the test running
        (one started elsewhere since is read fresh); a finalized test, or one whose requests
        live in a source, is an error."""
        test = self._recordable(test_name, state)
        bound = (ab_stream(test_name), test.ramp_step)
        if state.ab_tests.get(test_name) is test:
            self._streams.of(state)[test_name] = bound
        return bound

    def record_batch(
        self,
        test_name: str,
        data: Source,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Record a JSONL batch (bytes, or a binary stream read a chunk at a time) all or
        nothing, exactly once per batch id (bytes default to their hash, a stream to none)."""
        test = self._recordable(test_name)
        reached = test.ramp_step

        def validate(doc: Any, where: str) -> dict[str, Any]:
            checked = validate_request(doc, where)
            if "step" in checked:
                check_step_reached(test_name, checked["step"], reached, where)
            return checked

        return self.store.append_batch(ab_stream(test_name), data, validate, batch_id, progress)

    # -- deciding ----------------------------------------------------------------------------

    def evaluate_test(
        self, test_name: str, apply: bool = False, skip_invalid: bool = False
    ) -> Evaluation:
        """Evaluate the decision rules on all recorded requests (reading only new lines).

        A malformed line in the log is an error, or with `skip_invalid` skipped and counted.
        """
        test = self.get_test(test_name)
        end = parse_ts(test.finalized_at) if test.finalized_at else self.store.clock()
        days = days_between(test.started_at, end)
        if test.source is not None:
            result = self._evaluate_source(test, end, days)
        elif test.ramp is not None:
            result = self._evaluate_ramp(test, end, days, skip_invalid)
        else:
            summary, control, treatment, tail = self._decision_inputs(test, end, skip_invalid)
            result = decide(test_name, test.config(), control, treatment, days, tail)
            result.skipped_lines = len(summary.skipped)
            result.torn_bytes = summary.torn_bytes
        result.status = test.status
        if apply and test.running and result.ramp is not None and result.ramp["advance"]:
            self.advance_ramp(test_name, result.ramp["step"], reason="ab evaluate --apply: advance")
            result.ramp["advanced"] = True
            result.applied = True
            result.recommendation = (
                f"Applied: the ramp moved to step {result.ramp['step'] + 1} "
                f"({result.ramp['next_share']:g}% treatment)."
            )
            return result
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

    def _decision_inputs(
        self, test: ABTest, end: datetime, skip_invalid: bool
    ) -> tuple[Any, Any, Any, TailInput | None]:
        """A test's request sums (checked finite: never decide on sums that overflowed), its
        arms as the analysis takes them, and the tail-latency input when the guardrail is on."""
        summary = self.requests(test.name, skip_invalid, test)
        for arm in VARIANTS:
            for key, value in asdict(summary.arm(arm)).items():
                require_finite(key, value, f"the {arm} requests of A/B test {test.name}")
        control, treatment = analysis_arms(
            summary.arm("control"), summary.arm("treatment"), summary.users
        )
        tail = self.tail_input(test, end, until=_until(test)) if test.tail_latency else None
        return summary, control, treatment, tail

    def _evaluate_ramp(
        self, test: ABTest, end: datetime, days: float, skip_invalid: bool
    ) -> Evaluation:
        """The decision on a ramp test: the figures per arm as any test's, the differences and
        the split stratified by step (ramp.py), and the ramp's own verdict before its last
        step (advance, or wait)."""
        assert test.ramp is not None
        summary, control, treatment, tail = self._decision_inputs(test, end, skip_invalid)
        tau = tail.threshold.ms if tail is not None and tail.threshold is not None else None
        strata = self.strata(test, tau, skip_invalid)
        result = decide(test.name, test.config(), control, treatment, days, tail, strata)
        result.skipped_lines = len(summary.skipped)
        result.torn_bytes = summary.torn_bytes
        step = test.ramp["step"]
        since = parse_ts(test.ramp["started"][step - 1])
        status = step_status(
            test.ramp, strata.users(step, True), max((end - since).total_seconds(), 0.0) / 3600
        )
        before = result.decision
        result.decision = judge_step(
            status, result.decision, result.reasons, result.metrics, test.max_error_rate_increase
        )
        if status.advance:
            result.recommendation = (
                f"Advance the ramp to {status.next_share:g}% treatment: {result.reasons[0]}; run "
                f"`mlops ab evaluate {test.name} --apply`."
            )
        elif result.decision == "continue" and before != "rollback":
            result.recommendation = (
                f"Keep the test at step {status.step} of {status.steps} ({status.share:g}% "
                f"treatment): {result.reasons[0]}."
            )
        result.ramp = status.to_dict()
        return result

    def strata(self, test: ABTest, tau: float | None = None, skip_invalid: bool = False) -> Strata:
        """A ramp test's requests grouped by step, arm and user (`ramp.Strata`). A request
        without a `step` counts at the step in force at its `ts`; `tau` adds the slow counts
        of the tail-latency guardrail. A finalized test's records after its end are left out
        (as in its final figures)."""
        import numpy as np

        assert test.ramp is not None
        starts = [parse_ts(t) for t in test.ramp["started"]]
        limit = parse_ts(test.finalized_at) if test.finalized_at else None
        steps: list[int] = []
        treated: list[bool] = []
        users: list[int] = []
        errors: list[bool] = []
        confidence: list[float] = []
        times: list[float] = []
        codes: dict[str, int] = {}
        anonymous = False
        for chunk in self.store.scan(ab_stream(test.name), skip_invalid=skip_invalid):
            for r in chunk:
                ts = r.get("ts")
                moment = None
                if ts is not None:
                    moment = ts if isinstance(ts, datetime) else parse_ts(ts)
                    if limit is not None and moment > limit:
                        continue
                step = r.get("step")
                if step is None:
                    step = sum(1 for s in starts if moment is None or s <= moment) or 1
                if step > len(test.ramp["steps"]):
                    raise ValidationError(
                        f"a request of A/B test {test.name} names step {step}; its ramp has "
                        f"{len(test.ramp['steps'])}"
                    )
                uid = r.get("user_id")
                if uid is None:
                    anonymous = True
                    code = len(codes)
                    codes[f"\0{code}"] = code
                else:
                    code = codes.setdefault(str(uid), len(codes))
                steps.append(step)
                treated.append(r["variant"] == "treatment")
                users.append(code)
                errors.append(bool(r.get("error", False)))
                confidence.append(float(r["confidence"]))
                times.append(float(r["inference_time_ms"]))
        values: dict[str, Any] = {
            "errors": errors, "confidence": confidence, "inference_time_ms": times
        }
        if tau is not None:
            values["slow"] = np.asarray(times) > tau
        return Strata.of(
            steps, treated, users, values, test.ramp["steps"],
            "request" if anonymous else "user",
        )

    def advance_ramp(self, test_name: str, step: int, reason: str | None = None) -> ABTest:
        """Move a running ramp test from `step` to the next: the treatment's share rises to
        the next step's (sticky buckets: only control users move). Refused when the test has
        moved meanwhile (another process advanced it) or is at its last step."""
        with self.store.transaction() as txn:
            test = txn.state.test(test_name)
            if not test.running or test.ramp is None:
                raise ConflictError(f"A/B test {test_name} is not a running ramp test")
            ramp = test.ramp
            if ramp["step"] != step:
                raise ConflictError(
                    f"A/B test {test_name} is at step {ramp['step']}, not {step}: it moved "
                    "meanwhile"
                )
            if step >= len(ramp["steps"]):
                raise ConflictError(
                    f"A/B test {test_name} is at the last step of its ramp: promote or roll back"
                )
            share = ramp["steps"][step]
            test.ramp = {
                **ramp,
                "step": step + 1,
                "started": [*ramp["started"], format_ts(self.store.clock())],
            }
            test.treatment_traffic_pct = share
            txn.state.models[test.model_type].split_traffic(
                test.control_version, test.treatment_version, share
            )
            txn.event(
                "test_ramped",
                reason or f"ab ramp: step {step + 1}",
                test=test_name,
                model_type=test.model_type,
                step=step + 1,
                traffic_pct=share,
                previous_pct=ramp["steps"][step - 1],
            )
        return test

    def _counts(self, test: ABTest, summary: Summary) -> dict[str, int]:
        """A test's requests per arm: from its log, or for a test whose requests live in a
        source, from the source (one query, the evaluation's sums)."""
        if test.source is None:
            return {v: summary.arm(v).n for v in VARIANTS}
        sums = self._source_sums(test, None)
        return {v: sums.arms[v].moments.n for v in VARIANTS}

    def _source_sums(self, test: ABTest, tau: float | None) -> sources.SourceSums:
        """The per-arm sums of a source's test: its requests from its start to its
        finalize (if any)."""
        source = sources.Source.from_doc(test.source, f"the source of A/B test {test.name}")
        until = _until(test)
        return sources.ab_sums_of(
            source, tau, format_ts(parse_ts(until)) if until else None,
            since=format_ts(parse_ts(test.started_at)),
        )

    def _evaluate_source(self, test: ABTest, end: datetime, days: float) -> Evaluation:
        """The decision on a test whose requests live in a source: the engine returns each
        arm's sums in one query (after a first-day threshold query, once, when tau is not
        recorded yet) and the same `decide` judges them."""
        source = sources.Source.from_doc(test.source, f"the source of A/B test {test.name}")
        tail: TailInput | None = None
        tau = None
        if test.tail_latency:
            tail = self._source_threshold(test, source, end)
            tau = tail.threshold.ms if tail.threshold else None
        sums = self._source_sums(test, tau)
        for arm in VARIANTS:  # never decide on sums that overflowed
            for key, value in asdict(sums.arms[arm].moments).items():
                require_finite(key, value, f"the {arm} requests of A/B test {test.name}")
        arms = [sums.arms[v] for v in VARIANTS]
        pair: list[Any] = [a.moments for a in arms]
        if sums.unit == "user":
            pair = [UserArm(a.errors, a.confidence, a.inference_time_ms) for a in arms]
        if tail is not None and tail.threshold is not None:
            tail = TailInput(tail.threshold, arms[0].tail, arms[1].tail)
        return decide(test.name, test.config(), pair[0], pair[1], days, tail)

    def _source_threshold(self, test: ABTest, source: sources.Source, end: datetime) -> TailInput:
        """The tail threshold of a source's test (no counts yet): recorded, pending, or from
        the source's first-day control requests (then recorded, as `tail_input` does)."""
        if test.tail_latency_ms is not None and test.tail_latency_source is not None:
            return TailInput(
                Threshold(
                    test.tail_latency_ms, test.tail_latency_source,
                    test.tail_latency_requests or 0,
                )
            )
        left = FIRST_DAY - days_between(test.started_at, end)
        if left > 0:
            return TailInput(
                None, pending=f"set from the first day's control requests, {left:.1f} days left"
            )
        started = parse_ts(test.started_at)
        limit = started + timedelta(days=FIRST_DAY)
        count, p95 = sources.first_day_p95(source, format_ts(limit), format_ts(started))
        if count < MIN_FIRST_DAY_REQUESTS or p95 is None:
            return TailInput(
                None,
                pending=f"the first day had {count} control requests, too few for a p95 "
                f"(needs {MIN_FIRST_DAY_REQUESTS}): the guardrail is off for this test",
                unavailable=True,
            )
        threshold = Threshold(p95, "first_day", count)
        if test.running:
            self._record_threshold(test.name, threshold)
        return TailInput(threshold)

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

    # -- delivery controllers ------------------------------------------------------------------

    def controller_verdict(self, test_name: str) -> dict[str, Any]:
        """What a delivery controller (Argo Rollouts' web metric, Flagger's webhooks) needs:
        the test's current decision and whether it is safe to continue the rollout (read only:
        nothing is applied)."""
        evaluation = self.evaluate_test(test_name, skip_invalid=True)
        safe, why = safe_to_continue(evaluation)
        test = self.get_test(test_name)
        doc: dict[str, Any] = {
            "test": test_name,
            "model_type": test.model_type,
            "status": evaluation.status,
            "decision": evaluation.decision,
            "rollback_cause": evaluation.rollback_cause,
            "safe_to_continue": safe,
            "why": why,
            "recommendation": evaluation.recommendation,
            "reasons": list(evaluation.reasons),
            "treatment_traffic_pct": test.treatment_traffic_pct,
        }
        if evaluation.ramp is not None:
            doc["ramp"] = evaluation.ramp
        return doc

    # -- planning ----------------------------------------------------------------------------

    def plan_inputs(self, test_name: str) -> PlanInputs:
        """Per-user sd of confidence, requests per user and users per day from a test's log
        (its records must carry user ids)."""
        test = self.get_test(test_name)
        summary = self.requests(test_name, skip_invalid=True, test=test)
        totals = summary.users
        if totals is None or totals.unit != "user":
            raise ValidationError(
                f"not every record of A/B test {test_name} carries a user_id: "
                f"a plan needs per-user variance; {GIVE_NUMBERS} instead",
                cli=PLAN_FLAGS,
            )
        moments = [summary.arm(v) for v in VARIANTS]
        n = sum(m.n for m in moments)
        squares = sum(
            m.confidence_sum_squares - m.confidence_sum**2 / m.n for m in moments if m.n
        )
        request_sd = (max(squares, 0.0) / (n - 2)) ** 0.5 if n > 2 else None
        end = parse_ts(test.finalized_at) if test.finalized_at else self.store.clock()
        days = days_between(test.started_at, end)
        if days < MIN_PLAN_DAYS:  # minutes of traffic said millions of users a day
            raise ValidationError(
                f"A/B test {test_name} has run {int(days * 100) / 100:.2f} days; users per day "
                f"are taken from "
                f"at least {MIN_PLAN_DAYS:g} day of a test's traffic (its daily cycle): plan "
                f"from an older test, or {GIVE_NUMBERS}",
                cli=PLAN_FLAGS,
            )
        arms = [totals.ratio_sums(v, "confidence") for v in VARIANTS]
        return inputs_from_arms(arms, request_sd, days, f"A/B test {test_name}")

    def latest_planning_test(self, model_type: str, before: ABTest | None = None) -> str | None:
        """The most recent test of `model_type` (started before `before`, if given) whose
        records carry user ids, if any."""
        candidates = [
            t
            for t in self.list_tests()
            if t.test.model_type == model_type
            and any(t.requests.values())
            and (
                before is None
                or (
                    t.test.name != before.name
                    and parse_ts(t.test.started_at) < parse_ts(before.started_at)
                )
            )
        ]
        for status in sorted(candidates, key=lambda t: parse_ts(t.test.started_at), reverse=True):
            summary = self.requests(status.test.name, skip_invalid=True, test=status.test)
            if summary.users is not None and summary.users.unit == "user":
                return status.test.name
        return None

    def plan(
        self,
        effect: float | None = None,
        days: float | None = None,
        *,
        model_type: str | None = None,
        from_test: str | None = None,
        user_sd: float | None = None,
        requests_per_user: float | None = None,
        users_per_day: float | None = None,
        power: float = 0.8,
        **config: Any,
    ) -> Plan:
        """Users and days a test needs to promote a confidence gain `effect` with `power`, or
        the gain `days` of traffic can detect (DESIGN section 14; formulas in `plan.py`).

        The traffic comes from given numbers (`user_sd`, `requests_per_user`,
        `users_per_day`), from the log of test `from_test`, or from the latest test of
        `model_type` with user ids. `config` takes ABTestConfig fields (split, alpha, ...);
        the rest come from the project's `ab.defaults`.
        """
        given = {
            "user_sd": user_sd,
            "requests_per_user": requests_per_user,
            "users_per_day": users_per_day,
        }
        if any(v is not None for v in given.values()):
            missing = [k for k, v in given.items() if v is None]
            if missing or from_test is not None:
                raise ValidationError(
                    "give all of user_sd, requests_per_user and users_per_day, or from_test "
                    "to take them from a past test, not both",
                    cli=PLAN_FLAGS,
                )
            inputs = PlanInputs(
                float(user_sd or 0), float(requests_per_user or 0), float(users_per_day or 0),
                "given numbers",
            )
        elif from_test is not None:
            inputs = self.plan_inputs(from_test)
        elif model_type is not None:
            validate_name(model_type, "model type")
            self.store.read().model(model_type)  # NotFoundError for an unknown type
            past = self.latest_planning_test(model_type)
            if past is None:
                raise ValidationError(
                    f"no A/B test of {model_type} has records with user ids, and "
                    f"{NO_USER_IDS}: {GIVE_NUMBERS}",
                    cli=PLAN_FLAGS,
                )
            inputs = self.plan_inputs(past)
        else:
            raise ValidationError(
                f"a plan needs the traffic: from_test, model_type, or {GIVE_NUMBERS}",
                cli=PLAN_FLAGS,
            )
        unknown = sorted(set(config) - set(AB_FIELDS))
        if unknown:
            raise ValidationError(f"unknown A/B test field {unknown[0]!r}")
        fields_ = ABTestConfig("plan", model_type or "plan", treatment_version="plan")
        cfg = replace(fields_, **config).resolved(self.store.read().settings.ab_defaults)
        return make_plan(
            inputs,
            effect=effect,
            days=days,
            treatment_traffic_pct=float(cfg.treatment_traffic_pct or 0),
            alpha=float(cfg.alpha or 0),
            power=power,
            sequential_tuning=float(cfg.sequential_tuning or 0),
            min_effect=float(cfg.min_confidence_improvement or 0),
            duration_days=float(cfg.duration_days or 0),
            min_requests=int(cfg.min_requests or 0),
        )

    def plan_for_test(self, name: str, power: float = 0.8) -> Plan | None:
        """What test `name` can detect in its `duration_days`, from the latest earlier test
        of its model type with user ids; None without one (nothing to plan from)."""
        test = self.get_test(name)
        past = self.latest_planning_test(test.model_type, before=test)
        if past is None:
            return None
        config = {k: getattr(test, k) for k in AB_FIELDS}
        days = max(test.duration_days, 1.0)
        try:
            return self.plan(days=days, from_test=past, power=power, **config)
        except MlopsError:
            return None  # too little to plan from: the plan is advice, never a failure

def safe_to_continue(evaluation: Evaluation) -> tuple[bool, str]:
    """Whether a rollout may go on, and why: not when the test was rolled back or aborted,
    when its decision is a rollback (harm or futility), or when the split is a sample ratio
    mismatch (the figures cannot be trusted); yes while it continues or promotes, and after
    it was promoted."""
    if evaluation.status in ("rolled_back", "aborted"):
        return False, f"the test was finalized {evaluation.status}"
    if evaluation.decision == "rollback":
        return False, f"the decision is rollback ({evaluation.rollback_cause})"
    srm = evaluation.metrics.get("srm") or {}
    if srm.get("mismatch"):
        return False, f"sample ratio mismatch p={srm['p_value']:.2g}"
    if evaluation.status == "promoted":
        return True, "the test was promoted"
    return True, f"the decision is {evaluation.decision}"


def _until(test: ABTest) -> str | None:
    return stamp(parse_ts(test.finalized_at)) if test.finalized_at else None


def _before(ts: Any, limit: datetime) -> bool:
    """Whether a record's `ts` (text, or a datetime from a database) is before `limit`."""
    try:
        moment = ts if isinstance(ts, datetime) else parse_ts(ts)
    except (ValueError, TypeError):
        return False
    return moment < limit


def check_step_reached(name: str, step: Any, reached: int | None, where: str = "") -> None:
    """A request's step must be one its test's ramp has reached (a later one, or any on a test
    without a ramp, would be read as a stratum that does not exist)."""
    if reached is None:
        raise ValidationError(
            f"{where}step: A/B test {name} has no ramp, so its requests carry no step",
            field=f"{where}step",
        )
    if type(step) is int and step > reached:
        raise ValidationError(
            f"{where}step must be a step A/B test {name} has reached (1 to {reached}), "
            f"not {step}",
            field=f"{where}step",
        )
