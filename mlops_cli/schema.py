"""The registry.yaml schema: defaults, validation that names the file and key, migrations."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from . import limits
from .errors import StateError, ValidationError
from .naming import NAME_RE, SEMVER_RE
from .state import Level

SCHEMA_VERSION = 5

HEADER = (
    "# mlops registry: written by the `mlops` tool. Change it with mlops commands\n"
    "# (mlops config set KEY VALUE for settings); every write is validated and atomic.\n"
)

DEFAULT_SETTINGS: dict[str, Any] = {
    "lock_timeout_s": 30.0,
    "drift": {
        "reference_size": 10000,
        "window_size": 10000,
        "min_samples": 100,
        "weights": {"statistical": 0.4, "performance": 0.3, "distribution": 0.3},
        "performance_scale": 0.2,
        "distribution_scale": 1.0,
        "thresholds": {"monitor": 0.1, "retrain": 0.3, "critical": 0.5},
        "alarm_alpha": 0.001,
        "max_feature_series": 100,
        "hooks": {},
        "hook_timeout_s": 300.0,
        "hook_cooldown_s": 86400.0,
    },
    "ab": {
        "defaults": {
            "treatment_traffic_pct": 10.0,
            "duration_days": 7.0,
            "min_requests": 1000,
            "max_error_rate_increase": 0.05,
            "min_confidence_improvement": 0.02,
            "alpha": 0.05,
            "method": "sequential",
            "sequential_tuning": 5000,
            "max_confidence_drop": 0.02,
            "max_latency_increase_ms": None,
            "max_latency_increase": 0.10,
            "tail_latency": True,
            "max_tail_latency_increase": None,
        },
        "harm_tolerance": {
            "error_rate": 0.0,
            "confidence": 0.0,
            "inference_time_ms": 0.0,
            "tail_latency": 0.0,
        },
    },
    # Events out (docs/events.md): delivery attempts per event and endpoint before it is
    # dead-lettered, the first retry's delay (doubling after), how long the process that made
    # a change delivers before it returns (0: leave it to `mlops webhook deliver`), and the
    # timeout of one HTTP request.
    "webhooks": {"max_attempts": 8, "backoff_s": 10.0, "drain_s": 2.0, "timeout_s": 5.0},
    # The watch after a promotion (watch.py): its window, and whether a breach rolls back.
    "watch": {"hours": 24.0, "rollback": False},
}

# The decision rules a test is judged by, recorded when it starts (a running test keeps the
# rules it started with): 1, those of schema 1-3 (harm on errors needs the estimate above
# max_error_rate_increase; a guardrail harms beyond its margin; no default latency
# guardrail); 2, harm is any clear deterioration (an interval at alpha/k wholly on the harmful
# side of zero, widened by ab.harm_tolerance) and the latency guardrail is on by default.
DECISION_RULES = 2
LEGACY_RULES = 1
HARM_GUARDRAILS = ("error_rate", "confidence", "inference_time_ms", "tail_latency")

Check = Callable[[Any, str], Any]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Check:
    def check(value: Any, key: str) -> float:
        if not _is_number(value):
            raise ValueError(f"{key} must be a number, not {value!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(f"{key} must be {'>' if low_open else '>='} {low:g}, not {value!r}")
        if high is not None and (value > high or (high_open and value == high)):
            raise ValueError(f"{key} must be {'<' if high_open else '<='} {high:g}, not {value!r}")
        return float(value)

    return check


def integer(low: int, high: int | None = None) -> Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be a whole number, not {value!r}")
        if value < low:
            raise ValueError(f"{key} must be >= {low}, not {value!r}")
        if high is not None and value > high:
            raise ValueError(f"{key} must be <= {high:,}, not {value!r}")
        return value

    return check


def string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def text(max_bytes: int = limits.TEXT_MAX_BYTES) -> Check:
    """A string of at most `max_bytes` in UTF-8 without a NUL character (see limits)."""

    def check(value: Any, key: str) -> str:
        string(value, key)
        try:
            return limits.check_text(key, value, max_bytes)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None

    return check


def no_nul(value: Any, key: str) -> Any:
    """Any JSON-like value whose strings (keys too) hold no NUL character: PostgreSQL's
    text and jsonb cannot store one, so neither store accepts it."""
    stack: list[tuple[Any, str]] = [(value, key)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise ValueError(f"{where} holds a NUL character (\\u0000), which cannot be stored")
        elif isinstance(node, dict):
            for k, v in node.items():
                stack.append((k, where))
                stack.append((v, key_join(where, str(k).replace("\x00", "\\u0000"))))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
    return value


def timestamp(value: Any, key: str) -> str:
    """An ISO-8601 time with a zone (`Z` or an offset), as the tool writes them."""
    from .timeutil import parse_ts

    string(value, key)
    try:
        parse_ts(value)
    except ValueError:
        raise ValueError(
            f"{key} must be an ISO-8601 time with a zone (2026-01-31T12:00:00Z), not {value!r}"
        ) from None
    return str(value)


def optional(inner: Check) -> Check:
    def check(value: Any, key: str) -> Any:
        return None if value is None else inner(value, key)

    return check


def choice(*options: str) -> Check:
    def check(value: Any, key: str) -> str:
        if value not in options:
            raise ValueError(f"{key} must be one of {', '.join(options)}, not {value!r}")
        return str(value)

    return check


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{key} must be a mapping with string keys, not {value!r}")
    return value


def string_map(value: Any, key: str) -> dict[str, str]:
    mapping(value, key)
    bounded = text()
    for k, v in value.items():
        bounded(k, f"{key} key")
        bounded(v, f"{key}.{k}")
    return dict(value)


def config_mapping(value: Any, key: str) -> dict[str, Any]:
    return no_nul(mapping(value, key), key)  # type: ignore[no-any-return]


def name_of(what: str) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
            raise ValueError(f"{key}: {value!r} is not a valid {what}")
        return value

    return check


def version_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or SEMVER_RE.fullmatch(value) is None:
        raise ValueError(f"{key}: {value!r} is not a SemVer version")
    return value


def record(fields: dict[str, Check], required: bool = True) -> Check:
    """A mapping with exactly these keys (all required, or all optional)."""

    def check(value: Any, key: str) -> dict[str, Any]:
        mapping(value, key)
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"{key or 'settings'}: unknown key {key_join(key, unknown[0])!r}")
        out: dict[str, Any] = {}
        for name, inner in fields.items():
            if name not in value:
                if required:
                    raise ValueError(f"{key or 'settings'}: missing key {key_join(key, name)!r}")
                continue
            out[name] = inner(value[name], key_join(key, name))
        return out

    return check


def each(key_check: Check, value_check: Check) -> Check:
    def check(value: Any, key: str) -> dict[str, Any]:
        mapping(value, key)
        return {
            key_check(k, key_join(key, str(k))): value_check(v, key_join(key, str(k)))
            for k, v in value.items()
        }

    return check


def share(value: Any, key: str) -> float:
    """A share in [0, 1], as a number (0.1) or a percentage string ("10%")."""
    number_value = value
    if isinstance(value, str):
        body = value.strip()
        try:
            number_value = float(body[:-1]) / 100 if body.endswith("%") else float(body)
        except ValueError:
            raise ValueError(f"{key} must be a share such as 10% or 0.1, not {value!r}") from None
    if not _is_number(number_value) or not 0 <= number_value <= 1:
        raise ValueError(
            f"{key} must be a share between 0 and 1 (0% to 100%, e.g. 10% or 0.1), not {value!r}"
        )
    return float(number_value)


def list_of(inner: Check) -> Check:
    def check(value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list, not {value!r}")
        return [inner(v, f"{key}[{i}]") for i, v in enumerate(value)]

    return check


def key_join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


AB_FIELDS: dict[str, Check] = {
    "treatment_traffic_pct": number(0, 100, low_open=True, high_open=True),
    "duration_days": number(0, limits.DURATION_DAYS.high),
    "min_requests": integer(0, int(limits.MIN_REQUESTS.high)),
    "max_error_rate_increase": number(0, 1),
    "min_confidence_improvement": number(-1, 1),
    "alpha": number(0, 0.5, low_open=True),
    "method": choice("sequential", "fixed"),
    "sequential_tuning": integer(1, int(limits.SEQUENTIAL_TUNING.high)),
    "max_confidence_drop": optional(number(0, 1)),
    "max_latency_increase_ms": optional(number(0)),
    "tail_latency": boolean,
    "max_tail_latency_increase": optional(number(0, 1)),
    "max_latency_increase": optional(share),
}
HARM_TOLERANCE = record({k: number(0, 1) for k in HARM_GUARDRAILS}, required=False)
# Recorded with each test besides the AB_FIELDS: its harm tolerances and the rules it keeps.
TEST_RULES: dict[str, Check] = {
    "harm_tolerance": record({k: number(0, 1) for k in HARM_GUARDRAILS}, required=False),
    "decision_rules": integer(LEGACY_RULES, DECISION_RULES),
}

LEVELS = tuple(level.value for level in Level.alerting())
WEIGHTS = ("statistical", "performance", "distribution")
WEIGHTS_HINT = (
    "set the three together: `mlops config set drift.weights "
    "statistical=0.5,performance=0.25,distribution=0.25`"
)

SETTINGS = record(
    {
        "lock_timeout_s": number(0, limits.LOCK_TIMEOUT_S.high),
        "drift": record(
            {
                "reference_size": integer(1, limits.SIZE_MAX),
                "window_size": integer(1, limits.SIZE_MAX),
                "min_samples": integer(1, limits.SIZE_MAX),
                "weights": record(
                    {k: number(0) for k in WEIGHTS},
                    required=False,
                ),
                "performance_scale": number(0, limits.DRIFT_SCALE.high, low_open=True),
                "distribution_scale": number(0, limits.DRIFT_SCALE.high, low_open=True),
                "thresholds": record({k: number(0, 1) for k in LEVELS}, required=False),
                "alarm_alpha": number(0, 0.5, low_open=True),
                "max_feature_series": integer(0, 1000),
                "hooks": each(choice(*LEVELS), string),
                "hook_timeout_s": number(0, limits.HOOK_TIMEOUT_S.high, low_open=True),
                "hook_cooldown_s": number(0, limits.HOOK_COOLDOWN_S.high),
            },
            required=False,
        ),
        "ab": record(
            {"defaults": record(AB_FIELDS, required=False), "harm_tolerance": HARM_TOLERANCE},
            required=False,
        ),
        "webhooks": record(
            {
                "max_attempts": integer(1, 100),
                "backoff_s": number(0, 86400),
                "drain_s": number(0, 600),
                "timeout_s": number(0, 600, low_open=True),
            },
            required=False,
        ),
        "watch": record(
            {"hours": number(0, 24 * 365, low_open=True), "rollback": boolean}, required=False
        ),
    },
    required=False,
)

_VERSION = record(
    {
        "model_path": text(),
        "config": config_mapping,
        "traffic_percentage": number(0, 100),
        "registered_at": timestamp,
        "description": text(),
        "tags": string_map,
        "sha256": optional(text()),
        "size_bytes": optional(integer(0)),
        "deprecated": boolean,
        "monitored": boolean,
        "drift_source": optional(config_mapping),  # checked in full by sources.Source
    }
)


def VERSION(value: Any, key: str) -> dict[str, Any]:
    """A version record; one without a drift source reads its samples from the project."""
    if isinstance(value, dict) and "drift_source" not in value:
        value = {**value, "drift_source": None}
    return _VERSION(value, key)  # type: ignore[no-any-return]

_MODEL = record(
    {
        "champion": optional(version_str),
        "champion_history": list_of(version_str),
        "versions": each(version_str, VERSION),
        "aliases": each(name_of("alias"), version_str),
    }
)


def MODEL(value: Any, key: str) -> dict[str, Any]:
    """A model type; one written before aliases has none."""
    if isinstance(value, dict) and "aliases" not in value:
        value = {**value, "aliases": {}}
    return _MODEL(value, key)  # type: ignore[no-any-return]

_AB_TEST = record(
    {
        "model_type": name_of("model type"),
        "control_version": version_str,
        "treatment_version": version_str,
        **{k: v for k, v in AB_FIELDS.items()},
        **TEST_RULES,
        "status": choice("running", "promoted", "rolled_back", "aborted"),
        "started_at": timestamp,
        "finalized_at": optional(timestamp),
        "end_reason": optional(text(2 * limits.TEXT_MAX_BYTES)),  # a reason and its context
        "tail_latency_ms": optional(number(0)),
        "tail_latency_source": optional(choice("champion_history", "first_day")),
        "tail_latency_requests": optional(integer(1)),
        "source": optional(config_mapping),  # checked in full by sources.Source.from_doc
        "ramp": optional(lambda value, key: _ramp(value, key)),
    }
)


def _ramp(value: Any, key: str) -> dict[str, Any]:
    from .ramp import check_ramp  # ramp imports the decision rules, which import this module

    return check_ramp(value, key)

# Written before the tail-latency guardrail: its keys absent. Such a test keeps the rules it
# started with (the guardrail off), read without a schema step, so no other value moves.
_BEFORE_TAIL = {
    "tail_latency": False,
    "max_tail_latency_increase": None,
    "tail_latency_ms": None,
    "tail_latency_source": None,
    "tail_latency_requests": None,
}


def AB_TEST(value: Any, key: str) -> dict[str, Any]:
    """An A/B test record; one written before the tail-latency guardrail has it off."""
    if isinstance(value, dict) and "tail_latency" not in value:
        value = {**value, **{k: v for k, v in _BEFORE_TAIL.items() if k not in value}}
    if isinstance(value, dict) and "source" not in value:  # requests in the project's log
        value = {**value, "source": None}
    if isinstance(value, dict) and "ramp" not in value:  # no ramp: one share throughout
        value = {**value, "ramp": None}
    return _AB_TEST(value, key)  # type: ignore[no-any-return]


STATE = record(
    {
        "schema_version": integer(0),
        "settings": SETTINGS,
        "models": each(name_of("model type"), MODEL),
        "ab_tests": each(name_of("A/B test name"), AB_TEST),
        "committed": record({"events": integer(0), "archive": integer(0)}, required=False),
    }
)


def merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "hooks":
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_thresholds(settings: dict[str, Any]) -> None:
    t = settings["drift"]["thresholds"]
    if not t["monitor"] <= t["retrain"] <= t["critical"]:
        raise ValueError("drift.thresholds must satisfy monitor <= retrain <= critical")


def check_weights(settings: dict[str, Any]) -> None:
    """The drift weights sum to 1, so the score stays in [0, 1] like its components."""
    w = settings["drift"]["weights"]
    total = sum(w[k] for k in WEIGHTS)
    if abs(total - 1.0) > 1e-9:
        shown = ", ".join(f"{k} {w[k]:g}" for k in WEIGHTS)
        raise ValueError(
            f"drift.weights must sum to 1, not {total:g} ({shown}); {WEIGHTS_HINT}"
        )


Migration = Callable[[dict[str, Any]], dict[str, Any]]

# schema_version n -> n + 1: each takes the document of version n and returns version n + 1.
# A project written by an older mlops is upgraded on open and rewritten atomically.
def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """Versions may be marked monitored; tests gain guardrails (off for tests started before
    them, so their decisions keep their meaning) and the reason an aborted test ended."""
    for model in (doc.get("models") or {}).values():
        for version in (model.get("versions") or {}).values():
            version.setdefault("monitored", False)
    for test in (doc.get("ab_tests") or {}).values():
        test.setdefault("max_confidence_drop", None)
        test.setdefault("max_latency_increase_ms", None)
        test.setdefault("end_reason", None)
    return doc


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    """The directory store marks the bytes of events.jsonl and of the test archive each write
    committed (none known yet: every line so far counts). Finalized tests move to the archive
    when the migrated file is written (FileStore), not here: a migration touches no files."""
    doc.setdefault("committed", {})
    return doc


def legacy_test(test: dict[str, Any]) -> dict[str, Any]:
    """A test recorded before schema 4, given the rules it started with: the latency guardrail
    as it was (absolute, or off), no harm tolerance, decision rules 1. A test that has the
    fields is left as it is."""
    test.setdefault("max_latency_increase", None)
    test.setdefault("harm_tolerance", dict.fromkeys(HARM_GUARDRAILS, 0.0))
    test.setdefault("decision_rules", LEGACY_RULES)
    return test


def _v3_to_v4(doc: dict[str, Any]) -> dict[str, Any]:
    """Tests record the rules they are judged by (a relative latency margin, harm tolerances,
    the rules' version); a test started before keeps its old rules (`legacy_test`). Tests in
    the archive are read the same way (FileStore)."""
    for test in (doc.get("ab_tests") or {}).values():
        legacy_test(test)
    return doc


def _v4_to_v5(doc: dict[str, Any]) -> dict[str, Any]:
    """The directory store keeps each model type in its own file, named in registry.yaml (the
    index; see `INDEX`). The document does not change: the store splits it when it writes the
    migrated project (FileStore), as it moves finished tests to the archive."""
    return doc


MIGRATIONS: dict[int, Migration] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
}


def migrate(data: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
    """Upgrade a document to SCHEMA_VERSION, one step at a time; (document, whether changed)."""
    if "schema_version" not in data:
        raise StateError(f"{source}: missing key 'schema_version'")
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise StateError(
            f"{source}: unknown schema_version {version!r}; this mlops reads schema_version "
            f"{SCHEMA_VERSION} (upgrade mlops to read a newer project)"
        )
    migrated = False
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise StateError(
                f"{source}: schema_version {version} is too old for this mlops (no upgrade "
                f"from it); open it with an older mlops first"
            )
        data = step(copy.deepcopy(data))
        version += 1
        data["schema_version"] = version
        migrated = True
    return data, migrated


def new_document() -> dict[str, Any]:
    """The document of a new, empty project."""
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": copy.deepcopy(DEFAULT_SETTINGS),
        "models": {},
        "ab_tests": {},
        "committed": {},
    }


def dump_document(doc: dict[str, Any]) -> bytes:
    """registry.yaml's bytes: the header, then the document in the order it is built."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body: str = yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False)
    return (HEADER + body).encode()


def load_document(data: bytes, source: str) -> tuple[dict[str, Any], bool]:
    """Parse, migrate and validate registry.yaml's bytes: (document, whether it was migrated).

    A YAML error names the line and column; a schema error names the file and the key.
    """
    from .yamlsafe import load_yaml

    # Bounded: an alias budget, a depth limit and duplicate keys refused.
    doc = load_yaml(data, source, error=StateError, hint="; fix the file or restore it from backup")
    if not isinstance(doc, dict):
        raise StateError(f"{source}: expected a mapping with schema_version, models, ab_tests")
    doc, migrated = migrate(doc, source)
    return validate_state(doc, source), migrated


def validate_state(data: Any, source: str, references: bool = True) -> dict[str, Any]:
    """Validate a registry document of this schema version; an error names the file and key.
    `references`: check that champions, aliases and tests name versions there are."""
    if not isinstance(data, dict):
        raise StateError(f"{source}: expected a mapping with schema_version, models, ab_tests")
    if data.get("schema_version") != SCHEMA_VERSION:
        data, _ = migrate(data, source)
    try:
        state: dict[str, Any] = STATE(data, "")
        state["settings"] = merged(DEFAULT_SETTINGS, state["settings"])
        check_thresholds(state["settings"])
        check_weights(state["settings"])
        if references:
            check_references(state)
    except ValueError as exc:
        raise StateError(f"{source}: {exc}") from None
    return state


def validate_changes(after: dict[str, Any], before: dict[str, Any], source: str) -> dict[str, Any]:
    """`validate_state` of a changed registry document holding only some model types (those a
    change touched: `before` holds the same ones as read, already checked): each version equal
    to its `before` is not checked again, and a test whose type is not held stands as read."""
    held = before["models"]
    changed = {
        name: {**model, "versions": {
            v: rec for v, rec in model["versions"].items()
            if (held.get(name) or {}).get("versions", {}).get(v) != rec
        }}
        for name, model in after["models"].items()
    }
    state = validate_state({**after, "models": changed}, source, references=False)
    for name, model in state["models"].items():
        checked = model["versions"]
        model["versions"] = {v: checked.get(v, rec)
                             for v, rec in after["models"][name]["versions"].items()}
    try:
        check_references(
            {**state, "ab_tests": {n: t for n, t in state["ab_tests"].items()
                                   if t["model_type"] in state["models"]}}
        )
    except ValueError as exc:
        raise StateError(f"{source}: {exc}") from None
    return state


def hex_digest(value: Any, key: str) -> str:
    if not isinstance(value, str) or len(value) != 32 or value.strip("0123456789abcdef"):
        raise ValueError(f"{key}: {value!r} is not a digest (32 hexadecimal digits)")
    return value


MODEL_FILE = record({"generation": integer(0), "blake2b": hex_digest, "versions": integer(0)})

# registry.yaml of the directory store from schema 5 on: the index. Each model type lives in
# models/<type>/<generation>.jsonl, the generation, the file's digest and its number of
# versions (paging reads only the types a page covers) named here;
# `generation` is bumped by every commit (a commit writes a changed type's file under the new
# generation, so a file never changes). A file whose bytes have the digest the index names is
# the one a commit validated and wrote: it is parsed without checking each record again.
# An HTTP endpoint events are delivered to (webhooks.py); its signing secret is kept apart.
WEBHOOK = record(
    {
        "url": text(2048),
        "events": list_of(string),  # event kinds, or "*"
        "model_type": optional(name_of("model type")),
        "created_at": timestamp,
        "after": integer(0),  # the outbox entries it gets are those numbered above this
    }
)
# The outbox's counters: entries written (`n`), and the last sequence number per model type
# ("" for events of no model type).
OUTBOX_COUNTERS = record({"n": integer(0), "seq": each(string, integer(0))})
_INDEX = record(
    {
        "schema_version": integer(0),
        "generation": integer(0),
        "settings": SETTINGS,
        "models": each(name_of("model type"), MODEL_FILE),
        "ab_tests": each(name_of("A/B test name"), AB_TEST),
        "committed": record(
            {"events": integer(0), "archive": integer(0), "outbox": integer(0)}, required=False
        ),
        "webhooks": each(name_of("webhook id"), WEBHOOK),
        "outbox": OUTBOX_COUNTERS,
    }
)


def INDEX(value: Any, key: str) -> dict[str, Any]:
    """registry.yaml's index; one written before events out has no webhooks and no outbox."""
    if isinstance(value, dict) and "webhooks" not in value:
        value = {**value, "webhooks": {}}
    if isinstance(value, dict) and "outbox" not in value:
        value = {**value, "outbox": {"n": 0, "seq": {}}}
    return _INDEX(value, key)  # type: ignore[no-any-return]


def digest(data: bytes) -> str:
    """A model type file's digest, as the index names it (blake2b, 16 bytes, hex)."""
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def is_index(doc: Any) -> bool:
    """Whether a parsed registry.yaml is a schema-5 index (else a whole, older document)."""
    return isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION


def load_registry(data: bytes, source: str) -> tuple[dict[str, Any], bool]:
    """registry.yaml's bytes: (the validated index, False), or for a project written by an
    older mlops (the whole registry in one file) (the validated, migrated document, True)."""
    from .yamlsafe import load_yaml

    doc = load_yaml(data, source, error=StateError, hint="; fix the file or restore it from backup")
    if not is_index(doc):
        if not isinstance(doc, dict):
            raise StateError(f"{source}: expected a mapping with schema_version, models, ab_tests")
        doc, _ = migrate(doc, source)
        return validate_state(doc, source), True
    try:
        index: dict[str, Any] = INDEX(doc, "")
        index["settings"] = merged(DEFAULT_SETTINGS, index["settings"])
        check_thresholds(index["settings"])
        check_weights(index["settings"])
        for name, test in index["ab_tests"].items():
            if test["model_type"] not in index["models"]:
                raise ValueError(f"ab_tests.{name}.model_type: {test['model_type']!r} is unknown")
    except ValueError as exc:
        raise StateError(f"{source}: {exc}") from None
    return index, False


def dump_index(doc: dict[str, Any]) -> bytes:
    """registry.yaml's bytes from an index document (see INDEX)."""
    return dump_document(doc)


_MODEL_HEAD = record(
    {
        "champion": optional(version_str),
        "champion_history": list_of(version_str),
        "aliases": each(name_of("alias"), version_str),
    }
)


def MODEL_HEAD(value: Any, key: str) -> dict[str, Any]:
    """A model type's head: champion, its history and aliases (absent: none)."""
    if isinstance(value, dict) and "aliases" not in value:
        value = {**value, "aliases": {}}
    return _MODEL_HEAD(value, key)  # type: ignore[no-any-return]


def _json(doc: Any) -> bytes:
    import orjson

    try:
        return orjson.dumps(doc)
    except TypeError:  # a config holding a mapping with keys that are not strings
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def dump_model(doc: dict[str, Any]) -> bytes:
    """A model type's file (models/<type>/<generation>.jsonl) from its document (MODEL): a
    first line with the champion and its history, then one JSON line per version. A reader
    that held the type's previous file parses and checks only the lines that changed (a
    promote changes two of thousands); see docs/architecture.md."""
    head = {"champion": doc["champion"], "champion_history": doc["champion_history"]}
    if doc.get("aliases"):  # (a type without aliases keeps the bytes it had before them)
        head["aliases"] = doc["aliases"]
    lines = [_json(head)]
    lines += [_json({"version": v, **rec}) for v, rec in doc["versions"].items()]
    return b"\n".join(lines) + b"\n"


def model_lines(data: bytes, source: str) -> tuple[bytes, list[bytes]]:
    """A model type file's head line and version lines (a file cut short is an error)."""
    lines = data.split(b"\n")
    if len(lines) < 2 or lines[-1]:
        raise StateError(f"{source}: not a whole model type file; restore it from backup")
    return lines[0], lines[1:-1]


def load_model_head(line: bytes, name: str, source: str) -> dict[str, Any]:
    """The head line of a model type's file: champion and champion_history, validated."""
    try:
        head: dict[str, Any] = MODEL_HEAD(_parse_line(line, source), f"models.{name}")
    except ValueError as exc:
        raise StateError(f"{source}: {exc}") from None
    return head


def load_model_version(line: bytes, name: str, source: str) -> tuple[str, dict[str, Any]]:
    """One version line of a model type's file: (version, its validated record)."""
    row = _parse_line(line, source)
    try:
        if not isinstance(row, dict) or "version" not in row:
            raise ValueError(f"models.{name}: a line without a version")
        version = version_str(row["version"], f"models.{name}.versions")
        key = f"models.{name}.versions.{version}"
        rec: dict[str, Any] = VERSION({k: v for k, v in row.items() if k != "version"}, key)
    except ValueError as exc:
        raise StateError(f"{source}: {exc}") from None
    return version, rec


def _parse_line(line: bytes, source: str) -> Any:
    import orjson

    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{source}: a line is not JSON ({exc}); restore it from backup") from None


def check_references(state: dict[str, Any]) -> None:
    for model_type, model in state["models"].items():
        for version in [model["champion"], *model["champion_history"]]:
            if version is not None and version not in model["versions"]:
                raise ValueError(f"models.{model_type}: champion {version!r} is not a version")
        for alias, version in (model.get("aliases") or {}).items():
            if version not in model["versions"]:
                where = f"models.{model_type}.aliases.{alias}"
                raise ValueError(f"{where}: {version!r} is not a version")
    for name, test in state["ab_tests"].items():
        versions = state["models"].get(test["model_type"], {}).get("versions", {})
        for role in ("control_version", "treatment_version"):
            if test[role] not in versions:
                raise ValueError(f"ab_tests.{name}.{role}: {test[role]!r} is not registered")


def parse_setting_value(key: str, text: str) -> tuple[list[str], Any]:
    """Split a dotted settings key and parse its YAML value (`mlops config set`)."""
    from .yamlsafe import load_yaml

    parts = key.split(".")
    if parts[:2] == ["drift", "weights"]:
        if len(parts) != 2:
            raise ValidationError(f"the drift weights sum to 1, so {WEIGHTS_HINT}")
        return parts, parse_weights(text)
    node: Any = DEFAULT_SETTINGS
    for i, part in enumerate(parts):
        leaf_map = i == len(parts) - 1 and parts[:-1] == ["drift", "hooks"]
        if not (isinstance(node, dict) and (part in node or leaf_map)):
            raise ValidationError(
                f"unknown setting {key!r}; see `mlops config list` for the settings"
            )
        node = node.get(part, "")
    if isinstance(node, str):  # a command or a name: take the text as it is
        return parts, text
    try:
        value = load_yaml(text, f"the value of {key}")
    except ValidationError:  # not YAML (or a bounded-YAML refusal): take the text as it is
        value = text
    if isinstance(node, dict) and not isinstance(value, dict):
        raise ValidationError(f"setting {key!r} is a group; set one of its keys instead")
    return parts, value


def parse_weights(text: str) -> dict[str, float]:
    """`statistical=0.5,performance=0.25,distribution=0.25` (all three, any order), or the
    same as a YAML mapping."""
    weights: dict[str, float] = {}
    if text.lstrip().startswith("{"):
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict):
            raise ValidationError(f"drift.weights: {text!r} is not a mapping; {WEIGHTS_HINT}")
        text = ",".join(f"{k}={v}" for k, v in doc.items())
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in WEIGHTS or name in weights:
            raise ValidationError(f"drift.weights takes NAME=VALUE for each of "
                                  f"{', '.join(WEIGHTS)}, not {text!r}; {WEIGHTS_HINT}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValidationError(f"drift.weights.{name} must be a number, not {value!r}") from None
    missing = [k for k in WEIGHTS if k not in weights]
    if missing:
        raise ValidationError(f"drift.weights: missing {', '.join(missing)}; {WEIGHTS_HINT}")
    return weights


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    limits.check_depth("settings", settings)  # limits.SETTINGS_DEPTH_MAX
    try:
        checked = merged(DEFAULT_SETTINGS, SETTINGS(settings, ""))  # keys as `config set` takes
        check_thresholds(checked)
        check_weights(checked)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return checked


def load_yaml_mapping(path: Any) -> dict[str, Any]:
    """A user's YAML file holding one mapping (`--config-file`); an empty file is {}."""
    from .yamlsafe import load_yaml

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    doc = load_yaml(data, str(path))  # bounded: alias budget, depth, duplicate keys
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValidationError(f"{path} must hold a YAML mapping")
    return doc
