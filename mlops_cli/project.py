"""The composition root: locate and open a project, build its store, clock and managers.

A project location is a directory (the file store) or a `postgresql://` URL (the PostgreSQL
store, imported only then). `Project.open(location, clock=...)` gives `registry`, `ab`,
`drift` and `drift_detector(type, version)`, all sharing one store and one clock. A project is
a context manager: leaving it (or `close()`) writes what a PostgreSQL project buffered.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import (
    ConflictError,
    MissingExtraError,
    ProjectNotFoundError,
    StateError,
    ValidationError,
)
from .schema import parse_setting_value, validate_settings
from .state import RegistryState, Settings
from .store.base import EVENTS, Store, ab_stream, drift_stream, metrics_stream
from .store.files import REGISTRY_FILE, FileStore
from .textsafe import audit_value
from .timeutil import Clock, system_clock

if TYPE_CHECKING:
    from .ab_testing import ABTestManager
    from .drift import DriftDetector, DriftMonitor
    from .registry import ModelRegistry
    from .watch import WatchMonitor
    from .webhooks import WebhookManager

Location = str | os.PathLike[str]
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: Location) -> bool:
    return str(location).startswith(URL_SCHEMES)


# How to get psycopg: the package is not on the package index, so from the project's source.
POSTGRES_EXTRA = "pip install '.[postgres]' in a checkout of mlops (see docs/postgresql.md)"


def postgres() -> ModuleType:
    """The PostgreSQL store's module; without psycopg (installed without the `postgres`
    extra), a MissingExtraError saying how to install it."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        reason = "is not installed" if isinstance(exc, ModuleNotFoundError) else f"fails ({exc})"
        raise MissingExtraError(
            f"a postgresql:// project needs psycopg, which {reason}: install mlops with its "
            f"postgres extra: {POSTGRES_EXTRA}"
        ) from None
    from .store import postgres as module

    return module


class Project:
    """A project: its store, its clock, and the managers working on them."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root  # model paths are relative to it (the directory, or the cwd for a URL)
        # The process that makes a change delivers the events it wrote, for a bounded time.
        store.on_outbox = self._deliver_after_change

    def _deliver_after_change(self) -> None:
        self.webhooks.drain_after_change()

    def __repr__(self) -> str:
        return f"Project({self.location!r})"

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write the records this process buffered (PostgreSQL; a directory has none)."""
        self.store.flush()

    def close(self) -> None:
        """Write what is buffered (spooled when the server cannot be reached) and release the
        store's connection; the project is not used afterwards."""
        self.store.close()

    @property
    def location(self) -> str:
        """The directory or URL the project was opened at (a URL's password hidden)."""
        if isinstance(self.store, FileStore):
            return str(self.root)
        return str(postgres().redact(self.store.location))

    # -- discovery ---------------------------------------------------------------------------

    @staticmethod
    def locate(path: Location | None = None, walk_up: bool = True) -> Path | str:
        """--project-dir > MLOPS_PROJECT_DIR > the nearest directory holding registry.yaml,
        walking up from the current one (as git does), else the current directory."""
        chosen = path if path is not None else os.environ.get("MLOPS_PROJECT_DIR") or None
        if chosen is not None:
            return str(chosen) if is_url(chosen) else Path(chosen).expanduser().absolute()
        here = Path.cwd()
        if walk_up:
            for directory in (here, *here.parents):
                if (directory / REGISTRY_FILE).is_file():
                    return directory
        return here

    @classmethod
    def open(cls, path: Location | None = None, clock: Clock | None = None) -> Project:
        """Open a project (validated, and migrated to the current schema)."""
        where = cls.locate(path)
        if isinstance(where, str):
            store = postgres().PostgresStore(where)
            if clock is not None:
                store.clock = clock
            return cls(store, Path.cwd())
        return cls(FileStore.open(where, clock or system_clock), where)

    @classmethod
    def init(
        cls,
        path: Location | None = None,
        force: bool = False,
        clock: Clock | None = None,
        old_logs: str | None = None,
    ) -> Project:
        """Create a project; with `force`, reset an existing registry. Records of the earlier
        project must then be archived (`old_logs="archive"`) or deleted (`"delete"`), so no
        test or version reusing a name inherits them."""
        if old_logs not in (None, "archive", "delete"):
            raise ValueError(f"old_logs must be archive or delete, not {old_logs!r}")
        where = cls.locate(path, walk_up=False)
        if isinstance(where, str):
            store = postgres().PostgresStore.init(where, force, old_logs)
            if clock is not None:
                store.clock = clock
            return cls(store, Path.cwd())
        return cls(FileStore.create(where, force, clock or system_clock, old_logs), where)

    # -- the parts ---------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.store.clock

    # The managers are imported when first used: a command pays only for what it runs.

    @cached_property
    def registry(self) -> ModelRegistry:
        from .registry import ModelRegistry

        return ModelRegistry(self.store, self.root)

    @cached_property
    def ab(self) -> ABTestManager:
        from .ab_testing import ABTestManager

        return ABTestManager(self.store, self.registry)

    @cached_property
    def webhooks(self) -> WebhookManager:
        from .webhooks import WebhookManager

        return WebhookManager(self.store)

    @cached_property
    def watch(self) -> WatchMonitor:
        """The watch after a promotion (watch.py)."""
        from .watch import WatchMonitor

        return WatchMonitor(self.store, self.drift)

    @cached_property
    def drift(self) -> DriftMonitor:
        from .drift import DriftMonitor

        return DriftMonitor(self.store)

    def drift_detector(self, model_type: str, version: str) -> DriftDetector:
        """The drift detector of one model version (one object per version and project)."""
        return self.drift.detector(model_type, version)

    def drift_detectors(self) -> dict[tuple[str, str], DriftDetector]:
        """A detector for every registered version that has a reference set."""
        return self.drift.detectors()

    # -- state and settings ------------------------------------------------------------------

    def state(self) -> RegistryState:
        """The registry state (typed, read-only)."""
        return self.store.read()

    @property
    def settings(self) -> Settings:
        return self.store.read().settings

    def get_setting(self, key: str) -> Any:
        """A setting by dotted key (`drift.thresholds.retrain`)."""
        return self.settings.get(key)

    def set_setting(self, key: str, text: str) -> Any:
        """Set a setting from its YAML text (`0.25`, `true`, `make retrain`); validated first."""
        parts, value = parse_setting_value(key, text)
        with self.store.transaction() as txn:
            data = txn.state.settings.data
            node = data
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            txn.state.settings = Settings(validate_settings(data))
            txn.event("setting_changed", key=key, **audit_value(value))  # no secrets
        return self.get_setting(key)

    # -- the file store's paths (for tools and tests that look at the files) ------------------

    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY_FILE

    def log_path(self, stream: str) -> Path:
        if not isinstance(self.store, FileStore):
            raise TypeError("only a directory project has log files")
        return self.store.path(stream)

    def ab_log(self, test: str) -> Path:
        return self.log_path(ab_stream(test))

    def metrics_log(self, model_type: str, version: str) -> Path:
        return self.log_path(metrics_stream(model_type, version))

    def drift_log(self, model_type: str, version: str, kind: str) -> Path:
        return self.log_path(drift_stream(model_type, version, kind))


class Copied(NamedTuple):
    """What `copy_project` wrote: where, the records per stream, and the batch ids carried."""

    target: str
    records: dict[str, int]
    batches: int


def copy_project(source: Project, target: Location) -> Copied:
    """Copy a project into a new directory or an empty PostgreSQL store: the registry, every
    record of every stream in order, and the ids of the batches recorded (so a batch sent
    again after the copy is still recorded once).

    Every record is first checked against what both stores can hold (a ValidationError
    naming the stream and record; nothing written). The target is then written as one unit:
    a directory into a temporary one beside it, renamed into place at the end; a store in one
    transaction. A copy that fails leaves no directory (or the empty store it found, made
    ready by `init`), so it can simply be run again.
    """
    for stream in source.store.streams():  # the first pass: refuse before writing
        for number, record in _numbered(source, stream):
            _check_copied(stream, record, number)
    if is_url(target):
        return _copy_into_store(source, str(target))
    return _copy_into_directory(source, Path(target).expanduser().absolute())


def _copy_into_store(source: Project, url: str) -> Copied:
    try:
        target = Project.open(url)
    except ProjectNotFoundError:
        target = Project.init(url)
    try:
        if target.store.streams() or target.state().models:
            raise ConflictError(f"{target.location} is not empty; copy into a new project")
        with target.store.copying():
            records, batches = _write_copy(source, target)
        return Copied(target.location, records, batches)
    finally:
        target.store.close()


def _copy_into_directory(source: Project, path: Path) -> Copied:
    import secrets
    import shutil

    from . import jsonl

    if path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir()))):
        raise ConflictError(f"{path} is not empty; copy into a new directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f".{path.name}.copy-{secrets.token_hex(4)}"
        temp.mkdir()
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        store = FileStore.create(temp)
        try:
            records, batches = _write_copy(source, Project(store, temp))
        finally:
            for stream in store.streams():  # the process's descriptors of the temporary logs
                jsonl.WRITER.forget(store.path(stream))
            store.close()  # and of its registry.yaml
        os.rename(temp, path)  # replaces an empty directory there; the copy's commit point
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):  # the rename made durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return Copied(str(path), records, batches)


def _write_copy(source: Project, target: Project) -> tuple[dict[str, int], int]:
    """The second pass: the registry, then each stream (checked again: records appended
    since the first pass are refused the same way) and its batch ids."""
    import io

    import orjson

    state = source.state()
    with target.store.transaction() as txn:
        txn.state = copy.deepcopy(state)
        txn.state.webhooks = {}  # endpoints are not copied: their secrets stay where they are
        for test in source.store.archived_tests():  # finalized: archived again on commit
            txn.state.ab_tests.setdefault(test.name, test)
    copied: dict[str, int] = {}
    carried = 0
    for stream in source.store.streams():
        count = 0
        for records in source.store.scan(stream):
            for number, record in enumerate(records, count + 1):
                _check_copied(stream, record, number)
            if stream == EVENTS:  # events are committed with the registry: a chunk at a time
                with target.store.transaction() as txn:
                    txn.events.extend(records)
            elif stream.endswith("/checks"):
                for record in records:
                    target.store.append(stream, record)
            else:
                data = b"".join(orjson.dumps(r) + b"\n" for r in records)
                target.store.append_batch(stream, io.BytesIO(data), _as_recorded, None)
            count += len(records)
        batches = source.store.batches(stream)
        target.store.carry_batches(stream, batches)
        carried += len(batches)
        copied[stream] = count
    return copied, carried


def _numbered(source: Project, stream: str) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    for records in source.store.scan(stream):
        for record in records:
            number += 1
            yield number, record


def _check_copied(stream: str, record: Any, number: int) -> None:
    try:
        check_record(stream, record, number)
    except ValidationError as exc:
        raise ValidationError(
            f"{exc}; nothing was copied: correct or remove that record in the source, then "
            "copy again"
        ) from None


def check_record(stream: str, record: Any, number: int) -> None:
    """A record of `stream` that both stores can hold (what `copy_project` checks): the
    stream's own validation, then a `ts` (the shared check, and within year 9999 in UTC) and
    no NUL in any text, keys included (PostgreSQL refuses it). A ValidationError names the
    stream and the record's number."""
    from .records import validate_request, validate_sample

    where = f"cannot copy {stream}, record {number}: "
    kind = stream.split("/")[0]
    if kind == "ab":
        validate_request(record, where)
    elif kind == "drift" and not stream.endswith("/checks"):
        validate_sample(record, where)
    elif kind == "metrics":
        _check_metric(record, where)
    elif not isinstance(record, dict):
        raise ValidationError(f"{where}expected a JSON object")
    _check_storable(record, where)


def _check_metric(record: Any, where: str) -> None:
    from .limits import INFERENCE_TIME_MS
    from .records import check_finite

    if not isinstance(record, dict):
        raise ValidationError(f"{where}expected a JSON object")
    for key in ("inference_time_ms", "confidence"):
        if key not in record:
            raise ValidationError(f"{where}missing {key!r}")
    time_ms = record["inference_time_ms"]
    check_finite(f"{where}inference_time_ms", time_ms, 0, INFERENCE_TIME_MS.high)
    check_finite(f"{where}confidence", record["confidence"], 0, 1)
    if not isinstance(record.get("error", False), bool):
        raise ValidationError(f"{where}error must be true or false")


def _check_storable(record: dict[str, Any], where: str) -> None:
    from datetime import timezone

    from .records import check_ts
    from .timeutil import parse_ts

    if "ts" not in record:
        raise ValidationError(f"{where}it has no ts")
    check_ts(record["ts"], where)  # the shared check of a record's time
    try:
        parse_ts(record["ts"]).astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(
            f"{where}ts {record['ts']!r} is past year 9999 in UTC: no store can hold it"
        ) from None
    pending: list[Any] = [record]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise ValidationError(f"{where}{value!r} holds a NUL byte (PostgreSQL refuses it)")
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def _as_recorded(record: Any, where: str) -> Any:
    """Records being copied were checked by `check_record` on the way."""
    return record
