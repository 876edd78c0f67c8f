"""The PostgreSQL store: one registry and one set of streams for services on many hosts.

psycopg 3 is imported here only, so file projects never pay for it. The registry is held as
rows (model_types, versions, champion_history, ab_tests, settings) and rebuilt into a
`RegistryState` on read; streams are tables a person can query (requests, metrics,
drift_samples, checks, events). See docs/postgresql.md.

- `transaction()` is one database transaction that first locks the single `settings` row
  FOR UPDATE (every registry change takes it, so two changes never interleave), then writes
  the rows that differ and the events.
- `append()` buffers sample records in the process and writes them with one COPY per stream
  when 1,000 are waiting, when the oldest has waited 1 s, on `flush()`, on `close()` and at
  exit. A crash (kill -9, power loss) loses what is buffered: at most 1 s or 1,000 records.
  Checks and events are written at once.
- `append_batch()` is one transaction: the batch id is inserted first (`ON CONFLICT DO
  NOTHING`; a concurrent retry waits on it, then finds it), then one COPY of the validated
  records, committed together.
- `clock` is the database's clock: inside a transaction, that transaction's `now()`; outside,
  the local clock corrected by the offset to the server's `now()`, measured at connect and
  again every 60 s (so per-request stamps cost no round trip).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.copy import QueuedLibpqWriter
from psycopg.pq import TransactionStatus
from psycopg.types.json import Json, set_json_loads

from ..batch import SHOWN, BatchError, CapError, Source, as_stream
from ..decision import UserTotals
from ..errors import (
    ConflictError,
    LockTimeoutError,
    MlopsError,
    ProjectNotFoundError,
    ServiceError,
    StateError,
    ValidationError,
)
from ..moments import Moments
from ..schema import AB_TEST, DEFAULT_SETTINGS, SCHEMA_VERSION, validate_state
from ..state import AB_CONFIG_FIELDS, ABTest, RegistryState
from ..timeutil import Clock, parse_ts, stamp
from .base import (
    EVENTS,
    BatchResult,
    Progress,
    Samples,
    Store,
    Summary,
    Transaction,
    Validator,
    current_actor,
)

FLUSH_RECORDS = 1000  # a buffered stream is written when this many records wait
FLUSH_SECONDS = 1.0  # ... or when the oldest has waited this long
MAX_BUFFERED = 100_000  # records held while the server is away; beyond, append() fails
CLOCK_REFRESH_S = 60.0
CONNECT_TIMEOUT_S = 5
_MIGRATION_LOCK = 0x6D6C6F7073  # "mlops": the advisory lock migrations run under
_CHUNK_BYTES = 1 << 20  # batches are parsed and validated this many bytes at a time


def _migrations() -> list[tuple[int, str]]:
    """The ordered SQL migrations shipped with the package: (version, sql)."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


LATEST = max(v for v, _ in _migrations())


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection with a bounded connect time; a clean ServiceError otherwise."""
    options: dict[str, Any] = {"autocommit": True, "application_name": "mlops"}
    if "connect_timeout" not in url:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        conn = psycopg.connect(url, **options)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceError(
            f"cannot connect to the PostgreSQL store {redact(url)}: {reason}"
        ) from None
    set_json_loads(orjson.loads, conn)
    return conn


# -- streams -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Where a kind of stream lives: its table, the columns naming the stream, the rest."""

    name: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    types: tuple[str, ...]  # of keys + values, for binary COPY

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + self.values

    def where(self) -> str:
        return " AND ".join(f"{k} = %s" for k in self.keys) or "TRUE"


REQUESTS = Table(
    "requests",
    ("test",),
    ("variant", "user_id", "user_id_is_int", "inference_time_ms", "confidence", "error", "ts"),
    ("text", "text", "text", "bool", "float8", "float8", "bool", "timestamptz"),
)
METRICS = Table(
    "metrics",
    ("model_type", "version"),
    ("inference_time_ms", "confidence", "error", "ts"),
    ("text", "text", "float8", "float8", "bool", "timestamptz"),
)
SAMPLES = Table(
    "drift_samples",
    ("model_type", "version", "kind"),
    ("prediction", "confidence", "ts"),
    ("text", "text", "text", "float8", "float8", "timestamptz"),
)
CHECKS = Table(
    "checks",
    ("model_type", "version"),
    ("doc", "score", "level", "ts"),
    ("text", "text", "json", "float8", "text", "timestamptz"),
)
EVENT_TABLE = Table(
    "events", (), ("doc", "kind", "model_type", "ts"), ("json", "text", "text", "timestamptz")
)
BUFFERED = (REQUESTS, METRICS, SAMPLES)


def route(stream: str) -> tuple[Table, tuple[str, ...]]:
    """The table of a stream and the key values that select its rows."""
    parts = tuple(stream.split("/"))
    if parts[0] == "ab" and len(parts) == 2:
        return REQUESTS, parts[1:]
    if parts[0] == "metrics" and len(parts) == 3:
        return METRICS, parts[1:]
    if parts[0] == "drift" and len(parts) == 4:
        if parts[3] == "checks":
            return CHECKS, parts[1:3]
        if parts[3] in ("reference", "production"):
            return SAMPLES, parts[1:]
    if stream == EVENTS:
        return EVENT_TABLE, ()
    raise ValueError(f"unknown stream {stream!r}")


SCAN_PAGE = 65536
_NO_TS = datetime.min.replace(tzinfo=timezone.utc)  # the default of records that have a ts


def _ts(record: dict[str, Any], default: datetime) -> datetime:
    value = record.get("ts")
    return default if value is None else parse_ts(value)


def to_row(table: Table, record: dict[str, Any], default_ts: datetime) -> tuple[Any, ...]:
    """The value columns of a validated record."""
    ts = _ts(record, default_ts)
    if table is REQUESTS:
        user = record.get("user_id")
        return (
            record["variant"],
            None if user is None else str(user),
            type(user) is int,
            float(record["inference_time_ms"]),
            float(record["confidence"]),
            bool(record.get("error", False)),
            ts,
        )
    if table is METRICS:
        return (
            float(record["inference_time_ms"]),
            float(record["confidence"]),
            bool(record.get("error", False)),
            ts,
        )
    if table is SAMPLES:
        return (float(record["prediction"]), float(record["confidence"]), ts)
    if table is CHECKS:
        score = record.get("score")
        return (Json(record, _dumps), score, record.get("level"), ts)
    return (Json(record, _dumps), str(record.get("event", "")), record.get("model_type"), ts)


def from_row(table: Table, row: Sequence[Any]) -> dict[str, Any]:
    """A stored row as the record that was appended (documents as written)."""
    if table in (CHECKS, EVENT_TABLE):
        return row[0]  # type: ignore[no-any-return]
    if table is REQUESTS:
        variant, user, is_int, t, c, error, ts = row
        out: dict[str, Any] = {"ts": stamp(ts), "variant": variant}
        if user is not None:
            out["user_id"] = int(user) if is_int else user
        return {**out, "inference_time_ms": t, "confidence": c, "error": error}
    if table is METRICS:
        t, c, error, ts = row
        return {"ts": stamp(ts), "inference_time_ms": t, "confidence": c, "error": error}
    prediction, confidence, ts = row
    return {"ts": stamp(ts), "prediction": prediction, "confidence": confidence}


_COUNT_SQL = (
    "INSERT INTO stream_counts (stream, records, appended) VALUES (%s, %s, %s) "
    "ON CONFLICT (stream) DO UPDATE SET records = stream_counts.records + excluded.records, "
    "appended = stream_counts.appended + excluded.appended"
)


def _copy(
    cur: psycopg.Cursor[Any], table: Table, rows: Iterator[tuple[Any, ...]] | list[Any]
) -> None:
    sql = f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN (FORMAT BINARY)"
    with cur.copy(sql) as copy_:
        copy_.set_types(list(table.types))
        for row in rows:
            copy_.write_row(row)


# -- registry rows -----------------------------------------------------------------------------

_VERSION_COLS = (
    "model_path",
    "config",
    "traffic_percentage",
    "registered_at",
    "description",
    "tags",
    "sha256",
    "size_bytes",
    "deprecated",
    "monitored",
)
_TEST_COLS = (
    "model_type",
    "control_version",
    "treatment_version",
    *AB_CONFIG_FIELDS,
    "status",
    "started_at",
    "finalized_at",
    "end_reason",
)
_FLOATS = {
    "traffic_percentage",
    "treatment_traffic_pct",
    "duration_days",
    "max_error_rate_increase",
    "min_confidence_improvement",
    "alpha",
    "max_confidence_drop",
    "max_latency_increase_ms",
}

# One statement, so one snapshot: the whole registry as JSON arrays in insertion order.
_READ_SQL = f"""
SELECT (SELECT doc FROM settings WHERE id = 1),
  (SELECT coalesce(json_agg(json_build_array(name, champion) ORDER BY ord), '[]')
     FROM model_types),
  (SELECT coalesce(json_agg(json_build_array(model_type, version, {", ".join(_VERSION_COLS)})
     ORDER BY ord), '[]') FROM versions),
  (SELECT coalesce(json_agg(json_build_array(model_type, version) ORDER BY model_type,
     position), '[]') FROM champion_history),
  (SELECT coalesce(json_agg(json_build_array(name, {", ".join(_TEST_COLS)}) ORDER BY ord),
     '[]') FROM ab_tests WHERE status = 'running')
"""
# The archive: finalized tests are the rows of ab_tests whose status is not running.
_ARCHIVED_SQL = (
    f"SELECT name, {', '.join(_TEST_COLS)} FROM ab_tests WHERE status <> 'running'"
)


def _typed(cols: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    # json_build_array writes 100.0 as 100: give float columns their type back.
    return {
        c: float(v) if c in _FLOATS and v is not None else v
        for c, v in zip(cols, values, strict=False)
    }


def _registry_doc(row: Sequence[Any]) -> dict[str, Any]:
    settings, types, versions, history, tests = row
    if settings is None:
        raise StateError("the store holds no registry: run `mlops -C URL init` first")
    models: dict[str, Any] = {
        name: {"champion": champion, "champion_history": [], "versions": {}}
        for name, champion in types
    }
    for model_type, version, *values in versions:
        models[model_type]["versions"][version] = _typed(_VERSION_COLS, values)
    for model_type, version in history:
        models[model_type]["champion_history"].append(version)
    ab_tests = {name: _typed(_TEST_COLS, values) for name, *values in tests}
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": settings,
        "models": models,
        "ab_tests": ab_tests,
        "committed": {},
    }


def _version_params(model_type: str, version: str, rec: dict[str, Any]) -> list[Any]:
    values = [Json(rec[c], _dumps) if c in ("config", "tags") else rec[c] for c in _VERSION_COLS]
    return [model_type, version, *values]


def _write_diff(cur: psycopg.Cursor[Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """Write the rows of the registry that changed between two documents."""
    if before["settings"] != after["settings"]:
        cur.execute(
            "UPDATE settings SET doc = %s, updated_at = now() WHERE id = 1",
            [Json(after["settings"], _dumps)],
        )
    old_models, new_models = before["models"], after["models"]
    for name in old_models.keys() - new_models.keys():
        cur.execute("DELETE FROM model_types WHERE name = %s", [name])
    insert_version = (
        f"INSERT INTO versions (model_type, version, {', '.join(_VERSION_COLS)}) "
        f"VALUES ({', '.join(['%s'] * (2 + len(_VERSION_COLS)))})"
    )
    update_version = (
        f"UPDATE versions SET {', '.join(f'{c} = %s' for c in _VERSION_COLS)} "
        "WHERE model_type = %s AND version = %s"
    )
    for name, model in new_models.items():
        old = old_models.get(name)
        if old == model:
            continue
        if old is None:
            cur.execute(
                "INSERT INTO model_types (name, champion) VALUES (%s, %s)",
                [name, model["champion"]],
            )
            old = {"champion": model["champion"], "champion_history": [], "versions": {}}
        elif old["champion"] != model["champion"]:
            cur.execute(
                "UPDATE model_types SET champion = %s WHERE name = %s", [model["champion"], name]
            )
        for version in old["versions"].keys() - model["versions"].keys():
            cur.execute(
                "DELETE FROM versions WHERE model_type = %s AND version = %s", [name, version]
            )
        for version, rec in model["versions"].items():
            if version not in old["versions"]:
                cur.execute(insert_version, _version_params(name, version, rec))
            elif old["versions"][version] != rec:
                params = _version_params(name, version, rec)
                cur.execute(update_version, [*params[2:], name, version])
        if old["champion_history"] != model["champion_history"]:
            cur.execute("DELETE FROM champion_history WHERE model_type = %s", [name])
            if model["champion_history"]:
                cur.executemany(
                    "INSERT INTO champion_history (model_type, position, version) "
                    "VALUES (%s, %s, %s)",
                    [(name, i, v) for i, v in enumerate(model["champion_history"])],
                )
    old_tests, new_tests = before["ab_tests"], after["ab_tests"]
    for name in old_tests.keys() - new_tests.keys():
        cur.execute("DELETE FROM ab_tests WHERE name = %s", [name])
    for name, test in new_tests.items():
        if name not in old_tests:
            cur.execute(
                f"INSERT INTO ab_tests (name, {', '.join(_TEST_COLS)}) "
                f"VALUES ({', '.join(['%s'] * (1 + len(_TEST_COLS)))})",
                [name, *(test[c] for c in _TEST_COLS)],
            )
        elif old_tests[name] != test:
            cur.execute(
                f"UPDATE ab_tests SET {', '.join(f'{c} = %s' for c in _TEST_COLS)} WHERE name = %s",
                [*(test[c] for c in _TEST_COLS), name],
            )


def _archive_finished(
    cur: psycopg.Cursor[Any], before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Write the tests a change finalized (the archive is their status) and take them out of
    both documents, so the registry diff leaves their rows alone."""
    for name, test in list(after["ab_tests"].items()):
        if test["status"] == "running":
            continue
        cur.execute(
            f"INSERT INTO ab_tests (name, {', '.join(_TEST_COLS)}) "
            f"VALUES ({', '.join(['%s'] * (1 + len(_TEST_COLS)))}) ON CONFLICT (name) DO UPDATE "
            f"SET {', '.join(f'{c} = excluded.{c}' for c in _TEST_COLS)}",
            [name, *(test[c] for c in _TEST_COLS)],
        )
        del after["ab_tests"][name]
        before["ab_tests"].pop(name, None)


# -- migrations --------------------------------------------------------------------------------


def _schema_version(cur: psycopg.Cursor[Any]) -> int:
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = cur.fetchone()
    if not row or not row[0]:
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def upgrade(url: str) -> tuple[int, int]:
    """Apply the migrations a database lacks, in one transaction under an advisory lock
    (`mlops db upgrade`); returns (version before, version after)."""
    conn = connect(url)
    try:
        with _translated(url, "upgrading"), conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            current = _schema_version(cur)
            if current > LATEST:
                raise StateError(
                    f"{redact(url)} is at store schema {current}, newer than this mlops "
                    f"({LATEST}): upgrade mlops"
                )
            for version, sql in _migrations():
                if version > current:
                    cur.execute(sql.encode())
                    cur.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
        return current, LATEST
    finally:
        conn.close()


@contextmanager
def _translated(url: str, doing: str) -> Iterator[None]:
    """Database failures as MlopsErrors that say what to do."""
    try:
        yield
    except pg_errors.LockNotAvailable:
        raise LockTimeoutError(
            f"could not lock the registry in {redact(url)} while {doing} within lock_timeout_s: "
            "another mlops process holds it; retry, or raise the setting lock_timeout_s"
        ) from None
    except pg_errors.InsufficientPrivilege as exc:
        raise ServiceError(
            f"{redact(url)} refused {doing}: {exc.diag.message_primary or exc}; this role may "
            "not do that (see docs/postgresql.md, Roles)"
        ) from None
    except psycopg.OperationalError as exc:
        raise ServiceError(
            f"lost the PostgreSQL store {redact(url)} while {doing}: "
            f"{str(exc).strip() or type(exc).__name__}; nothing was committed, retry"
        ) from None
    except psycopg.Error as exc:
        raise ServiceError(f"{redact(url)} failed while {doing}: {exc}") from None


# -- the store ---------------------------------------------------------------------------------

_OPEN: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def _forget_parents() -> None:
    for store in list(_OPEN):
        store._forget_parent()


os.register_at_fork(after_in_child=_forget_parents)


@atexit.register
def _flush_at_exit() -> None:
    for store in list(_OPEN):
        with contextlib.suppress(MlopsError):  # the server is gone: the documented loss
            store.flush()


class PostgresStore:
    """A project in a PostgreSQL database (see the module docstring for the semantics)."""

    def __init__(self, url: str, actor: str | None = None) -> None:
        self.location = url
        self._shown = redact(url)
        self._actor = actor
        self._lock = threading.RLock()  # the connection and the buffers
        self._conn = connect(url)
        self._local = threading.local()
        self._lock_timeout_s = float(DEFAULT_SETTINGS["lock_timeout_s"])
        self._buffers: dict[str, list[tuple[Any, ...]]] = {}
        self._buffered = 0
        self._oldest = 0.0
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._offset = timedelta(0)
        self._offset_at = -CLOCK_REFRESH_S
        self._pid = os.getpid()
        self.clock: Clock = self.database_clock  # settable, as the protocol asks
        self._routes: dict[str, tuple[Table, tuple[str, ...]]] = {}
        self._retry_at = 0.0
        with self._translated("opening the store"), self._conn.cursor() as cur:
            version = _schema_version(cur)
        if version != LATEST:
            self._conn.close()
            if version == 0:
                raise ProjectNotFoundError(
                    f"{self._shown} holds no mlops store: run `mlops -C {self._shown} init`"
                )
            if version < LATEST:
                raise StateError(
                    f"{self._shown} is at store schema {version}; this mlops needs {LATEST}: "
                    f"run `mlops -C {self._shown} db upgrade`"
                )
            raise StateError(
                f"{self._shown} is at store schema {version}, newer than this mlops ({LATEST}): "
                "upgrade mlops"
            )
        self._measure_clock()
        _OPEN.add(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r})"

    @classmethod
    def init(cls, url: str, force: bool = False, old_logs: str | None = None) -> PostgresStore:
        """Create the schema and the default settings; with `force`, reset the registry.

        The records of the earlier project would be inherited by names reused, so a reset
        refuses while streams hold records unless `old_logs="delete"` (they are truncated in
        the same transaction); to keep them, copy the project first (`mlops store copy`)."""
        upgrade(url)
        store = cls(url)
        conn = store._conn
        with store._translated("initialising"), conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "INSERT INTO settings (id, doc) VALUES (1, %s) ON CONFLICT (id) DO NOTHING "
                "RETURNING id",
                [Json(DEFAULT_SETTINGS, _dumps)],
            )
            if cur.fetchone() is None:
                if not force:
                    store.close()
                    raise ConflictError(
                        f"{store._shown} already holds a registry; use --force to reset it"
                    )
                cur.execute("SELECT 1 FROM settings WHERE id = 1 FOR UPDATE")
                cur.execute("SELECT EXISTS (SELECT 1 FROM stream_counts WHERE records > 0) "
                            "OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM checks)")
                held = cur.fetchone()
                if held and held[0] and old_logs != "delete":
                    store.close()
                    raise ConflictError(
                        f"{store._shown} holds records of an earlier project: a new registry "
                        "would inherit them; pass --delete-logs (after `mlops store copy` to "
                        "keep a copy; --archive-logs is for directories)"
                    )
                if held and held[0]:
                    cur.execute(
                        "TRUNCATE requests, metrics, drift_samples, checks, events, batches, "
                        "claims, stream_counts"
                    )
                cur.execute("DELETE FROM ab_tests")
                cur.execute("DELETE FROM model_types")
                cur.execute(
                    "UPDATE settings SET doc = %s, updated_at = now() WHERE id = 1",
                    [Json(DEFAULT_SETTINGS, _dumps)],
                )
        return store

    # -- plumbing ----------------------------------------------------------------------------

    def _translated(self, doing: str) -> Any:
        return _translated(self.location, doing)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The connection, opened again after it broke (a restarted server) or a fork."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._conn.broken or self._conn.closed:
            self._conn = connect(self.location)
        return self._conn

    def _forget_parent(self) -> None:
        """In a forked child the buffer, flusher and lock are the parent's; the connection is
        too, and is opened again on first use (closing it would end the parent's session)."""
        self._lock = threading.RLock()
        self._buffers, self._buffered, self._flusher = {}, 0, None
        self._stop = threading.Event()

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._conn = connect(self.location)

    def database_clock(self) -> datetime:
        """The database's time (see the module docstring); the default `clock`."""
        now: datetime | None = getattr(self._local, "now", None)
        if now is not None:
            return now
        if time.monotonic() - self._offset_at > CLOCK_REFRESH_S:
            self._measure_clock()
        return datetime.now(timezone.utc) + self._offset

    def _measure_clock(self) -> None:
        """The offset of the server's clock to ours; while the server is away, the last one
        is kept (records buffered meanwhile are stamped with it)."""
        self._offset_at = time.monotonic()
        try:
            with self._lock, self._translated("reading the clock"):
                before = time.time()
                row = self.conn.execute("SELECT now()").fetchone()
                after = time.time()
        except ServiceError:
            self._offset_at -= CLOCK_REFRESH_S - FLUSH_SECONDS  # try again in a second
            return
        assert row is not None
        self._offset = row[0] - datetime.fromtimestamp((before + after) / 2, timezone.utc)

    # -- registry ----------------------------------------------------------------------------

    def read(self) -> RegistryState:
        with self._lock, self._translated("reading the registry"):
            row = self.conn.execute(_READ_SQL).fetchone()
        assert row is not None
        state = RegistryState.from_doc(validate_state(_registry_doc(row), self._shown))
        self._lock_timeout_s = state.settings.lock_timeout_s
        return state

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock, self._translated("changing the registry"):
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    [f"{max(int(self._lock_timeout_s * 1000), 1)}ms"],
                )
                cur.execute("SELECT now() FROM settings WHERE id = 1 FOR UPDATE")
                locked = cur.fetchone()
                if locked is None:
                    raise StateError(f"{self._shown} holds no registry: run `mlops init` first")
                row = cur.execute(_READ_SQL).fetchone()
                assert row is not None
                doc = validate_state(_registry_doc(row), self._shown)
                before = copy.deepcopy(doc)
                actor = self._actor or current_actor()
                txn = Transaction(RegistryState.from_doc(doc), actor, self.clock)
                self._local.now = locked[0]
                try:
                    yield txn
                finally:
                    self._local.now = None
                after = validate_state(txn.state.to_doc(), self._shown)
                _archive_finished(cur, before, after)
                _write_diff(cur, before, after)
                if txn.events:
                    _copy(cur, EVENT_TABLE, [to_row(EVENT_TABLE, e, locked[0]) for e in txn.events])
                    cur.execute(_COUNT_SQL, [EVENTS, len(txn.events), len(txn.events)])
            self._lock_timeout_s = txn.state.settings.lock_timeout_s

    # -- the archive of finalized A/B tests --------------------------------------------------

    def archived_test(self, name: str) -> ABTest | None:
        with self._lock, self._translated("reading the test archive"):
            row = self.conn.execute(f"{_ARCHIVED_SQL} AND name = %s", [name]).fetchone()
        return None if row is None else self._archived(row)

    def archived_tests(self) -> list[ABTest]:
        with self._lock, self._translated("reading the test archive"):
            rows = self.conn.execute(f"{_ARCHIVED_SQL} ORDER BY ord").fetchall()
        return [self._archived(row) for row in rows]

    def _archived(self, row: Sequence[Any]) -> ABTest:
        name, *values = row
        try:
            doc = AB_TEST(_typed(_TEST_COLS, values), f"ab_tests.{name}")
        except ValueError as exc:
            raise StateError(f"{self._shown}: {exc}") from None
        return ABTest(name=name, **doc)

    # -- appends -----------------------------------------------------------------------------

    def append(self, stream: str, record: dict[str, Any]) -> None:
        found = self._routes.get(stream)
        if found is None:
            found = self._routes[stream] = route(stream)
        table, keys = found
        row = keys + to_row(table, record, self.clock() if "ts" not in record else _NO_TS)
        if table not in BUFFERED:
            with self._lock, self._translated(f"appending to {stream}"):
                conn = self.conn
                with conn.transaction(), conn.cursor() as cur:
                    _copy(cur, table, [row])
                    cur.execute(_COUNT_SQL, [stream, 1, 1])
            return
        with self._lock:
            buffer = self._buffers.get(stream)
            if buffer is None:
                buffer = self._buffers[stream] = []
            if not self._buffered:
                self._oldest = time.monotonic()
            buffer.append(row)
            self._buffered += 1
            if self._buffered >= FLUSH_RECORDS and time.monotonic() >= self._retry_at:
                try:
                    self._flush_locked()
                except MlopsError:
                    # The server is away: keep the records and retry in a second; refuse
                    # (and drop this record) only when the buffer is full.
                    self._retry_at = time.monotonic() + FLUSH_SECONDS
                    if self._buffered >= MAX_BUFFERED:
                        buffer.pop()
                        self._buffered -= 1
                        raise
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="mlops-pg-flush", daemon=True
                )
                self._flusher.start()

    def flush(self, stream: str | None = None) -> None:
        """Write buffered records (of one stream, or all) now."""
        with self._lock:
            self._flush_locked(stream)

    def _flush_locked(self, only: str | None = None) -> None:
        if not self._buffered:
            return
        with self._translated("connecting"):
            conn = self.conn
        if conn.info.transaction_status != TransactionStatus.IDLE:
            return  # inside a registry transaction: a rollback must not take these rows along
        for stream in [only] if only is not None else list(self._buffers):
            rows = self._buffers.get(stream)
            if not rows:
                continue
            table, _keys = route(stream)
            with self._translated(f"writing buffered records of {stream}"):
                conn = self.conn
                with conn.transaction(), conn.cursor() as cur:
                    _copy(cur, table, rows)
                    cur.execute(_COUNT_SQL, [stream, len(rows), len(rows)])
            del self._buffers[stream]
            self._buffered -= len(rows)
        if not self._buffered:
            self._oldest = 0.0

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS / 4):
            with self._lock:
                if self._buffered and time.monotonic() - self._oldest >= FLUSH_SECONDS:
                    # On failure the rows stay buffered; the next flush retries and reports.
                    with contextlib.suppress(MlopsError):
                        self._flush_locked()

    def append_batch(
        self,
        stream: str,
        data: Source,
        validate: Validator,
        batch_id: str | None,
        progress: Progress | None = None,
        cap: int | None = None,
    ) -> BatchResult:
        table, keys = route(stream)
        reader, batch_id = as_stream(data, batch_id)
        with self._lock, self._translated(f"recording a batch into {stream}"):
            self._flush_locked(stream)
            conn = self.conn
            try:
                with conn.transaction(), conn.cursor() as cur:
                    if batch_id:
                        cur.execute(
                            "INSERT INTO batches (stream, batch_id, records) VALUES (%s, %s, 0) "
                            "ON CONFLICT DO NOTHING RETURNING now()",
                            [stream, batch_id],
                        )
                        inserted = cur.fetchone()
                        if inserted is None:
                            cur.execute(
                                "SELECT records FROM batches "
                                "WHERE stream = %s AND batch_id = %s",
                                [stream, batch_id],
                            )
                            found = cur.fetchone()
                            raise _AlreadyRecorded(int(found[0]) if found else 0)
                        now = inserted[0]
                    else:
                        row = cur.execute("SELECT now()").fetchone()
                        assert row is not None
                        now = row[0]
                    held = self._lock_count(cur, stream) if cap is not None else 0
                    count = _copy_validated(cur, table, keys, reader, validate, now, progress)
                    if cap is not None and held + count > cap:
                        raise CapError(held, count, cap)
                    if batch_id:
                        cur.execute(
                            "UPDATE batches SET records = %s WHERE stream = %s AND batch_id = %s",
                            [count, stream, batch_id],
                        )
                    cur.execute(_COUNT_SQL, [stream, count, count])
            except _AlreadyRecorded as done:
                return BatchResult(batch_id or "", 0, done.records)
        return BatchResult(batch_id or "", count, 0)

    @staticmethod
    def _lock_count(cur: psycopg.Cursor[Any], stream: str) -> int:
        cur.execute(
            "INSERT INTO stream_counts (stream, records, appended) VALUES (%s, 0, 0) "
            "ON CONFLICT DO NOTHING",
            [stream],
        )
        cur.execute("SELECT records FROM stream_counts WHERE stream = %s FOR UPDATE", [stream])
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def replace(
        self, stream: str, data: Source, validate: Validator, cap: int | None = None
    ) -> int:
        table, keys = route(stream)
        reader, _ = as_stream(data, None)
        with self._lock, self._translated(f"replacing {stream}"):
            self._flush_locked(stream)
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                self._lock_count(cur, stream)
                cur.execute(f"DELETE FROM {table.name} WHERE {table.where()}", list(keys))
                now = cur.execute("SELECT now()").fetchone()
                assert now is not None
                count = _copy_validated(cur, table, keys, reader, validate, now[0], None)
                if cap is not None and count > cap:
                    raise CapError(0, count, cap)  # rolls the DELETE back
                cur.execute(
                    "UPDATE stream_counts SET records = %s, appended = appended + %s "
                    "WHERE stream = %s",
                    [count, count, stream],
                )
        return count

    # -- reads -------------------------------------------------------------------------------

    def _counts(self, stream: str) -> tuple[int, int]:
        with self._lock, self._translated(f"counting {stream}"):
            self._flush_locked(stream)
            row = self.conn.execute(
                "SELECT records, appended FROM stream_counts WHERE stream = %s", [stream]
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def count(self, stream: str) -> int:
        route(stream)
        return self._counts(stream)[0]

    def position(self, stream: str) -> int:
        """Records ever appended to the stream (replacing counts as appending)."""
        route(stream)
        return self._counts(stream)[1]

    def summary(
        self,
        stream: str,
        key_field: str | None,
        keys: tuple[str, ...] | None = None,
        skip_invalid: bool = False,
        per_user: bool = False,
    ) -> Summary:
        """Moments per key by one GROUP BY (records were validated on the way in, so none is
        skipped); with `per_user`, per-user totals by a GROUP BY key, user_id."""
        table, stream_keys = route(stream)
        if table not in (REQUESTS, METRICS):
            raise ValueError(f"{stream} holds no requests")
        if key_field not in (None, "variant", "user_id"):
            raise ValueError(f"cannot summarise by {key_field!r}")
        group = key_field or "'all'"
        sql = (
            f"SELECT {group}, count(*), sum(error::int), sum(confidence), "
            "sum(confidence * confidence), sum(inference_time_ms), "
            f"sum(inference_time_ms * inference_time_ms) FROM {table.name} "
            f"WHERE {table.where()}"
        )
        params: list[Any] = list(stream_keys)
        if keys is not None and key_field is not None:
            sql += f" AND {key_field} = ANY(%s)"
            params.append(list(keys))
        sql += " GROUP BY 1"
        with self._lock, self._translated(f"summarising {stream}"):
            self._flush_locked(stream)
            rows = self.conn.execute(sql, params).fetchall()
        summary = Summary()
        for key, n, errors, c, c2, t, t2 in rows:
            if key is None:
                continue  # requests without a user_id have no per-user key
            summary.arms[str(key)] = Moments(
                n=int(n),
                errors=int(errors),
                confidence_sum=float(c),
                confidence_sum_squares=float(c2),
                time_sum=float(t),
                time_sum_squares=float(t2),
            )
        if per_user and key_field is not None:
            summary.users = self._user_totals(table, stream, stream_keys, key_field, keys)
        return summary

    def _user_totals(
        self,
        table: Table,
        stream: str,
        stream_keys: tuple[str, ...],
        key_field: str,
        keys: tuple[str, ...] | None,
    ) -> UserTotals:
        sql = (
            f"SELECT {key_field}, user_id, count(*), sum(error::int), sum(confidence), "
            f"sum(inference_time_ms) FROM {table.name} WHERE {table.where()}"
        )
        params: list[Any] = list(stream_keys)
        if keys is not None:
            sql += f" AND {key_field} = ANY(%s)"
            params.append(list(keys))
        sql += " GROUP BY 1, 2"
        with self._lock, self._translated(f"summarising {stream} per user"):
            rows = self.conn.execute(sql, params).fetchall()
        totals = UserTotals()
        for variant, user, n, errors, c, t in rows:
            totals.add_user(str(variant), user, int(n), int(errors), float(c), float(t))
        return totals

    def scan(self, stream: str, skip_invalid: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Every record, oldest first, a page at a time (keyset pages by id: a record that
        commits during the scan may be missed; scans are for copies and charts)."""
        table, keys = route(stream)
        sql = (
            f"SELECT id, {', '.join(table.values)} FROM {table.name} "
            f"WHERE {table.where()} AND id > %s ORDER BY id LIMIT {SCAN_PAGE}"
        )
        last = 0
        while True:
            with self._lock, self._translated(f"reading {stream}"):
                self._flush_locked(stream)
                rows = self.conn.execute(sql, [*keys, last]).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [from_row(table, row[1:]) for row in rows]

    def streams(self) -> list[str]:
        """Every stream holding records."""
        with self._lock, self._translated("listing streams"):
            self._flush_locked()
            found = [
                str(row[0])
                for row in self.conn.execute(
                    "SELECT stream FROM stream_counts WHERE records > 0 ORDER BY stream"
                ).fetchall()
            ]
            checks = self.conn.execute(
                "SELECT DISTINCT model_type, version FROM checks ORDER BY 1, 2"
            ).fetchall()
            events = self.conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()
        found += [f"drift/{t}/{v}/checks" for t, v in checks]
        if events and events[0]:
            found.append(EVENTS)
        return sorted(set(found))

    def samples(
        self,
        stream: str,
        last: int | None = None,
        first: int | None = None,
        skip_invalid: bool = False,
    ) -> Samples:
        """The last (or first) samples by the (stream, id) index, read from the end."""
        import numpy as np

        table, keys = route(stream)
        if table is not SAMPLES:
            raise ValueError(f"{stream} holds no samples")
        sql = f"SELECT prediction, confidence FROM drift_samples WHERE {table.where()}"
        params: list[Any] = list(keys)
        if last is not None:
            # The primary key (model_type, version, kind, id) read backwards from the end.
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT %s) AS w"
            params.append(last)
        elif first is not None:
            sql += " ORDER BY id LIMIT %s"
            params.append(first)
        else:
            sql += " ORDER BY id"
        with self._lock, self._translated(f"reading {stream}"):
            self._flush_locked(stream)
            with self.conn.cursor(binary=True) as cur:
                rows = cur.execute(sql, params).fetchall()
        values = np.array(rows, dtype=np.float64).reshape(-1, 2)
        if last is not None:
            values = values[::-1]
        return Samples(
            prediction=np.ascontiguousarray(values[:, 0]),
            confidence=np.ascontiguousarray(values[:, 1]),
        )

    def history(
        self,
        stream: str,
        since: datetime | None = None,
        limit: int | None = None,
        skip_invalid: bool = False,  # rows were validated on the way in
    ) -> list[dict[str, Any]]:
        table, keys = route(stream)
        sql = f"SELECT {', '.join(table.values)} FROM {table.name} WHERE {table.where()}"
        params: list[Any] = list(keys)
        if since is not None:
            sql += " AND ts >= %s"
            params.append(since)
        if limit is not None:
            sql += " ORDER BY id DESC LIMIT %s"
            params.append(limit)
        else:
            sql += " ORDER BY id"
        with self._lock, self._translated(f"reading {stream}"):
            self._flush_locked(stream)
            rows = self.conn.execute(sql, params).fetchall()
        if limit is not None:
            rows.reverse()
        return [from_row(table, row) for row in rows]

    def claim(self, key: str, ttl_s: float) -> bool:
        with self._lock, self._translated(f"claiming {key}"):
            row = self.conn.execute(
                "INSERT INTO claims (key, claimed_at) VALUES (%s, now()) "
                "ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at "
                "WHERE claims.claimed_at <= now() - make_interval(secs => %s) RETURNING key",
                [key, float(ttl_s)],
            ).fetchone()
        return row is not None

    def close(self) -> None:
        """Write what is buffered, stop the flusher and close the connection."""
        self._stop.set()
        try:
            with self._lock:
                if self._buffered:
                    self._flush_locked()
        finally:
            if self._flusher is not None:
                self._flusher.join(timeout=5)
            if self._pid == os.getpid():  # never the connection of the parent process
                self._conn.close()
            _OPEN.discard(self)


class _AlreadyRecorded(Exception):
    """Leaves a batch transaction (rolled back) whose id had committed before."""

    def __init__(self, records: int) -> None:
        super().__init__(records)
        self.records = records


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(value: str) -> str:
    return value.translate(_ESCAPES)


def text_lines(table: Table, prefix: str, records: list[dict[str, Any]], now: str) -> str:
    """Validated records as COPY text lines of a sample table; numbers by repr and ts strings
    as they are (PostgreSQL parses them), which keeps this loop cheap enough to overlap the
    server's work."""
    out: list[str] = []
    add = out.append
    iso = _ISO.fullmatch
    for r in records:
        ts = r.get("ts")
        if ts is None:
            ts = now
        elif not iso(ts):
            ts = parse_ts(ts).isoformat()
        if table is REQUESTS:
            user = r.get("user_id")
            if type(user) is int:
                uid = f"{user}\tt"
            elif user is None:
                uid = "\\N\tf"
            else:
                uid = f"{_escape(str(user))}\tf"
            add(
                f"{prefix}{r['variant']}\t{uid}\t{r['inference_time_ms']!r}\t"
                f"{r['confidence']!r}\t{'t' if r.get('error') else 'f'}\t{ts}\n"
            )
        elif table is METRICS:
            add(
                f"{prefix}{r['inference_time_ms']!r}\t{r['confidence']!r}\t"
                f"{'t' if r.get('error') else 'f'}\t{ts}\n"
            )
        else:
            add(f"{prefix}{r['prediction']!r}\t{r['confidence']!r}\t{ts}\n")
    return "".join(out)


class _BoundedWriter(QueuedLibpqWriter):
    """A queued COPY writer whose queue holds a few MB: psycopg's holds 1,024 buffers (up to
    128 MB), which fills when the batch is read faster than the server stores it, so a
    batch's memory grew with its size."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._queue = type(self._queue)(maxsize=32)  # of <= 128 KB each


def _copy_validated(
    cur: psycopg.Cursor[Any],
    table: Table,
    keys: tuple[str, ...],
    reader: BinaryIO,
    validate: Validator,
    now: datetime,
    progress: Progress | None,
) -> int:
    """Validate a JSONL batch in bounded chunks while one COPY writes it; any bad line raises
    BatchError (listing the first ten) after the whole batch was read, so the caller's
    transaction rolls back and nothing is recorded. Only the first bad lines are kept."""
    loads = orjson.loads
    bad: list[tuple[int, str]] = []
    errors = 0
    count = 0
    number = 0
    text = table in BUFFERED  # sample tables: COPY text lines built here (see text_line)
    options = "" if text else " (FORMAT BINARY)"
    sql = f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN{options}"
    prefix = "".join(f"{_escape(k)}\t" for k in keys)
    stamp_text = now.isoformat()
    # A queued writer sends from its own thread, so the server stores one chunk while this
    # thread validates the next.
    writer = _BoundedWriter(cur) if text else None
    with cur.copy(sql, writer=writer) as copy_:
        if not text:
            copy_.set_types(list(table.types))
        while True:
            lines = reader.readlines(_CHUNK_BYTES)
            if not lines:
                break
            base = number
            number += len(lines)
            kept = len(bad)
            records = _validated_chunk(lines, base, validate, loads, bad)
            errors += len(bad) - kept
            del bad[SHOWN:]
            if not errors:
                if text:
                    copy_.write(text_lines(table, prefix, records, stamp_text).encode())
                else:
                    for record in records:
                        copy_.write_row(keys + to_row(table, record, now))
            count += len(records)
            if progress is not None:
                progress(number)
        if errors:
            shown = "; ".join(f"line {n}: {msg}" for n, msg in bad)
            more = f" (and {errors - SHOWN} more)" if errors > SHOWN else ""
            raise BatchError(f"{errors} bad line(s), nothing recorded: {shown}{more}")
        if not count:
            raise ValidationError("the batch holds no records")
    return count


def _validated_chunk(
    lines: list[bytes],
    base: int,
    validate: Validator,
    loads: Callable[[bytes], Any],
    bad: list[tuple[int, str]],
) -> list[dict[str, Any]]:
    """The records of a chunk of lines, blank lines dropped; bad lines go to `bad`."""
    try:  # the common case: every line valid, checked without per-line bookkeeping
        return [validate(loads(raw), "") for raw in lines]
    except (orjson.JSONDecodeError, ValidationError):
        pass
    records = []
    for number, raw in enumerate(lines, base + 1):
        try:
            records.append(validate(loads(raw), ""))
        except orjson.JSONDecodeError:
            if raw.strip():
                bad.append((number, "not valid JSON"))
        except ValidationError as exc:
            bad.append((number, str(exc)))
    return records


if TYPE_CHECKING:

    def _is_a_store(store: PostgresStore) -> Store:
        return store  # mypy checks PostgresStore against the Store protocol
