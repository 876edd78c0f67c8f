"""Typed records of what the registry holds, with each invariant as one method (no I/O).

A store parses `registry.yaml` (or its tables) into a `RegistryState` once per read; managers
change it inside a store transaction and the store writes it back. `to_doc()` gives the
document the file holds, key for key in the order it has always been written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from .errors import ConflictError, NotFoundError
from .naming import validate_name, validate_version, version_key
from .results import MappingResult

AB_CONFIG_FIELDS = (
    "treatment_traffic_pct",
    "duration_days",
    "min_requests",
    "max_error_rate_increase",
    "min_confidence_improvement",
    "alpha",
    "method",
    "sequential_tuning",
    "max_confidence_drop",
    "max_latency_increase_ms",
    "tail_latency",
    "max_tail_latency_increase",
    "max_latency_increase",
    "harm_tolerance",
    "decision_rules",
)
# The tail-latency threshold a test recorded (tail.py): tau in ms, its source, its requests.
TAIL_FIELDS = ("tail_latency_ms", "tail_latency_source", "tail_latency_requests")
TEST_STATUSES = ("running", "promoted", "rolled_back", "aborted")


def bucket(key: str, user_id: str) -> int:
    """Sticky bucket in [0, 10000): the first 8 bytes of sha256("key:user") modulo 10000.

    Never Python's hash(): it differs between processes.
    """
    digest = (_sha256 or _load_sha256())(f"{key}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


_sha256: Any = None  # hashlib.sha256, imported on first use (3 ms a command need not pay)


def _load_sha256() -> Any:
    global _sha256
    import hashlib

    _sha256 = hashlib.sha256
    return _sha256


class Router:
    """Who serves a model type's users: the running test's arms by bucket, else the champion
    (a state's `router`: with no test, there is a champion)."""

    __slots__ = ("_champion", "_control", "_treatment", "cut", "test")

    def __init__(self, test: ABTest | None, champion: str | None) -> None:
        self.test = test
        # A user is treated when bucket(test, user) < cut: treatment_traffic_pct of 10,000.
        self.cut = round(test.treatment_traffic_pct * 100) if test is not None else 0
        if test is not None:
            self._control = ("control", test.control_version, test)
            self._treatment = ("treatment", test.treatment_version, test)
        if champion is not None:
            self._champion: tuple[str, str, ABTest | None] = ("champion", champion, None)

    def route(self, user_id: str) -> tuple[str, str, ABTest | None]:
        """(variant, version, test) of one user; sticky."""
        test = self.test
        if test is None:
            return self._champion
        return self._treatment if bucket(test.name, str(user_id)) < self.cut else self._control


@dataclass
class VersionRecord:
    """A registered version as the registry keeps it (serving metrics live in a stream)."""

    model_path: str
    config: dict[str, Any]
    traffic_percentage: float
    registered_at: str
    description: str
    tags: dict[str, str]
    sha256: str | None
    size_bytes: int | None
    deprecated: bool
    monitored: bool = False  # drift-checked and exported even when it serves no traffic
    drift_source: dict[str, Any] | None = None  # where its drift samples live (sources.Source)

    def to_doc(self) -> dict[str, Any]:
        """The registry's record (`drift_source` only when the version has one)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not (f.name == "drift_source" and self.drift_source is None)
        }

    def copy(self) -> VersionRecord:
        return VersionRecord(
            **{**self.__dict__, "config": dict(self.config), "tags": dict(self.tags)}
        )


SHOWN_VERSIONS = 10  # the registered versions an unknown-version error names


@dataclass
class ModelType:
    """The versions of one model type, its champion and the champions before it."""

    name: str
    champion: str | None = None
    champion_history: list[str] = field(default_factory=list)
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    # Named pointers to versions besides the champion (alias -> version; registry.set_alias)
    aliases: dict[str, str] = field(default_factory=dict)

    def version(self, version: str) -> VersionRecord:
        """Look a version up; an unknown one is a NotFoundError listing the registered ones."""
        return self.versions[self.canonical(version)]

    def canonical(self, version: str) -> str:
        """The registered spelling of a version: `3.2.0` finds `v3.2.0` (SemVer equality,
        the leading v not significant); an unknown one is a NotFoundError."""
        validate_version(version)
        if version in self.versions:
            return version
        same = self.same_as(version)
        if same is not None:
            return same
        names = self.sorted_versions()
        known = ", ".join(names[-SHOWN_VERSIONS:])  # the newest: one line, however many
        if len(names) > SHOWN_VERSIONS:
            known = f"{len(names)} versions, the newest {known}; `mlops list {self.name}`"
        raise NotFoundError(f"unknown version {version!r} of {self.name} (registered: {known})")

    def same_as(self, version: str) -> str | None:
        """The registered version equal to `version` by SemVer precedence, if any."""
        key = version_key(version)
        return next((v for v in self.versions if version_key(v) == key), None)

    def sorted_versions(self) -> list[str]:
        return sorted(self.versions, key=version_key)

    def make_champion(self, version: str) -> None:
        """`version` serves 100% of traffic, every other version 0%; the old champion is kept
        in the history for rollback."""
        if self.champion is not None and self.champion != version:
            self.champion_history.append(self.champion)
        self._serve_only(version)

    def restore_previous_champion(self) -> tuple[str, str | None]:
        """Make the latest non-deprecated earlier champion serve again: (restored, replaced)."""
        history = self.champion_history
        while history and self.versions[history[-1]].deprecated:
            history.pop()
        if not history:
            raise ConflictError(
                f"{self.name} has no earlier champion to roll back to; "
                f"promote a version with `mlops promote {self.name} VERSION`"
            )
        previous, current = history.pop(), self.champion
        self._serve_only(previous)
        return previous, current

    def split_traffic(self, control: str, treatment: str, treatment_pct: float) -> None:
        """Route `treatment_pct` percent to the treatment and the rest to the control."""
        self.versions[control].traffic_percentage = round(100.0 - treatment_pct, 2)
        self.versions[treatment].traffic_percentage = treatment_pct

    def _serve_only(self, version: str) -> None:
        self.champion = version
        for name, record in self.versions.items():
            record.traffic_percentage = 100.0 if name == version else 0.0

    def copy(self) -> ModelType:
        """A copy to change (the versions' records copied, and their configs and tags)."""
        return ModelType(
            self.name,
            self.champion,
            list(self.champion_history),
            {v: rec.copy() for v, rec in self.versions.items()},
            dict(self.aliases),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "champion_history": list(self.champion_history),
            "versions": {v: rec.to_doc() for v, rec in self.versions.items()},
            "aliases": dict(self.aliases),
        }


class Models(MutableMapping[str, "ModelType"]):
    """The model types of a registry by name, each read on first use.

    A store that keeps each model type apart (the directory store's `models/` files, the
    database's rows) names them all up front and gives `load`, which reads one; a command on
    one model type then reads only that type. Without `load`, every type is held (a document
    read whole). Iterating the names reads nothing; values and items read every type.
    """

    def __init__(
        self,
        loaded: Mapping[str, ModelType] | None = None,
        names: Iterable[str] = (),
        load: Callable[[str], ModelType] | None = None,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        self._names: dict[str, None] = dict.fromkeys(names)
        self._sizes = dict(sizes or {})  # versions per type, as the store knows them unread
        self._loaded: dict[str, ModelType] = {}
        self._set: set[str] = set()  # given here, not read by `load`
        self._load = load
        self._copy = False  # a copy to change: a type read is copied from what `load` gives
        for name, model in (loaded or {}).items():
            self[name] = model

    def __getitem__(self, name: str) -> ModelType:
        found = self._loaded.get(name)
        if found is None:
            if name not in self._names or self._load is None:
                raise KeyError(name)
            found = self._load(name)
            if self._copy:
                found = found.copy()
            self._loaded[name] = found
        return found

    def __setitem__(self, name: str, model: ModelType) -> None:
        self._names[name] = None
        self._loaded[name] = model
        self._set.add(name)

    def __delitem__(self, name: str) -> None:
        del self._names[name]
        self._loaded.pop(name, None)
        self._set.discard(name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def seed(self, name: str, model: ModelType) -> None:
        """Hold a type as `load` would have read it (not given: a copy reads it again)."""
        if name not in self._names or self._load is None:
            raise KeyError(name)
        self._loaded[name] = model

    def size(self, name: str) -> int:
        """How many versions a model type has (read only when the store does not say)."""
        if name in self._loaded or name not in self._sizes:
            return len(self[name].versions)
        return self._sizes[name]

    def loaded(self) -> dict[str, ModelType]:
        """The model types read (or given) so far."""
        return dict(self._loaded)

    def changed(self, before: Models) -> dict[str, ModelType]:
        """The model types that differ from `before`'s (a copy of it changed): new ones, and
        the ones read or given here that are not equal to `before`'s. Types neither read nor
        given are the same, when both read from one source; else every type is read."""
        same = before._load is not None and before._load is self._load
        out = {}
        for name in self:
            if same and name in before and name not in self._loaded:
                continue
            model = self[name]
            if name not in before or model != before[name]:
                out[name] = model
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        if list(self) != list(other):
            return False
        if not (isinstance(other, Models) and other._load is self._load):
            return all(self[name] == other[name] for name in self)
        # one source: a type that neither side may have changed is the same file's
        return all(
            self[name] == other[name]
            for name in self
            if self._changeable(name) or other._changeable(name)
        )

    def _changeable(self, name: str) -> bool:
        """Whether this mapping's type may differ from its source's (given, or a copy)."""
        return name in self._set or (self._copy and name in self._loaded)

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> Models:
        """A copy to change: the types given here are copied, the ones read from the store
        are read again when used (the store's files and rows of one generation never change)."""
        out = Models(names=self._names, load=self._load, sizes=self._sizes)
        out._copy = True
        for name in self._names:
            if name in self._loaded and (self._load is None or name in self._set):
                out[name] = copy.deepcopy(self._loaded[name], memo)
        out._set &= set(self._set if self._load is not None else self._names)
        return out

    def __repr__(self) -> str:
        return f"Models({list(self._names)!r}, loaded={list(self._loaded)!r})"


@dataclass(eq=True)
class ABTest(MappingResult):
    """An A/B test between a model type's champion (control) and a treatment version."""

    name: str
    model_type: str
    control_version: str
    treatment_version: str
    treatment_traffic_pct: float
    duration_days: float
    min_requests: int
    max_error_rate_increase: float
    min_confidence_improvement: float
    alpha: float
    method: str
    sequential_tuning: int
    max_confidence_drop: float | None = None
    max_latency_increase_ms: float | None = None
    max_latency_increase: float | None = None  # relative to the control's mean (0.1 = 10%)
    harm_tolerance: dict[str, float] = field(default_factory=dict)  # missing: 0
    decision_rules: int = 2  # schema.DECISION_RULES; 1 for tests started before schema 4
    tail_latency: bool = False  # off for a test recorded before the guardrail existed
    max_tail_latency_increase: float | None = None
    tail_latency_ms: float | None = None  # tau, once known (recorded, never moved)
    tail_latency_source: str | None = None  # champion_history or first_day
    tail_latency_requests: int | None = None  # the requests tau was computed from
    status: str = "running"
    started_at: str = ""
    finalized_at: str | None = None
    end_reason: str | None = None  # why a test was aborted (promote --force)
    source: dict[str, Any] | None = None  # where its requests live (sources.Source.to_doc)
    ramp: dict[str, Any] | None = None  # its traffic ramp (ramp.new_ramp), when it has one

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def ramp_step(self) -> int | None:
        """The current step of its ramp (1-based), None without a ramp."""
        return None if self.ramp is None else int(self.ramp["step"])

    def version_of(self, variant: str) -> str:
        return self.control_version if variant == "control" else self.treatment_version

    def config(self) -> dict[str, Any]:
        """The decision settings (the `ab.defaults` keys) with the two versions."""
        return {
            "control_version": self.control_version,
            "treatment_version": self.treatment_version,
            **{k: getattr(self, k) for k in AB_CONFIG_FIELDS},
            **{k: getattr(self, k) for k in TAIL_FIELDS},
        }

    def to_doc(self) -> dict[str, Any]:
        """The registry's record (`source` and `ramp` only when the test has one)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "name"
            and not (f.name in ("source", "ramp") and getattr(self, f.name) is None)
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON of a test: its name and every field the registry keeps."""
        return {"name": self.name, **self.to_doc()}


@dataclass
class Settings:
    """The validated `settings` block, defaults merged in."""

    data: dict[str, Any]

    @property
    def lock_timeout_s(self) -> float:
        return float(self.data["lock_timeout_s"])

    @property
    def drift(self) -> dict[str, Any]:
        return self.data["drift"]  # type: ignore[no-any-return]

    @property
    def ab_defaults(self) -> dict[str, Any]:
        return self.data["ab"]["defaults"]  # type: ignore[no-any-return]

    @property
    def harm_tolerance(self) -> dict[str, float]:
        return self.data["ab"]["harm_tolerance"]  # type: ignore[no-any-return]

    def get(self, key: str) -> Any:
        """A setting by dotted key (`drift.thresholds.retrain`)."""
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise NotFoundError(
                    f"unknown setting {key!r}; see `mlops config list` for the settings"
                )
            node = node[part]
        return node

    def flat(self) -> list[tuple[str, Any]]:
        """Every setting as (dotted key, value); the hooks map stays one entry."""
        out: list[tuple[str, Any]] = []

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict) and node and prefix != "drift.hooks":
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out.append((prefix, node))

        walk("", self.data)
        return out


@dataclass
class RegistryState:
    """Everything `registry.yaml` holds, typed."""

    schema_version: int
    settings: Settings
    models: Models = field(default_factory=Models)
    ab_tests: dict[str, ABTest] = field(default_factory=dict)
    # The directory store's commit marks: bytes of events.jsonl and archive/ab_tests.jsonl that
    # this registry's writes committed (lines past them belong to a write that never happened).
    committed: dict[str, int] = field(default_factory=dict)
    # The directory store's generation: bumped by every commit; and the generation, digest
    # and number of versions of each model type's file (models/<type>/<generation>.jsonl).
    generation: int = field(default=0, compare=False)
    model_files: dict[str, tuple[int, str, int]] = field(default_factory=dict, compare=False)
    # HTTP endpoints registry events are delivered to (id -> schema.WEBHOOK document; their
    # secrets are kept apart, see webhooks.py), and the outbox's counters: entries written and
    # the last sequence number per model type (the store assigns them at commit).
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox_n: int = field(default=0, compare=False)
    outbox_seq: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.models, Models):
            self.models = Models(self.models)

    def model(self, model_type: str) -> ModelType:
        """A model type; an unknown one is a NotFoundError listing the known ones."""
        validate_name(model_type, "model type")
        try:
            return self.models[model_type]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none registered yet"
            raise NotFoundError(f"unknown model type {model_type!r} (known: {known})") from None

    def version(self, model_type: str, version: str) -> VersionRecord:
        return self.model(model_type).version(version)

    def canonical(self, model_type: str, version: str) -> str:
        """The registered spelling of a version of a model type (see ModelType.canonical)."""
        return self.model(model_type).canonical(version)

    def test(self, name: str) -> ABTest:
        validate_name(name, "A/B test name")
        try:
            return self.ab_tests[name]
        except KeyError:
            # Finished tests are archived (see store.base): name only the ones held here.
            running = ", ".join(sorted(self.ab_tests)) or "none"
            raise NotFoundError(
                f"unknown A/B test {name!r} (running: {running}; `mlops ab list` shows every "
                "test)"
            ) from None

    def running_test(self, model_type: str) -> ABTest | None:
        """The test running on a model type (at most one runs)."""
        for test in self.ab_tests.values():
            if test.model_type == model_type and test.running:
                return test
        return None

    def require_no_running_test(self, model_type: str) -> None:
        test = self.running_test(model_type)
        if test is not None:
            raise ConflictError(
                f"A/B test {test.name} is running on {model_type}; finalize it with "
                f"`mlops ab finalize {test.name} promote|rollback`, or pass force=True",
                cli={"force=True": "--force"},
            )

    def route(self, model_type: str, user_id: str) -> tuple[str, str, ABTest | None]:
        """Who serves a user: (variant, version, test) while a test runs on the model type,
        else ("champion", champion, None). Sticky: the same user gets the same arm."""
        return self.router(model_type).route(user_id)

    def router(self, model_type: str) -> Router:
        """How a model type's users are routed in this state (bound once: a service routes
        every request of a snapshot with one)."""
        model = self.model(model_type)
        test = self.running_test(model_type)
        if test is None and model.champion is None:
            raise NotFoundError(
                f"{model_type} has no champion; promote one with "
                f"`mlops promote {model_type} VERSION`"
            )
        return Router(test, model.champion)

    def running_tests(self) -> dict[str, ABTest]:
        return {name: t for name, t in self.ab_tests.items() if t.running}

    def take_finalized_tests(self) -> list[ABTest]:
        """Remove the finalized tests (they move to the store's archive) and return them."""
        done = [t for t in self.ab_tests.values() if not t.running]
        for test in done:
            del self.ab_tests[test.name]
        return done

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "settings": self.settings.data,
            "models": {name: m.to_doc() for name, m in self.models.items()},
            "ab_tests": {name: t.to_doc() for name, t in self.ab_tests.items()},
            "committed": dict(self.committed),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RegistryState:
        """Build the typed state from a validated document (see schema.validate_state)."""
        return cls(
            schema_version=doc["schema_version"],
            settings=Settings(doc["settings"]),
            models=Models({name: model_from_doc(name, m) for name, m in doc["models"].items()}),
            ab_tests={name: ABTest(name=name, **t) for name, t in doc["ab_tests"].items()},
            committed=dict(doc.get("committed") or {}),
        )


def model_from_doc(name: str, doc: dict[str, Any]) -> ModelType:
    """A model type from its validated document (schema.MODEL)."""
    return ModelType(
        name=name,
        champion=doc["champion"],
        champion_history=list(doc["champion_history"]),
        versions={v: VersionRecord(**rec) for v, rec in doc["versions"].items()},
        aliases=dict(doc.get("aliases") or {}),
    )


class Level(str, Enum):
    """Drift levels, ordered: ok < monitor < retrain < critical."""

    OK = "ok"
    MONITOR = "monitor"
    RETRAIN = "retrain"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Level).index(self)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank >= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank < other.rank

    def __gt__(self, other: object) -> bool:  # all four: str's own would compare the names
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank <= other.rank

    @classmethod
    def alerting(cls) -> tuple[Level, ...]:
        """The levels that have a threshold and may have a hook."""
        return (cls.MONITOR, cls.RETRAIN, cls.CRITICAL)

    @classmethod
    def of(cls, score: float, thresholds: dict[str, float]) -> Level:
        """The level of a score: above a level's threshold is that level (else ok)."""
        for level in reversed(cls.alerting()):
            if score > thresholds[level.value]:
                return level
        return cls.OK
