"""The Store: what the registry, A/B and drift managers need from storage, and nothing more.

A store keeps the typed registry state (changed in transactions under the store's lock) and
named append-only streams of records:

    ab/<test>                              requests of an A/B test
    metrics/<model_type>/<version>         observations behind update_metrics
    drift/<model_type>/<version>/reference | production | checks
    events                                 the audit log

and an archive of finalized A/B tests: a transaction that leaves a test finalized (promoted,
rolled back, aborted) moves it out of the registry state into the archive in the same commit,
so registry reads and writes cost the same however many tests have ended. Archived tests stay
readable (`archived_test`, `archived_tests`) and their names stay taken.

Every operation is atomic. The directory store (files.py) keeps today's files byte for byte;
the PostgreSQL store (postgres.py) keeps tables. Both pass the contract suite in
tests/contract/, which pins what `Store` promises below; where one store still falls short,
the test is marked xfail(strict) naming the defect.

What every operation may raise, beyond what its docstring names (MlopsErrors, so a command
prints one `error:` line):
- `ServiceError` (PostgreSQL): the server could not be reached, refused the role, or failed.
  Nothing of the operation was committed, unless the connection broke during the commit
  itself: then the outcome is unknown, and a batch retried with its id still counts once.
- `StateError` (directory): a file of the project could not be read or written (a planted
  link or FIFO, a full disk), naming the file; nothing of the operation is left behind.
- `LockTimeoutError`: a lock the operation needs was not free within `lock_timeout_s`.
And `ValueError` for a stream name not of the forms above: a programming error (the
`*_stream` builders below check names and versions with `ValidationError`).

Concurrency. A store object may be shared by the threads of one process; every process opens
its own. Guarantees hold across threads and processes on one host for both stores, and across
hosts for PostgreSQL only (a project directory on a network filesystem is not supported).
A record's `ts` is the one its caller gave; the managers stamp records with the store's
`clock` (injectable, for tests), batches excepted (see `append_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from ..naming import validate_name, validate_version
from ..state import ABTest, RegistryState
from ..timeutil import Clock, stamp

if TYPE_CHECKING:
    import numpy as np

    from ..decision import UserTotals
    from ..moments import Moments
    from ..tail import TailSums

EVENTS = "events"
DRIFT_KINDS = ("reference", "production", "checks")

Validator = Callable[[Any, str], Any]
Progress = Callable[[int], None]


F = TypeVar("F", bound=Callable[..., str])
T = TypeVar("T")


def _remembered(name: F) -> F:
    """Remember a stream name built from valid names (per request, the same few are built
    again and again); anything else goes to the validation each time."""
    known: dict[tuple[Any, ...], str] = {}

    def build(*parts: Any) -> str:
        found = known.get(parts) if all(type(p) is str for p in parts) else None
        if found is None:
            found = name(*parts)
            if len(known) < 10_000 and all(type(p) is str for p in parts):
                known[parts] = found
        return found

    build.__doc__ = name.__doc__
    return build  # type: ignore[return-value]


@_remembered
def ab_stream(test: str) -> str:
    return f"ab/{validate_name(test, 'A/B test name')}"


@_remembered
def metrics_stream(model_type: str, version: str) -> str:
    return f"metrics/{validate_name(model_type, 'model type')}/{validate_version(version)}"


@_remembered
def drift_stream(model_type: str, version: str, kind: str) -> str:
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift stream {kind!r}")
    return f"drift/{validate_name(model_type, 'model type')}/{validate_version(version)}/{kind}"


def current_actor() -> str:
    """Who makes a change: MLOPS_ACTOR, else the OS user."""
    import getpass
    import os

    name = os.environ.get("MLOPS_ACTOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class Transaction:
    """The registry state being changed under the store's lock, and the audit events to add."""

    state: RegistryState
    actor: str
    clock: Clock
    events: list[dict[str, Any]] = field(default_factory=list)
    # Webhook signing secrets to keep (None: remove), written with the change where the
    # service role cannot read them (see webhooks.py).
    secrets: dict[str, str | None] = field(default_factory=dict)

    def event(self, kind: str, reason: str | None = None, **fields: Any) -> None:
        """Add an audit event; a reason or actor over the text bound (or holding a NUL) is
        refused here, before the change is written."""
        from ..limits import check_text

        if reason is not None:
            check_text("the reason", reason)
        check_text("the actor (MLOPS_ACTOR)", self.actor)
        record = {"ts": stamp(self.clock()), "event": kind, **fields}
        self.events.append({**record, "actor": self.actor, "reason": reason})


# Audit events that are not registry events sent out (an endpoint's own bookkeeping).
NOT_SENT = ("webhook_added", "webhook_removed")


def outbox_entries(
    events: list[dict[str, Any]], n: int, seq: dict[str, int]
) -> list[dict[str, Any]]:
    """The outbox entries of a change's audit events, numbered after `n` (outbox-wide) and
    after `seq` (per model type; "" for events of none), which it advances: call it under the
    registry lock, so numbers follow the order changes commit in. Each entry carries a new id
    (receivers deduplicate by it) and the audit event itself as `data`."""
    import uuid

    entries = []
    for event in events:
        if event.get("event") in NOT_SENT:
            continue
        model_type = event.get("model_type")
        key = model_type if isinstance(model_type, str) else ""
        seq[key] = seq.get(key, 0) + 1
        n += 1
        entries.append(
            {
                "n": n,
                "id": uuid.uuid4().hex,
                "model_type": model_type if key else None,
                "seq": seq[key],
                "event": event.get("event"),
                "ts": event.get("ts"),
                "data": event,
            }
        )
    return entries


@dataclass
class DeliveryState:
    """Where delivery of the outbox stands (webhooks.py reads and changes `doc`, a JSON
    document) and the outcomes of delivery attempts to add to the deliveries log, held
    under the store's delivery lock (`Store.delivery`)."""

    doc: dict[str, Any]
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Summary:
    """Sufficient statistics of a stream per key (`all`, or the A/B variant)."""

    arms: dict[str, Moments] = field(default_factory=dict)
    torn_bytes: int = 0  # an incomplete last record (a write cut short), not counted
    skipped: list[int] = field(default_factory=list)  # malformed records skipped, by line
    users: UserTotals | None = None  # per-user totals of each arm, when asked for

    def arm(self, key: str) -> Moments:
        from ..moments import Moments

        return self.arms.get(key) or Moments()


@dataclass
class Samples:
    """Predictions and confidences read from a sample stream."""

    prediction: np.ndarray
    confidence: np.ndarray
    skipped: int = 0
    torn_bytes: int = 0
    sorted_prediction: np.ndarray | None = None  # the predictions in order, when read so

    def __len__(self) -> int:
        return len(self.prediction)


class Rows(list[dict[str, Any]]):
    """Records `history` read, and how many malformed lines it skipped to read them (with
    `skip_invalid`; a database holds none, so its plain lists count 0)."""

    skipped: int = 0


def skipped_of(rows: list[dict[str, Any]]) -> int:
    """Malformed lines skipped to read `rows` (0 for a store that cannot hold any)."""
    return rows.skipped if isinstance(rows, Rows) else 0


@dataclass
class Page:
    """Records of a stream newest first, at most a page of them, and where the next (older)
    page starts: pass `next` as `before` (None: no older record matches). A position is
    opaque (a byte offset in a log, a row id in a database) and only this store's."""

    records: list[dict[str, Any]]
    next: int | None
    skipped: int = 0  # malformed lines left out to read this page (`skip_invalid`)


@dataclass
class BatchResult:
    """What a batch append did: records it appended and records an earlier try had appended."""

    batch_id: str
    recorded: int
    already_recorded: int


class Store(Protocol):
    """Storage of one project (a directory, or a database). See the module docstring for the
    errors every operation may raise and the scope of its concurrency guarantees."""

    location: str  # what the user named: a directory path or a URL (for messages and hooks)
    clock: Clock
    # Called after a commit that wrote outbox entries, with no lock held (Project sets it).
    on_outbox: Callable[[], None] | None

    def read(self) -> RegistryState:
        """The current registry state, validated (treat it as read-only: it may be shared
        with later calls).

        Raises ProjectNotFoundError when the project is gone (directory: registry.yaml
        removed), StateError when the state is missing, corrupt or of an unknown schema
        version (naming the file or database and the key).
        Concurrency: a committed snapshot, never a transaction half-written; a change
        committed by any thread, process or host is seen by the next call."""

    def snapshot(self) -> RegistryState:
        """The registry state as this process last saw it, for per-request calls: never read
        or parsed per call, refreshed when the registry changes (store/snapshot.py): at once
        after a commit in this process, within the store's stated bound after one elsewhere.
        Treat as read-only; a write that needs the current state uses `transaction`."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Read, change and commit the registry state (and its events) atomically under the
        store's lock; an exception inside leaves everything as it was and propagates. Tests
        the change left finalized move to the archive in the same commit.

        Raises LockTimeoutError when the lock is not taken within `lock_timeout_s` (nothing
        changed), StateError when the changed state fails validation (nothing written).
        Concurrency: transactions are serialised across threads, processes and hosts, so no
        update is lost; the state inside is read under the lock, never stale. Not re-entrant:
        open no transaction (nor call a manager's change) inside another. The events and the
        state change exist together or not at all, also after a crash at any instant."""

    def archived_test(self, name: str) -> ABTest | None:
        """A finalized test from the archive (None when no archived test has that name).

        Raises ValidationError for a name that is not a valid test name, StateError for an
        archive entry that does not parse. Concurrency: sees every committed finalize."""

    def archived_tests(self) -> list[ABTest]:
        """Every archived test, in the order they were archived (one read of the archive).

        Raises StateError for an archive entry that does not parse."""

    def append(self, stream: str, record: dict[str, Any]) -> None:
        """Append one validated record (with its `ts`); safe from any thread and process.

        Directory: written (one locked line) before it returns; OSError on a full disk.
        PostgreSQL: request, metric and drift-sample records are acknowledged into the
        process's buffer and written by a background thread, so the call never waits on the
        network; each process (a forked child too) has its own buffer, written once each.
        While the server is away records are kept up to a bound; beyond it BufferFullError
        (a ServiceError), the record not kept. Checks and events are written at once
        (ServiceError when the server cannot be reached). Acknowledged records are written
        at `flush()`, `close()`, interpreter exit, a multiprocessing worker's end, SIGTERM and
        SIGINT, or spooled to a private file when the server is away then; only kill -9 or
        power loss loses them (docs/postgresql.md)."""

    def append_batch(
        self,
        stream: str,
        data: bytes | BinaryIO,
        validate: Validator,
        batch_id: str | None,
        progress: Progress | None = None,
        cap: int | None = None,
    ) -> BatchResult:
        """Append a JSONL batch whole or not at all, once per batch id, streaming it a chunk
        at a time (memory does not grow with the batch). Bytes without an id default to
        their content hash; a stream without an id is never taken for a retry. With `cap`,
        refuse (CapError, nothing appended) when the stream would hold more. Records without
        a `ts` get one time: when the batch is recorded (the real clock on a directory, the
        database's on PostgreSQL), not the store's `clock`.

        Raises BatchError (a ValidationError) listing the first ten bad lines and their count,
        ValidationError for a batch of no records or one that changed while it was recorded,
        CapError; in every case nothing is appended. An error reading `data` propagates
        (the directory store says it as a StateError naming the log) and appends nothing.
        Concurrency: the same batch id sent at once from several processes or hosts is
        recorded by exactly one (the others return it as `already_recorded`). A batch cut
        short by an error (the sender gone, SIGTERM) leaves nothing. One cut short by a
        crash (kill -9, power loss) leaves nothing on PostgreSQL (never committed); on a
        directory the lines written so far stay in the log until the retry with the same
        id completes the batch, once (a stream without an id has no retry). Durable
        (fsynced, or committed) on return."""

    def replace(
        self, stream: str, data: bytes | BinaryIO, validate: Validator, cap: int | None = None
    ) -> int:
        """Replace a stream's records with a validated JSONL batch (streamed); return the
        count. With `cap`, refuse (CapError, nothing changed) a batch of more records.

        Raises as append_batch does, with nothing changed. Concurrency: readers see the old
        records or the new, never a mix; an append racing it lands before it (and is
        replaced) or after it (and is kept), whole."""

    def count(self, stream: str) -> int:
        """Records in a stream (a torn last record not counted); 0 for a stream never
        written."""

    def position(self, stream: str) -> int:
        """A marker that changes whenever records are appended to or replace the stream's;
        compare two for equality only (it is no count and no order)."""

    def summary(
        self,
        stream: str,
        key_field: str | None,
        keys: tuple[str, ...] | None = None,
        skip_invalid: bool = False,
        per_user: bool = False,
        until: str | None = None,
    ) -> Summary:
        """Moments of a request stream per key, incrementally (cost grows with what is new);
        with `per_user`, also the per-user totals of each key (by `user_id`); with `until`
        (a `timeutil.stamp`), only records whose `ts` is not later: a finalized test's final
        figures leave out records that raced its finalize (kept in the stream). Zero moments
        for a stream never written.

        Raises StateError naming the line for a malformed record, unless `skip_invalid`: then
        it is skipped and its line listed in `skipped`. A torn last record (a write cut
        short) is never counted: its size is in `torn_bytes`. PostgreSQL holds only validated,
        whole rows, so there `skipped` is empty and `torn_bytes` 0. Concurrency: counts every
        record appended before the call (by this store object, or flushed by others)."""

    def tail_sums(
        self,
        stream: str,
        threshold_ms: float,
        keys: tuple[str, ...],
        until: str | None = None,
    ) -> dict[str, TailSums]:
        """Per key (A/B variant) of a request stream: requests, requests whose
        `inference_time_ms` is strictly above `threshold_ms`, and over named users the ratio
        sums of M_u = slow, D_u = requests (tail.py); `until` as in `summary`. Sums only, so
        any engine computes them; a record that is not a request is left out (its summary
        names or counts it)."""

    def samples(
        self, stream: str, last: int | None = None, first: int | None = None,
        skip_invalid: bool = False,
    ) -> Samples:
        """The last `last` (or first `first`) samples of a sample stream as arrays, at a cost
        that does not grow with the stream's history; empty arrays for a stream never
        written. Raises and skips as `summary`."""

    def reference_and_window(
        self, reference: str, first: int, production: str, last: int, skip_invalid: bool = False
    ) -> tuple[Samples, Samples]:
        """`samples` of both: the first `first` of `reference` and the last `last` of
        `production`, raising as those calls would in that order (a store may read the two
        at once)."""

    def feature_chunks(
        self,
        stream: str,
        last: int | None = None,
        first: int | None = None,
        skip_invalid: bool = False,
    ) -> Iterator[list[dict[str, Any] | None]]:
        """The input features of the last `last` (or first `first`) samples of a sample
        stream, in order, in chunks of bounded size: one per sample (None for a sample
        without), of the samples `samples` reads (with `skip_invalid`, a line that is no JSON
        object is skipped here too). Raises as `samples`."""

    def fold_features(
        self,
        stream: str,
        last: int,
        skip_invalid: bool,
        fold: Callable[[Iterable[list[dict[str, Any] | None]]], T],
        join: Callable[[T, T], T],
    ) -> T:
        """`fold(feature_chunks(stream, last=last))`: a store may fold two parts of the window
        apart (the later one in a forked child) and `join` the results in order, which must
        give what one fold of the whole gives. Raises as `feature_chunks`."""

    def load_profile(self, stream: str) -> dict[str, Any] | None:
        """The feature profile last saved for a sample stream (`save_profile`), or None. A
        derived cache: one that cannot be read is None, and is computed again."""

    def save_profile(self, stream: str, doc: dict[str, Any]) -> None:
        """Keep the feature profile of a sample stream (a JSON-ready dict) beside it,
        replacing the one before, atomically. Not part of a copy: it is derived."""

    def history(
        self,
        stream: str,
        since: datetime | None = None,
        limit: int | None = None,
        skip_invalid: bool = False,
    ) -> list[dict[str, Any]]:
        """Records of a stream (checks, events), oldest first; since a time (by their `ts`),
        and of those the last `limit` (at least 1). A malformed record is an error naming it
        (StateError), or skipped with `skip_invalid`. Records come back as appended; a store
        may spell a `ts` differently for the same instant."""

    def page(
        self,
        stream: str,
        limit: int,
        before: int | None = None,
        match: dict[str, tuple[str, ...]] | None = None,
        skip_invalid: bool = False,
    ) -> Page:
        """The newest `limit` (at least 1) records of a stream before position `before`
        (None: the end), of those whose fields each hold one of the values `match` gives
        them (the events stream: `event` and `model_type`), read from the end: cost and
        memory grow with the page and the records passed over to fill it, never with the
        stream's history before it.

        Raises ValidationError for a `before` that is no position of this stream (a cursor
        from elsewhere, or tampered with); a malformed record raises and skips as `history`.
        Concurrency: records appended after the first page never appear in later pages (a
        page reads what is older than its `before`)."""

    def scan(self, stream: str, skip_invalid: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Every record of a stream, oldest first, a bounded chunk at a time. Raises and skips
        as `history`. Concurrency: records appended during a scan may or may not be in it."""

    def streams(self) -> list[str]:
        """The names of every stream that holds records (for copying a project), in no
        promised order."""

    def batches(self, stream: str) -> dict[str, int]:
        """The ids of the batches recorded into a stream, with their records (0 where the
        store does not know the count), for a copy to carry. Committed batches only; one
        committing meanwhile may be missed. Raises StateError (an unreadable journal) or
        ServiceError (the database unreachable)."""

    def carry_batches(self, stream: str, batches: dict[str, int]) -> None:
        """Note batches whose records a copy wrote into the stream: from then on a batch with
        one of these ids appends nothing and reports their records as already recorded (as
        after the batch itself). For a new stream (a copy's target). Raises as `batches`;
        nothing is noted when it raises."""

    def copying(self) -> AbstractContextManager[None]:
        """One unit for copying a project into this store. PostgreSQL: one transaction
        (each write inside a savepoint), so an exception inside leaves nothing; the directory
        store holds nothing (a copy writes a temporary directory, renamed at the end)."""

    def claim(self, key: str, ttl_s: float) -> bool:
        """True for exactly one caller per key per `ttl_s` seconds, across threads, processes
        and (PostgreSQL) hosts; a claim granted starts a new time to live, and a `ttl_s` of 0
        has always passed. The time is the store's `clock` on a directory and the database's
        clock on PostgreSQL (so hosts agree)."""

    def outbox_read(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Committed outbox entries numbered above `after`, in order, at most `limit`, at a
        cost that does not grow with the entries before them (base.outbox_entries gives
        their form). Raises StateError for an entry that does not parse."""

    def delivery(self) -> AbstractContextManager[DeliveryState]:
        """Read and change where delivery stands, under a lock other deliverers (threads,
        processes, hosts on PostgreSQL) wait for (bounded by `lock_timeout_s`): the document
        is written back and the log records appended when the block ends without an error.
        Hold it briefly (no HTTP inside): webhooks.py claims work under it, then delivers."""

    def delivery_log(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` outcomes of delivery attempts, oldest first."""

    def secret(self, webhook_id: str) -> str | None:
        """The signing secret of an endpoint (None: none kept). Directory: a file of mode
        0600 beside registry.yaml; PostgreSQL: a table the service role cannot read."""

    def flush(self, stream: str | None = None) -> None:
        """Write what this process buffered (of one stream, or all) before returning; a
        no-op for a directory. PostgreSQL: ServiceError when the server cannot be reached
        (the records stay buffered); a record the server refuses is set aside with a warning
        on stderr, the others written. Safe from any thread; called inside `transaction()` it
        writes nothing (a rollback must not take the records along; the flusher writes them)."""

    def close(self) -> None:
        """Write what is buffered and release connections and descriptors; never raises
        for the buffer (PostgreSQL: records the server cannot take now are spooled and written
        by the next open of the same URL). The store is not used afterwards."""

