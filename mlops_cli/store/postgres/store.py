"""The PostgresStore class (see the package docstring for the semantics)."""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.types.json import Json

from ...batch import Source, as_stream
from ...decision import UserTotals
from ...errors import (
    ConflictError,
    LockTimeoutError,
    MlopsError,
    ProjectNotFoundError,
    ServiceError,
    StateError,
    ValidationError,
)
from ...limits import LOCK_TIMEOUT_S
from ...moments import Moments
from ...naming import validate_name
from ...schema import (
    AB_TEST,
    DEFAULT_SETTINGS,
    MODEL_HEAD,
    VERSION,
    WEBHOOK,
    check_references,
    validate_changes,
    validate_state,
    version_str,
)
from ...state import ABTest, Models, ModelType, RegistryState, Settings, VersionRecord
from ...stats import RatioSums
from ...tail import EMPTY, TailSums
from ...timeutil import Clock, parse_ts
from .. import snapshot as snapshots
from ..base import (
    EVENTS,
    BatchResult,
    DeliveryState,
    Page,
    Progress,
    Samples,
    Store,
    Summary,
    Transaction,
    Validator,
    current_actor,
    outbox_entries,
)
from . import buffer, notify
from .connection import LATEST, connect, redact, schema_version, translated, upgrade
from .copy import COUNT_SQL, copy_rows, replace_rows, write_batch
from .registry import (
    ARCHIVED_SQL,
    DELTA_SQL,
    INDEX_SQL,
    TEST_COLS,
    TYPE_SQL,
    archive_finished,
    index_doc,
    typed,
    version_record,
    write_diff,
)
from .rows import (
    BUFFERED,
    EVENT_TABLE,
    METRICS,
    NO_TS,
    REQUESTS,
    SAMPLES,
    SCAN_PAGE,
    Table,
    dumps,
    from_row,
    route,
    to_row,
)
from .spool import FLUSH_PREFIX

T = TypeVar("T")
CLOCK_REFRESH_S = 60.0


class PostgresStore:
    """A project in a PostgreSQL database (see the package docstring for the semantics).

    The buffer's bounds and the spool directory default to buffer.py's constants and
    `MLOPS_SPOOL_DIR` (spool.py); a test passes its own."""

    def __init__(
        self,
        url: str,
        actor: str | None = None,
        *,
        flush_records: int | None = None,
        flush_seconds: float | None = None,
        max_records: int | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self.location = url
        self._shown = redact(url)
        self._actor = actor
        self._lock = threading.RLock()  # the connection
        # name -> the version rows of the model type read last, with their checked records
        self._rows: dict[str, dict[bytes, tuple[str, dict[str, Any]]]] = {}
        self._types: dict[str, HeldType] = {}  # each type as read last
        self._conn = connect(url)
        self._local = threading.local()
        self._buffer_options: dict[str, Any] = {
            "flush_records": flush_records or buffer.FLUSH_RECORDS,
            "flush_seconds": flush_seconds or buffer.FLUSH_SECONDS,
            "max_records": max_records or buffer.MAX_BUFFERED,
            "spool_dir": spool_dir,
        }
        self._buffer = self._new_buffer()
        self._offset = timedelta(0)
        self._offset_at = -CLOCK_REFRESH_S
        self._pid = os.getpid()
        self.clock: Clock = self.database_clock  # settable, as the protocol asks
        self._routes: dict[str, tuple[Table, tuple[str, ...]]] = {}
        self._snapshot_key = ("postgres", url)  # one snapshot per database and process
        self.on_outbox: Callable[[], None] | None = None  # (see Store.on_outbox)
        with self._translated("opening the store"), self._conn.cursor() as cur:
            version = schema_version(cur)
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
        buffer.OWNERS.add(self)
        self._replay()

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
                [Json(DEFAULT_SETTINGS, dumps)],
            )
            if cur.fetchone() is None:
                if not force:
                    store.close()
                    raise ConflictError(
                        f"{store._shown} already holds a registry; pass force=True to reset it",
                        cli={"force=True": "--force"},
                    )
                cur.execute("SELECT 1 FROM settings WHERE id = 1 FOR UPDATE")
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM stream_counts WHERE records > 0) "
                    "OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM checks)"
                )
                held = cur.fetchone()
                if held and held[0] and old_logs != "delete":
                    store.close()
                    raise ConflictError(
                        f"{store._shown} holds records of an earlier project: a new registry "
                        "would inherit them; pass old_logs='delete' (after `mlops store copy` "
                        "to keep a copy; old_logs='archive' is for directories)",
                        cli={
                            "old_logs='delete'": "--delete-logs",
                            "old_logs='archive'": "--archive-logs",
                        },
                    )
                if held and held[0]:
                    cur.execute(
                        "TRUNCATE requests, metrics, drift_samples, checks, events, batches, "
                        "claims, stream_counts"
                    )
                cur.execute("DELETE FROM ab_tests")
                cur.execute("DELETE FROM model_types")
                # endpoints, outbox and delivery state belong to the registry reset
                cur.execute("DELETE FROM webhooks")
                cur.execute("DELETE FROM mlops_private.webhook_secrets")
                cur.execute("TRUNCATE outbox, webhook_deliveries")
                cur.execute("UPDATE webhook_delivery SET doc = '{}' WHERE id = 1")
                cur.execute(
                    "UPDATE settings SET doc = %s, updated_at = now() WHERE id = 1",
                    [Json(DEFAULT_SETTINGS, dumps)],
                )
        return store

    # -- plumbing ----------------------------------------------------------------------------

    def _translated(self, doing: str) -> Any:
        return translated(self.location, doing)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The connection, opened again after it broke (a restarted server) or a fork."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._conn.broken or self._conn.closed:
            self._conn = connect(self.location)
        return self._conn

    def _new_buffer(self) -> buffer.Buffer:
        return buffer.Buffer(
            self.location,
            self._lock,
            lambda: self.conn,
            self._tick,
            # Inside a registry transaction the flusher cannot write: appends do not wait.
            lambda: getattr(self._local, "now", None) is None,
            **self._buffer_options,
        )

    def forget_parent(self) -> None:
        """In a forked child the buffer, flusher and lock are the parent's; the connection is
        too, and is opened again on first use (closing it would end the parent's session).
        The child starts with none of them, so nothing is written twice."""
        self._lock = threading.RLock()
        self._buffer = self._new_buffer()

    def _replay(self) -> None:
        """Write what processes that ended with the server away spooled for this store."""
        try:
            with self._lock, self._translated("writing spooled records"):
                self._buffer.replay(self.conn)
        except MlopsError as exc:
            buffer.warn(f"spooled records are kept for a later open: {exc}")

    @property
    def buffered(self) -> int:
        """Records this process acknowledged and has not written yet."""
        return self._buffer.held

    @property
    def rejected(self) -> int:
        """Records the server refused (set aside, see buffer.py)."""
        return self._buffer.rejected

    def wake(self) -> None:
        self._buffer.wake()

    def drain(self) -> None:
        """Write what waits, or spool it (the end of the process)."""
        self._buffer.drain()

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._conn = connect(self.location)

    def database_clock(self) -> datetime:
        """The database's time (see the module docstring); the default `clock`."""
        now: datetime | None = getattr(self._local, "now", None)
        if now is not None:
            return now
        if time.monotonic() - self._offset_at > CLOCK_REFRESH_S:
            if self._buffer.running:
                self._buffer.wake()  # the flusher measures it: no round trip here
            else:
                self._measure_clock()
        return datetime.now(timezone.utc) + self._offset

    def _tick(self) -> None:
        if time.monotonic() - self._offset_at > CLOCK_REFRESH_S:
            self._measure_clock()

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
            self._offset_at -= CLOCK_REFRESH_S - buffer.FLUSH_SECONDS  # again in a second
            return
        assert row is not None
        self._offset = row[0] - datetime.fromtimestamp((before + after) / 2, timezone.utc)

    # -- registry ----------------------------------------------------------------------------

    def read(self) -> RegistryState:
        """The registry: its index now, each model type read when first used (as of then)."""
        with self._lock, self._translated("reading the registry"):
            return self._state(self.conn.cursor())

    def _state(self, cur: psycopg.Cursor[Any]) -> RegistryState:
        """The index through `cur`, with the types of running tests (validated with them);
        every other type is read through `cur` when first used (TYPE_SQL: its rows alone)."""
        row = cur.execute(INDEX_SQL).fetchone()
        assert row is not None
        doc, names = index_doc(row)  # name -> its row's version
        settings = validate_state({**doc, "ab_tests": {}}, self._shown)["settings"]
        try:
            tests = {n: AB_TEST(t, f"ab_tests.{n}") for n, t in doc["ab_tests"].items()}
            given = {
                t["model_type"]: self._model(cur, t["model_type"], names[t["model_type"]])
                for t in tests.values()
                if t["model_type"] in names
            }
            check_references(  # (what it reads of each type: no version turned into a doc)
                {"models": {n: references_of(m) for n, m in given.items()}, "ab_tests": tests}
            )
        except ValueError as exc:
            raise StateError(f"{self._shown}: {exc}") from None

        def load(name: str) -> ModelType:
            with self._lock, self._translated("reading the registry"):
                now = cur if not cur.closed else self.conn.cursor()  # (its transaction ended)
                return self._model(now, name, names[name])

        models = Models(names=names, load=load)
        for name, model in given.items():
            models.seed(name, model)  # read, as `load` reads: a transaction's copy reads again
        try:
            webhooks = {i: WEBHOOK(d, f"webhooks.{i}") for i, d in (row[3] or {}).items()}
        except ValueError as exc:
            raise StateError(f"{self._shown}: {exc}") from None
        return RegistryState(
            schema_version=doc["schema_version"],
            settings=Settings(settings),
            models=models,
            ab_tests={name: ABTest(name=name, **t) for name, t in tests.items()},
            webhooks=webhooks,
            outbox_n=int(row[4] or 0),
        )

    def _model(self, cur: psycopg.Cursor[Any], name: str, xmin: str) -> ModelType:
        """One model type's rows, validated; the one read last when its row's version is
        still `xmin` (no query: a change of the type updates its row). Else, over the one read
        last, only the versions changed since its revision (DELTA_SQL: a promote changes two
        of thousands), or all of them when that cannot be told (a type read first, a version
        removed or moved). A version row equal to one read before is taken as checked then."""
        held = self._types.get(name)
        if held is not None and held.xmin == xmin:
            return held.model
        if held is not None:
            row = cur.execute(DELTA_SQL, {"name": name, "rev": held.rev}).fetchone()
            assert row is not None
            merged = self._parse_type(name, row, held)
            if merged is not None:
                return merged
        row = cur.execute(TYPE_SQL, {"name": name}).fetchone()
        assert row is not None
        model = self._parse_type(name, row, None)
        assert model is not None
        return model

    def _parse_type(
        self, name: str, row: Sequence[Any], over: HeldType | None
    ) -> ModelType | None:
        """A model type from TYPE_SQL's row, or from DELTA_SQL's over the type held (None
        when the changed rows do not add up to the count of all: read them all)."""
        import orjson

        (read_xmin, champion, rev), entries, history = row[0] or (None, None, 0), row[1], row[2]
        aliases = row[3] or {}
        base = over.model.versions if over is not None else {}
        if over is not None and (rev <= over.rev or read_xmin is None):
            return None  # changed without a revision: read it all
        known = self._rows.get(name, {})
        seen = dict(known) if over is not None else {}
        versions: dict[str, VersionRecord] = dict(base)
        places: dict[str, tuple[int, bytes]] = dict(over.places) if over is not None else {}
        try:
            head = MODEL_HEAD(
                {"champion": champion, "champion_history": history, "aliases": aliases},
                f"models.{name}",
            )
            for entry in entries:
                key, ord_ = orjson.dumps(entry[:-1]), entry[-1]
                found = known.get(key)
                if found is None:
                    version = version_str(entry[0], f"models.{name}.versions")
                    rec = VERSION(version_record(entry[1:-1]),
                                  f"models.{name}.versions.{version}")
                    found = (version, rec)
                before = places.get(found[0])
                if before is not None:
                    if before[0] != ord_:
                        return None  # removed and registered again: its place moved
                    seen.pop(before[1], None)  # the row it replaces
                seen[key] = found
                versions[found[0]] = VersionRecord(**found[1])
                places[found[0]] = (ord_, key)
            if over is not None and len(versions) != int(row[4]):
                return None  # a version was removed
            for version in (head["champion"], *head["champion_history"]):
                if version is not None and version not in versions:
                    raise ValueError(f"models.{name}: champion {version!r} is not a version")
        except ValueError as exc:
            raise StateError(f"{self._shown}: {exc}") from None
        self._rows[name] = seen
        model = ModelType(
            name, head["champion"], list(head["champion_history"]), versions, head["aliases"]
        )
        if read_xmin is not None:  # (treated as read-only: a change copies)
            self._types[name] = HeldType(read_xmin, int(rev), model, places)
        return model

    def snapshot(self) -> RegistryState:
        """The registry as of this process's snapshot (notify.py: NOTIFY, else a poll)."""
        return self._snapshot().state()

    def _snapshot(self) -> snapshots.Snapshot:
        return snapshots.shared(self._snapshot_key, self._new_snapshot)

    def _new_snapshot(
        self,
        check_every_s: float = notify.POLL_S,
        clock: Callable[[], float] = time.monotonic,
        listen: bool = True,
    ) -> snapshots.Snapshot:
        return notify.watched_snapshot(
            self.location, self._load_snapshot, self._generation, check_every_s, clock, listen
        )

    def _generation(self) -> str | None:
        with self._lock, self._translated("reading the registry's generation"):
            return notify.generation(self.conn)

    def _load_snapshot(self) -> tuple[str | None, RegistryState]:
        seen = self._generation()  # first: a change meanwhile is seen at the next check
        return seen, self.read()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        sent = 0
        with self._lock, self._translated("changing the registry"):
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                wait_s = self._project_lock_timeout(cur)
                cur.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    [f"{max(int(wait_s * 1000), 1)}ms"],  # 0 would mean "wait forever"
                )
                try:
                    cur.execute("SELECT now() FROM settings WHERE id = 1 FOR UPDATE")
                except psycopg.errors.LockNotAvailable:
                    raise LockTimeoutError(
                        f"could not lock the registry in {self._shown} within {wait_s:g} s: "
                        "another mlops process holds it; retry, or raise the setting "
                        "lock_timeout_s"
                    ) from None
                locked = cur.fetchone()
                if locked is None:
                    raise StateError(f"{self._shown} holds no registry: run `mlops init` first")
                held = self._state(cur)  # types read through this transaction's cursor
                actor = self._actor or current_actor()
                txn = Transaction(copy.deepcopy(held), actor, self.clock)
                self._local.now = locked[0]
                try:
                    yield txn
                finally:
                    self._local.now = None
                before, after = _changed_docs(held, txn.state)
                after = validate_changes(after, before, self._shown)
                archive_finished(cur, before, after)
                write_diff(cur, before, after)
                if txn.events:
                    copy_rows(
                        cur, EVENT_TABLE, [to_row(EVENT_TABLE, e, locked[0]) for e in txn.events]
                    )
                    cur.execute(COUNT_SQL, [EVENTS, len(txn.events), len(txn.events)])
                _write_webhooks(cur, held.webhooks, txn.state.webhooks, txn.secrets)
                if txn.state.webhooks and txn.events:
                    sent = _write_outbox(cur, txn.events)
                if before != after or txn.events:  # snapshots elsewhere: at this commit
                    cur.execute(notify.BUMP_SQL)
                    cur.execute(notify.NOTIFY_SQL)
        snapshots.invalidate(self._snapshot_key)  # this process: at once
        if sent and self.on_outbox is not None:  # after the commit: delivery holds no lock
            self.on_outbox()

    def _project_lock_timeout(self, cur: psycopg.Cursor[Any]) -> float:
        """The project's lock_timeout_s as committed now (a plain read: it waits on no lock),
        so a store's first transaction waits what the project says, not the default. A value
        that is not a number in range is left to the registry's validation, which follows."""
        row = cur.execute("SELECT doc -> 'lock_timeout_s' FROM settings WHERE id = 1").fetchone()
        value: Any = row[0] if row is not None else None
        if type(value) in (int, float) and LOCK_TIMEOUT_S.low <= value <= LOCK_TIMEOUT_S.high:
            return float(value)
        return float(DEFAULT_SETTINGS["lock_timeout_s"])

    # -- the archive of finalized A/B tests --------------------------------------------------

    def archived_test(self, name: str) -> ABTest | None:
        validate_name(name, "A/B test name")
        with self._lock, self._translated("reading the test archive"):
            row = self.conn.execute(f"{ARCHIVED_SQL} AND name = %s", [name]).fetchone()
        return None if row is None else self._archived(row)

    def archived_tests(self) -> list[ABTest]:
        with self._lock, self._translated("reading the test archive"):
            rows = self.conn.execute(f"{ARCHIVED_SQL} ORDER BY ord").fetchall()
        return [self._archived(row) for row in rows]

    def _archived(self, row: Sequence[Any]) -> ABTest:
        name, *values = row
        try:
            doc = AB_TEST(typed(TEST_COLS, values), f"ab_tests.{name}")
        except ValueError as exc:
            raise StateError(f"{self._shown}: {exc}") from None
        return ABTest(name=name, **doc)

    # -- appends -----------------------------------------------------------------------------

    def append(self, stream: str, record: dict[str, Any]) -> None:
        found = self._routes.get(stream)
        if found is None:
            found = self._routes[stream] = route(stream)
        table, keys = found
        row = keys + to_row(table, record, self.clock() if "ts" not in record else NO_TS)
        if table not in BUFFERED:
            with self._lock, self._translated(f"appending to {stream}"):
                conn = self.conn
                with conn.transaction(), conn.cursor() as cur:
                    copy_rows(cur, table, [row])
                    cur.execute(COUNT_SQL, [stream, 1, 1])
            return
        self._buffer.add(stream, row)

    def flush(self, stream: str | None = None) -> None:
        """Write buffered records (of one stream, or all) now; ServiceError when the server
        cannot be reached (they stay buffered)."""
        self._buffer.write(stream)

    def _flush_locked(self, only: str | None = None) -> None:
        self._buffer.write(only)

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
            return write_batch(
                self.conn, stream, table, keys, reader, validate, batch_id, progress, cap
            )

    def replace(
        self, stream: str, data: Source, validate: Validator, cap: int | None = None
    ) -> int:
        table, keys = route(stream)
        reader, _ = as_stream(data, None)
        with self._lock, self._translated(f"replacing {stream}"):
            self._flush_locked(stream)
            return replace_rows(self.conn, stream, table, keys, reader, validate, cap)

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
        until: str | None = None,
    ) -> Summary:
        """Moments per key by one GROUP BY (records were validated on the way in, so none is
        skipped); with `per_user`, per-user totals by a GROUP BY key, user_id; with `until`,
        the records whose ts is not later."""
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
        if until is not None:
            sql += " AND ts <= %s"
            params.append(parse_ts(until))
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
            summary.users = self._user_totals(
                table, stream, stream_keys, key_field, keys, until
            )
        return summary

    def _user_totals(
        self,
        table: Table,
        stream: str,
        stream_keys: tuple[str, ...],
        key_field: str,
        keys: tuple[str, ...] | None,
        until: str | None = None,
    ) -> UserTotals:
        sql = (
            f"SELECT {key_field}, user_id, count(*), sum(error::int), sum(confidence), "
            f"sum(inference_time_ms) FROM {table.name} WHERE {table.where()}"
        )
        params: list[Any] = list(stream_keys)
        if keys is not None:
            sql += f" AND {key_field} = ANY(%s)"
            params.append(list(keys))
        if until is not None:
            sql += " AND ts <= %s"
            params.append(parse_ts(until))
        sql += " GROUP BY 1, 2"
        with self._lock, self._translated(f"summarising {stream} per user"):
            rows = self.conn.execute(sql, params).fetchall()
        totals = UserTotals()
        for variant, user, n, errors, c, t in rows:
            totals.add_user(str(variant), user, int(n), int(errors), float(c), float(t))
        return totals

    def tail_sums(
        self,
        stream: str,
        threshold_ms: float,
        keys: tuple[str, ...],
        until: str | None = None,
    ) -> dict[str, TailSums]:
        """Slow counts per user by one GROUP BY, summed per arm (named users and the
        anonymous requests apart) by the query around it."""
        table, stream_keys = route(stream)
        if table is not REQUESTS:
            raise ValueError(f"{stream} holds no A/B requests")
        inner = (
            "SELECT variant, user_id, count(*)::float8 AS d, "
            "(count(*) FILTER (WHERE inference_time_ms > %s))::float8 AS m "
            f"FROM {table.name} WHERE {table.where()} AND variant = ANY(%s)"
        )
        params: list[Any] = [threshold_ms, *stream_keys, list(keys)]
        if until is not None:
            inner += " AND ts <= %s"
            params.append(parse_ts(until))
        inner += " GROUP BY 1, 2"
        sql = (
            "SELECT variant, user_id IS NULL, count(*), sum(m), sum(m * m), sum(d), "
            f"sum(d * d), sum(m * d) FROM ({inner}) per_user GROUP BY 1, 2"
        )
        with self._lock, self._translated(f"counting slow requests of {stream}"):
            self._flush_locked(stream)
            rows = self.conn.execute(sql, params).fetchall()
        out = dict.fromkeys(keys, EMPTY)
        for variant, anonymous, users, m, m2, d, d2, md in rows:
            old = out[str(variant)]
            if anonymous:
                out[str(variant)] = TailSums(
                    old.requests + int(d), old.slow + int(m), int(d), old.users
                )
            else:
                sums = RatioSums(int(users), float(m), float(m2), float(d), float(d2), float(md))
                out[str(variant)] = TailSums(
                    old.requests + int(d), old.slow + int(m), old.anonymous, sums
                )
        return out

    def scan(self, stream: str, skip_invalid: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Every record, oldest first, a page at a time (keyset pages by id: a record that
        commits during the scan may be missed; scans are for copies and charts)."""
        table, keys = route(stream)
        sql = (
            f"SELECT id, {table.selected()} FROM {table.name} "
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

    def batches(self, stream: str) -> dict[str, int]:
        route(stream)
        with self._lock, self._translated(f"reading the batch ids of {stream}"):
            rows = self.conn.execute(
                "SELECT batch_id, records FROM batches WHERE stream = %s "
                "AND batch_id NOT LIKE %s ORDER BY recorded_at, batch_id",
                [stream, f"{FLUSH_PREFIX}%"],  # not the buffer's own chunks: no batch of anyone's
            ).fetchall()
        return {str(batch): int(records) for batch, records in rows}

    def carry_batches(self, stream: str, batches: dict[str, int]) -> None:
        route(stream)
        if not batches:
            return
        with self._lock, self._translated(f"noting the batch ids of {stream}"):
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO batches (stream, batch_id, records) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(stream, batch, records) for batch, records in batches.items()],
                )

    @contextmanager
    def copying(self) -> Iterator[None]:
        """One transaction around a copy into this store: the registry, the records and the
        batch ids commit together or not at all (each write inside is a savepoint)."""
        with self._lock, self._translated("copying a project in"):
            self._flush_locked()
            with self.conn.transaction():
                yield

    def reference_and_window(
        self, reference: str, first: int, production: str, last: int, skip_invalid: bool = False
    ) -> tuple[Samples, Samples]:
        return self.samples(reference, first=first), self.samples(production, last=last)

    def samples(
        self,
        stream: str,
        last: int | None = None,
        first: int | None = None,
        skip_invalid: bool = False,
    ) -> Samples:
        """The last (or first) samples by the (stream, id) index, read from the end."""
        import numpy as np

        sql, params = _window_sql(stream, "prediction, confidence", last, first)
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

    def feature_chunks(
        self,
        stream: str,
        last: int | None = None,
        first: int | None = None,
        skip_invalid: bool = False,  # rows were validated on the way in
    ) -> Iterator[list[dict[str, Any] | None]]:
        """The features of the last (or first) samples, by the same index as `samples`,
        fetched a page at a time."""
        sql, params = _window_sql(stream, "id, features", last, first)
        sql = f"SELECT features FROM ({sql}) AS w ORDER BY id"
        with self._lock, self._translated(f"reading {stream}"):
            self._flush_locked(stream)
            with self.conn.cursor(binary=True) as cur:
                cur.execute(sql, params)
                pages = []
                while page := cur.fetchmany(SCAN_PAGE):
                    pages.append([r[0] for r in page])
        yield from pages

    def fold_features(
        self,
        stream: str,
        last: int,
        skip_invalid: bool,
        fold: Callable[[Iterable[list[dict[str, Any] | None]]], T],
        join: Callable[[T, T], T],
    ) -> T:
        """One fold in this process (a child could not share the connection)."""
        return fold(self.feature_chunks(stream, last=last, skip_invalid=skip_invalid))

    def load_profile(self, stream: str) -> dict[str, Any] | None:
        table, keys = route(stream)
        if table is not SAMPLES:
            raise ValueError(f"{stream} holds no samples")
        with self._lock, self._translated(f"reading the profile of {stream}"):
            row = self.conn.execute(
                "SELECT doc FROM feature_profiles WHERE model_type = %s AND version = %s "
                "AND kind = %s",
                list(keys),
            ).fetchone()
        return row[0] if row and type(row[0]) is dict else None

    def save_profile(self, stream: str, doc: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        table, keys = route(stream)
        if table is not SAMPLES:
            raise ValueError(f"{stream} holds no samples")
        with self._lock, self._translated(f"saving the profile of {stream}"):
            self.conn.execute(
                "INSERT INTO feature_profiles (model_type, version, kind, doc) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (model_type, version, kind) "
                "DO UPDATE SET doc = excluded.doc",
                [*keys, Jsonb(doc)],
            )

    def history(
        self,
        stream: str,
        since: datetime | None = None,
        limit: int | None = None,
        skip_invalid: bool = False,  # rows were validated on the way in
    ) -> list[dict[str, Any]]:
        table, keys = route(stream)
        sql = f"SELECT {table.selected()} FROM {table.name} WHERE {table.where()}"
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

    def page(
        self,
        stream: str,
        limit: int,
        before: int | None = None,
        match: dict[str, tuple[str, ...]] | None = None,
        skip_invalid: bool = False,  # rows were validated on the way in
    ) -> Page:
        """Keyset pages by id, newest first; `match` on the columns the fields are kept in
        (an event's `event` is the column `kind`)."""
        table, keys = route(stream)
        sql = f"SELECT id, {table.selected()} FROM {table.name} WHERE {table.where()}"
        params: list[Any] = list(keys)
        if before is not None:
            if before < 1:
                raise ValidationError(f"{before} is no position in {stream}")
            sql += " AND id < %s"
            params.append(before)
        renamed = {"event": "kind"} if table is EVENT_TABLE else {}
        for key, value in (match or {}).items():
            column = renamed.get(key, key)
            if column not in table.values or column in ("doc", "ts"):
                raise ValueError(f"{stream} records cannot be matched on {key!r}")
            sql += f" AND {column} = ANY(%s)"
            params.append(list(value))
        sql += " ORDER BY id DESC LIMIT %s"
        params.append(max(1, limit) + 1)
        with self._lock, self._translated(f"reading {stream}"):
            self._flush_locked(stream)
            rows = self.conn.execute(sql, params).fetchall()
        more = len(rows) > max(1, limit)
        rows = rows[: max(1, limit)]
        return Page(
            [from_row(table, row[1:]) for row in rows], int(rows[-1][0]) if more else None
        )

    def claim(self, key: str, ttl_s: float) -> bool:
        with self._lock, self._translated(f"claiming {key}"):
            row = self.conn.execute(
                "INSERT INTO claims (key, claimed_at) VALUES (%s, now()) "
                "ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at "
                "WHERE claims.claimed_at <= now() - make_interval(secs => %s) RETURNING key",
                [key, float(ttl_s)],
            ).fetchone()
        return row is not None

    # -- events out ---------------------------------------------------------------------------

    def outbox_read(self, after: int, limit: int) -> list[dict[str, Any]]:
        with self._lock, self._translated("reading the outbox"):
            rows = self.conn.execute(
                "SELECT n, id, model_type, seq, event, ts, data FROM outbox WHERE n > %s "
                "ORDER BY n LIMIT %s",
                [after, limit],
            ).fetchall()
        keys = ("n", "id", "model_type", "seq", "event", "ts", "data")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    @contextmanager
    def delivery(self) -> Iterator[DeliveryState]:
        """One transaction holding the row lock of `webhook_delivery` (FOR UPDATE, waiting at
        most lock_timeout_s): the document read, then written with the log rows."""
        with self._lock, self._translated("recording deliveries"):
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                wait_s = self._project_lock_timeout(cur)
                cur.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    [f"{max(int(wait_s * 1000), 1)}ms"],
                )
                try:
                    row = cur.execute(
                        "SELECT doc FROM webhook_delivery WHERE id = 1 FOR UPDATE"
                    ).fetchone()
                except psycopg.errors.LockNotAvailable:
                    raise LockTimeoutError(
                        f"could not lock the delivery state in {self._shown} within "
                        f"{wait_s:g} s; retry, or raise the setting lock_timeout_s"
                    ) from None
                doc = row[0] if row is not None else {}
                state = DeliveryState(copy.deepcopy(doc))
                yield state
                if state.log:
                    cur.executemany(
                        "INSERT INTO webhook_deliveries (doc) VALUES (%s)",
                        [[Json(r, dumps)] for r in state.log],
                    )
                if state.doc != doc:
                    cur.execute(
                        "UPDATE webhook_delivery SET doc = %s WHERE id = 1",
                        [Json(state.doc, dumps)],
                    )

    def delivery_log(self, limit: int) -> list[dict[str, Any]]:
        with self._lock, self._translated("reading the deliveries"):
            rows = self.conn.execute(
                "SELECT doc FROM (SELECT id, doc FROM webhook_deliveries ORDER BY id DESC "
                "LIMIT %s) newest ORDER BY id",
                [limit],
            ).fetchall()
        return [row[0] for row in rows]

    def secret(self, webhook_id: str) -> str | None:
        with self._lock, self._translated("reading a webhook's secret"):
            row = self.conn.execute(
                "SELECT secret FROM mlops_private.webhook_secrets WHERE webhook = %s",
                [webhook_id],
            ).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Write what is buffered (or spool it when the server cannot be reached), stop the
        flusher and close the connection."""
        snapshots.forget(self._snapshot_key)  # its listener and connection
        try:
            with buffer.draining():
                self._buffer.stop()
                if self._buffer.held:
                    with contextlib.suppress(MlopsError):
                        self._buffer.write()
                self._buffer.drain()  # what is left: tried once more, then spooled
        finally:
            if self._pid == os.getpid():  # never the connection of the parent process
                self._conn.close()
            buffer.OWNERS.discard(self)


if TYPE_CHECKING:

    def _is_a_store(store: PostgresStore) -> Store:
        return store  # mypy checks PostgresStore against the Store protocol


def _changed_docs(
    held: RegistryState, state: RegistryState
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The registry before and after a transaction, holding only the model types it changed,
    removed or the running tests name (write_diff then touches only those)."""
    if not isinstance(state.models, Models):
        state.models = Models(state.models)
    changed = state.models.changed(held.models)
    removed = [name for name in held.models if name not in state.models]
    # The types of the tests this transaction started or changed: their references are
    # checked against them (a type it changed is in `changed`; other tests stand as read).
    tested = {
        t.model_type
        for name, t in state.ab_tests.items()
        if name not in held.ab_tests or held.ab_tests[name] != t
    }
    before_names = [n for n in held.models if n in changed or n in removed or n in tested]
    after_names = [n for n in state.models if n in changed or n in tested]
    return _doc(held, before_names), _doc(state, after_names)


def _doc(state: RegistryState, names: list[str]) -> dict[str, Any]:
    return {
        "schema_version": state.schema_version,
        "settings": copy.deepcopy(state.settings.data),
        "models": {n: state.models[n].to_doc() for n in names},
        "ab_tests": {name: t.to_doc() for name, t in state.ab_tests.items()},
        "committed": dict(state.committed),
    }


def _window_sql(
    stream: str, columns: str, last: int | None, first: int | None
) -> tuple[str, list[Any]]:
    """The query of a sample window by the (stream, id) index: the last `last` (newest first:
    the primary key read backwards from the end), the first `first`, or all in order."""
    table, keys = route(stream)
    if table is not SAMPLES:
        raise ValueError(f"{stream} holds no samples")
    sql = f"SELECT {columns} FROM drift_samples WHERE {table.where()}"
    params: list[Any] = list(keys)
    if last is not None:
        return f"{sql} ORDER BY id DESC LIMIT %s", [*params, last]
    if first is not None:
        return f"{sql} ORDER BY id LIMIT %s", [*params, first]
    return f"{sql} ORDER BY id", params


def _write_webhooks(
    cur: psycopg.Cursor[Any],
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    secrets: dict[str, str | None],
) -> None:
    """The endpoints a change added or removed, and their secrets (mlops_private)."""
    for hook_id in before.keys() - after.keys():
        cur.execute("DELETE FROM webhooks WHERE id = %s", [hook_id])
    for hook_id in after.keys() - before.keys():
        doc = after[hook_id]
        cur.execute(
            "INSERT INTO webhooks (id, url, events, model_type, created_at, after) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [hook_id, doc["url"], Json(doc["events"], dumps), doc["model_type"],
             doc["created_at"], doc["after"]],
        )
    for hook_id, secret in secrets.items():
        if secret is None:
            cur.execute("DELETE FROM mlops_private.webhook_secrets WHERE webhook = %s", [hook_id])
        else:
            cur.execute(
                "INSERT INTO mlops_private.webhook_secrets (webhook, secret) VALUES (%s, %s)",
                [hook_id, secret],
            )


def _write_outbox(cur: psycopg.Cursor[Any], events: list[dict[str, Any]]) -> int:
    """The change's outbox entries, numbered after the outbox's last (under the registry
    lock the transaction holds, so in commit order)."""
    kinds = sorted({e["model_type"] if isinstance(e.get("model_type"), str) else ""
                    for e in events})
    seq = dict(
        cur.execute(
            "SELECT coalesce(model_type, ''), max(seq) FROM outbox "
            "WHERE coalesce(model_type, '') = ANY(%s) GROUP BY 1",
            [kinds],
        ).fetchall()
    )
    row = cur.execute("SELECT coalesce(max(n), 0) FROM outbox").fetchone()
    entries = outbox_entries(events, int(row[0]) if row else 0, seq)
    if entries:
        cur.executemany(
            "INSERT INTO outbox (n, id, model_type, seq, event, ts, data) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                [e["n"], e["id"], e["model_type"], e["seq"], e["event"], e["ts"],
                 Json(e["data"], dumps)]
                for e in entries
            ],
        )
    return len(entries)


def references_of(model: ModelType) -> dict[str, Any]:
    """What `check_references` reads of a model type: its pointers and its version names."""
    return {"champion": model.champion, "champion_history": model.champion_history,
            "versions": model.versions, "aliases": model.aliases}


@dataclass
class HeldType:
    """A model type as read last: its row's xmin and revision, the type, and each version's
    place in the order of registration (`ord`) with the row it was read from."""

    xmin: str
    rev: int
    model: ModelType
    places: dict[str, tuple[int, bytes]]
