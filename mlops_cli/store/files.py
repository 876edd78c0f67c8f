"""The directory store: registry.yaml under a project lock, JSONL streams under logs/.

    registry.yaml                                      the registry state (schema_version 4)
    events.jsonl                                       stream `events`
    archive/ab_tests.jsonl                             finalized A/B tests, one JSON line each
    logs/ab/<test>.jsonl                               stream `ab/<test>`
    logs/metrics/<model_type>/<version>.jsonl          stream `metrics/<type>/<version>`
    logs/drift/<model_type>/<version>/<kind>.jsonl     stream `drift/<type>/<version>/<kind>`
    logs/claims.jsonl                                  once-only claims (hooks)

registry.yaml is read-modify-written under the project lock (filelock, `.mlops.lock`) and
replaced atomically; logs are appended under each log's own flock (see jsonl.py).

One change, one unit (`_commit`, under the project lock). A transaction's archive lines
(tests it finalized) and audit events are appended first, each fsynced, then registry.yaml is
replaced; the new registry.yaml records in `committed` the byte length of events.jsonl and of
archive/ab_tests.jsonl that it commits. The replace is the commit point:
- a full disk (or any error) on either append: nothing else was written, the error is
  reported and the registry is unchanged;
- an error on the registry replace: the appended lines are cut back and the error reported
  (when the rename did happen and only the directory fsync failed, the change is done and
  reported done);
- a crash at any instant before the replace: the old registry.yaml still names the old
  lengths, so readers ignore the lines past them, and the next commit cuts them before it
  appends. A crash after it: the change and its lines are all there.
So a change, its audit events and its archived tests exist together or not at all, and a test
is never in neither place nor counted twice (a test found in both, from a registry without
`committed`, is read from registry.yaml). Events are appended only through commits (an
`append` to `events` is a commit of its own) so no other writer races the cut.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .. import forked, jsonl, safefs
from ..errors import (
    SKIP_INVALID,
    ConflictError,
    LockTimeoutError,
    MlopsError,
    ProjectNotFoundError,
    StateError,
    ValidationError,
)
from ..naming import validate_name, validate_version
from ..records import validate_sample
from ..schema import (
    AB_TEST,
    DEFAULT_SETTINGS,
    SCHEMA_VERSION,
    check_references,
    digest,
    dump_index,
    dump_model,
    legacy_test,
    load_model_head,
    load_model_version,
    load_registry,
    model_lines,
    new_document,
)
from ..state import ABTest, Models, ModelType, RegistryState, Settings, VersionRecord
from ..timeutil import Clock, format_ts, parse_ts, stamp, system_clock
from . import snapshot as snapshots
from .base import (
    DRIFT_KINDS,
    EVENTS,
    BatchResult,
    DeliveryState,
    Page,
    Progress,
    Rows,
    Samples,
    Summary,
    Transaction,
    Validator,
    current_actor,
    outbox_entries,
)

if TYPE_CHECKING:
    from ..batch import Source
    from ..tail import TailSums

T = TypeVar("T")
REGISTRY_FILE = "registry.yaml"
MODELS_DIR = "models"
LOCK_FILE = ".mlops.lock"
EVENTS_FILE = "events.jsonl"
TEST_ARCHIVE = "archive/ab_tests.jsonl"
OUTBOX_FILE = "outbox/events.jsonl"  # registry events to deliver, committed with the change
OUTBOX_LANES = "outbox/lanes.json"  # where delivery to each endpoint and model type stands
OUTBOX_LOG = "outbox/deliveries.jsonl"  # one line per delivery attempt's outcome
OUTBOX_LOCK = "outbox/deliver.lock"  # held while delivery state is read and changed
SECRETS_FILE = "webhook-secrets.json"  # mode 0600, beside registry.yaml, never inside it
# A per-request call looks at registry.yaml at most this often (seconds): a change committed
# by another process reaches a service within it; one committed in the process, at once.
CHECK_EVERY_S = 0.001


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file in the same directory, fsync, rename, fsync dir.

    A crash at any instant leaves either the old or the new file, never a mix. The file keeps
    its mode, and a link at `path` is refused, not followed or replaced (safefs.atomic_replace;
    the directory is trusted: inside a project the store passes its root to check them too).
    """
    safefs.atomic_replace(path.parent, path.name, data)


class _Watched:
    """The registry.yaml a snapshot was read from, held open: one fstat tells whether it is
    still the project's (a commit replaces the file, so the one held loses its link) and
    unchanged (an edit in place changes its time or size), without resolving the path. At
    most `HELD` files are held per process; beyond, the oldest is checked by its path."""

    HELD = 64
    open_files: ClassVar[list[_Watched]] = []

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def hold(self, fd: int) -> tuple[int, int, int, int]:
        """Hold `fd` (the file just read) instead of the earlier one; its generation."""
        old, self.fd = self.fd, fd
        if old is not None:
            os.close(old)
        else:
            _Watched.open_files.append(self)
            if len(_Watched.open_files) > self.HELD:
                _Watched.open_files.pop(0).release()
        return _key(os.fstat(fd))

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def generation(self) -> tuple[int, int, int, int] | None:
        """None when the file held was replaced or removed (its links dropped)."""
        fd = self.fd
        try:
            st = os.fstat(fd) if fd is not None else os.stat(self.path)
        except (FileNotFoundError, OSError):
            return None
        return _key(st) if st.st_nlink else None


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_nlink)


class FileStore:
    """A project directory: registry.yaml, events.jsonl and the logs."""

    def __init__(self, root: Path, clock: Clock = system_clock) -> None:
        self.root = root
        self.location = str(root)
        self.clock = clock
        self.registry_path = root / REGISTRY_FILE
        self.lock_path = root / LOCK_FILE
        self.archive_path = root / TEST_ARCHIVE
        # One snapshot of the registry per project and process, checked by an fstat of the
        # registry.yaml it was read from (snapshot.py, _Watched): on every `read`, and at most
        # every CHECK_EVERY_S for the per-request calls (`snapshot`).
        self._snapshot_key: tuple[str, ...] = ("files", os.path.realpath(root))
        self._held: tuple[int, snapshots.Snapshot, tuple[str, ...]] | None = None
        self._counted: dict[str, tuple[int, int, int]] = {}  # stream -> (inode, offset, lines)
        self._paths: dict[str, Path] = {}
        self._logs: dict[str, jsonl.AppendLog] = {}  # per-request appends: opened once
        # Called after a commit that wrote outbox entries, outside the lock (Project sets it:
        # the process that made a change delivers its events for a bounded time).
        self.on_outbox: Callable[[], None] | None = None
        self._encode: Callable[[Any], bytes] = jsonl.dumps  # orjson.dumps once one is open
        # name -> (generation, the type, its version lines) of the model types read last: a
        # type's file of one generation never changes; the next is read against it
        self._models: dict[
            str, tuple[int, ModelType, dict[bytes, tuple[str, VersionRecord]]]
        ] = {}

    def __repr__(self) -> str:
        return f"FileStore({self.location!r})"

    # -- creating and opening ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        force: bool = False,
        clock: Clock = system_clock,
        old_logs: str | None = None,
    ) -> FileStore:
        """Create a project directory; with `force`, reset an existing registry.yaml.

        Records left from before (events.jsonl, logs/) would be inherited by tests and versions
        that reuse a name, so a reset refuses unless told `old_logs="archive"` (moved under
        archive/<time>/) or `"delete"`.
        """
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create project directory {root}: {exc.strerror}") from exc
        store = cls(root, clock)
        with store.lock():
            if store.registry_path.exists() and not force:
                raise ConflictError(
                    f"{store.registry_path} already exists; pass force=True to reset it",
                    cli={"force=True": "--force"},
                )
            store._put_away_records(old_logs)
            safefs.atomic_replace(root, REGISTRY_FILE, dump_index(new_index()))
            snapshots.invalidate(store._snapshot_key)
        return store

    def _put_away_records(self, how: str | None) -> None:
        """Archive or delete the records of an earlier project here (see create)."""
        import shutil

        held = [
            p
            for p in (
                self.root / EVENTS_FILE,
                self.root / "logs",
                self.archive_path,
                self.root / MODELS_DIR,
                self.root / "outbox",
                self.root / SECRETS_FILE,
            )
            if p.exists()
        ]
        if not held:
            return
        if how is None:
            raise ConflictError(
                f"{self.root} holds records of an earlier project (events.jsonl, logs/): a new "
                "registry would inherit them; pass old_logs='archive' to move them to archive/ "
                "or old_logs='delete' to remove them",
                cli={"old_logs='archive'": "--archive-logs", "old_logs='delete'": "--delete-logs"},
            )
        if how == "delete":
            for path in held:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            return
        when = format_ts(self.clock()).replace(":", "")
        target = self.root / "archive" / f"project-{when}"
        target.mkdir(parents=True)
        for path in held:
            os.replace(path, target / path.name)

    @classmethod
    def open(cls, root: Path, clock: Clock = system_clock) -> FileStore:
        store = cls(root, clock)
        store.read()  # validate (and migrate) on open
        return store

    def _missing(self) -> ProjectNotFoundError:
        return ProjectNotFoundError(
            f"no {REGISTRY_FILE} in {self.root}: run `mlops init` there, or point to a "
            "project with --project-dir/-C or MLOPS_PROJECT_DIR"
        )

    # -- the registry state -----------------------------------------------------------------

    @contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """The project lock, held from the read to the write of registry.yaml."""
        import filelock

        timeout = self._lock_timeout() if timeout is None else timeout
        safefs.check_path(self.root, LOCK_FILE)  # a planted link or FIFO: a clean error
        lock = filelock.FileLock(str(self.lock_path), timeout=timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeoutError(
                f"could not take the project lock {self.lock_path} within {timeout:g} s: another "
                "mlops process holds it; retry, or raise the setting lock_timeout_s"
            ) from None
        except OSError as exc:  # raced in after the check (filelock opens with O_NOFOLLOW)
            raise StateError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from None
        try:
            yield
        finally:
            lock.release()

    def _lock_timeout(self) -> float:
        try:  # per append: the snapshot as it is, no check
            return self._snapshot().current().settings.lock_timeout_s
        except (StateError, ProjectNotFoundError, OSError):
            return float(DEFAULT_SETTINGS["lock_timeout_s"])

    def read(self) -> RegistryState:
        """The validated registry state, re-read only when the file changed (treat as
        read-only): checked on every call (an fstat), so it sees every commit."""
        return self._snapshot().checked()

    def snapshot(self) -> RegistryState:
        """The registry for per-request calls, checked at most every CHECK_EVERY_S (a
        commit in this process is seen at once)."""
        held = self._held
        if held is not None and held[0] == snapshots.forks and held[2] == self._snapshot_key:
            return held[1].state()
        return self._snapshot().state()

    def _snapshot(self) -> snapshots.Snapshot:
        held = self._held
        if held is not None and held[0] == snapshots.forks and held[2] == self._snapshot_key:
            return held[1]
        found = snapshots.shared(self._snapshot_key, self._new_snapshot)
        self._held = (snapshots.forks, found, self._snapshot_key)
        return found

    def _new_snapshot(
        self,
        check_every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        listen: bool = True,
    ) -> snapshots.Snapshot:
        """A snapshot checking registry.yaml (an fstat of the file it was read from) at most
        every `check_every_s` of `clock` for per-request calls, and on every `read`
        (`listen` has no meaning here)."""
        watched = _Watched(self.registry_path)
        snapshot = snapshots.Snapshot(
            lambda: self._load(watched), watched.generation, check_every_s, clock
        )
        snapshot.on_close = watched.release  # (then checked by its path, if still in use)
        return snapshot

    def _load(self, watched: _Watched) -> tuple[Hashable, RegistryState]:
        """Read and validate registry.yaml (upgrading an older project once): (its generation,
        the state). Model types are read from their files when first used (`_load_model`)."""
        if not os.path.lexists(self.registry_path):  # no project here (or no directory)
            raise self._missing()
        try:
            fd = safefs.open_read(self.root, REGISTRY_FILE)
        except FileNotFoundError:
            raise self._missing() from None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()  # a FIFO or link planted there: a clean error, not a hang
        key = watched.hold(fd)
        doc, older = load_registry(data, str(self.registry_path))
        if older:  # upgrade the file once, under the lock, unless another process did
            state = RegistryState.from_doc(doc)
            with self.lock(state.settings.lock_timeout_s):
                if safefs.read_file(self.registry_path) == data:
                    upgraded = copy.deepcopy(state)
                    upgraded.schema_version = SCHEMA_VERSION
                    self._commit(state, upgraded, upgraded.take_finalized_tests(), [])
            return self._load(watched)
        return key, self._indexed(doc)

    def _indexed(self, index: dict[str, Any]) -> RegistryState:
        """The state an index names: its model types read from their files on first use."""
        files = {
            n: (f["generation"], f["blake2b"], f["versions"]) for n, f in index["models"].items()
        }

        def load(name: str) -> ModelType:
            return self._load_model(name, *files[name][:2])

        return RegistryState(
            schema_version=index["schema_version"],
            settings=Settings(index["settings"]),
            models=Models(names=files, load=load, sizes={n: f[2] for n, f in files.items()}),
            ab_tests={name: ABTest(name=name, **t) for name, t in index["ab_tests"].items()},
            committed=dict(index.get("committed") or {}),
            generation=index["generation"],
            model_files=files,
            webhooks=copy.deepcopy(index["webhooks"]),
            outbox_n=index["outbox"]["n"],
            outbox_seq=dict(index["outbox"]["seq"]),
        )

    def _load_model(self, name: str, generation: int, expected: str) -> ModelType:
        """A model type from its file (treat as read-only: a transaction changes a copy). A
        file two commits old may be gone (a commit keeps the one it replaces, for readers a
        commit behind): the type is then read as it is now."""
        held = self._models.get(name)
        if held is not None and held[0] == generation:
            return held[1]
        relpath = model_file(name, generation)
        try:
            data = self._read_file(relpath)
        except FileNotFoundError:
            now, older = load_registry(safefs.read_file(self.registry_path), REGISTRY_FILE)
            current = None if older else now["models"].get(name)
            if current is None or current["generation"] == generation:
                raise StateError(
                    f"{self.root / relpath}: missing (model type {name} of registry.yaml); "
                    "restore it from backup"
                ) from None
            generation, expected = current["generation"], current["blake2b"]
            relpath = model_file(name, generation)
            data = self._read_file(relpath)
        parsed = self._parse_model(name, data, relpath, expected)
        self._models[name] = (generation, *parsed)
        return parsed[0]

    def _parse_model(
        self, name: str, data: bytes, relpath: str, expected: str | None = None
    ) -> tuple[ModelType, dict[bytes, tuple[str, VersionRecord]]]:
        """A model type from its file's bytes, and its version lines with their records: a
        line the type's last file read also held is taken as it was read then (files are
        machine-written, one line per version), so only changed lines are parsed. When many
        lines are new and the bytes have the digest the index names (`expected`: a commit
        validated them), they are parsed without checking each record again; otherwise each
        new line is checked."""
        source = str(self.root / relpath)
        held = self._models.get(name)
        known = held[2] if held is not None else {}
        head_line, lines = model_lines(data, source)
        trusted = False
        if expected is not None and len(lines) > _CHECKED_LINES:
            new = sum(1 for line in lines if line not in known)
            trusted = new > _CHECKED_LINES and digest(data) == expected
        head = jsonl.loads(head_line) if trusted else load_model_head(head_line, name, source)
        versions: dict[str, VersionRecord] = {}
        seen: dict[bytes, tuple[str, VersionRecord]] = {}
        for line in lines:
            found = known.get(line)
            if found is None and trusted:
                row = jsonl.loads(line)
                found = (row.pop("version"), VersionRecord(**row))
            elif found is None:
                version, rec = load_model_version(line, name, source)
                found = (version, VersionRecord(**rec))
            if found[0] in versions:
                raise StateError(f"{source}: version {found[0]} is listed twice")
            versions[found[0]] = found[1]
            seen[line] = found
        for version in (head["champion"], *head["champion_history"]):
            if version is not None and version not in versions:
                raise StateError(f"{source}: champion {version!r} is not a version")
        aliases = head.get("aliases") or {}
        for alias, version in aliases.items():
            if version not in versions:
                raise StateError(f"{source}: alias {alias!r} names {version!r}, not a version")
        model = ModelType(name, head["champion"], head["champion_history"], versions, aliases)
        return model, seen

    def _read_file(self, relpath: str) -> bytes:
        try:
            fd = safefs.open_read(self.root, relpath)
        except PermissionError as exc:
            raise StateError(f"cannot read {self.root / relpath}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Read-modify-write of registry.yaml under the project lock, validated and atomic."""
        sent = 0
        with self.lock():
            before = self.read()
            txn = Transaction(copy.deepcopy(before), current_actor(), self.clock)
            yield txn
            finished = txn.state.take_finalized_tests()
            if txn.state != before or txn.events or finished:
                sent = self._commit(before, txn.state, finished, txn.events, txn.secrets)
        if sent and self.on_outbox is not None:  # after the lock: delivery never holds it
            self.on_outbox()

    def _commit(
        self,
        on_disk: RegistryState,
        state: RegistryState,
        finished: list[ABTest],
        events: list[dict[str, Any]],
        secrets: dict[str, str | None] | None = None,
    ) -> int:
        """Write one change as one unit under the project lock: the changed model types'
        files (new names: models/<type>/<generation>.json), archive lines, events and outbox
        entries first, then registry.yaml naming them and the committed lengths (see the
        module docstring); last, the files two commits old are removed. Returns the number of
        outbox entries written."""
        timeout = on_disk.settings.lock_timeout_s
        generation = on_disk.generation + 1
        files = {n: on_disk.model_files[n] for n in state.models if n in on_disk.model_files}
        if not isinstance(state.models, Models):  # a plain mapping put in its place
            state.models = Models(state.models)
        on_disk_models = on_disk.models if on_disk.model_files else Models()
        changed = {n: m.to_doc() for n, m in state.models.changed(on_disk_models).items()}
        loaded = state.models.loaded()
        models = {name: dump_model(doc) for name, doc in changed.items()}
        checked = {  # validate first, as the files will be read
            name: self._parse_model(name, data, model_file(name, generation))
            for name, data in models.items()
        }
        try:
            check_references(
                {
                    "models": {n: m.to_doc() for n, m in loaded.items()},
                    "ab_tests": {
                        n: t.to_doc() for n, t in state.ab_tests.items() if t.model_type in loaded
                    },
                }
            )
        except ValueError as exc:
            raise StateError(f"{self.registry_path}: {exc}") from None
        ends = dict(on_disk.committed)
        appended: list[tuple[Path, int]] = []
        written: list[str] = []
        data = b""
        outbox: list[dict[str, Any]] = []
        if state.webhooks:  # no endpoint, nothing to send: no outbox
            state.outbox_seq = dict(on_disk.outbox_seq)
            outbox = outbox_entries(events, on_disk.outbox_n, state.outbox_seq)
            state.outbox_n = on_disk.outbox_n + len(outbox)
        kept: dict[str, str | None] = {k: v for k, v in (secrets or {}).items() if v}
        try:
            if kept:  # before the commit point: a secret of an endpoint never added is unread
                self._write_secrets(kept)
            for name, model_data in models.items():
                relpath = model_file(name, generation)
                safefs.atomic_replace(self.root, relpath, model_data)
                written.append(relpath)
                files[name] = (generation, digest(model_data), len(changed[name]["versions"]))
            logs = [
                ("archive", self.archive_path, [t.to_dict() for t in finished]),
                ("events", self.root / EVENTS_FILE, events),
            ]
            if outbox or "outbox" in ends:  # (a project that never had an endpoint: no mark)
                logs.append(("outbox", self.root / OUTBOX_FILE, outbox))
            for key, path, records in logs:
                start, ends[key] = self._append_committing(
                    path, ends.get(key), jsonl.encode_batch(records), timeout
                )
                if records:
                    appended.append((path, start))
            state.committed = ends
            data = dump_index(index_of(state, generation, files))
            load_registry(data, str(self.registry_path))  # validate
            safefs.atomic_replace(self.root, REGISTRY_FILE, data)
        except BaseException:
            if not (data and self._registry_holds(data)):  # not done: take the lines back
                for path, start in appended:
                    self._cut(path, start, timeout)
                for relpath in written:
                    with contextlib.suppress(OSError):
                        os.unlink(self.root / relpath)
                raise
        snapshots.invalidate(self._snapshot_key)  # seen at once by every store of it here
        for name, parsed in checked.items():
            self._models[name] = (generation, *parsed)
        for name in models:
            previous = on_disk.model_files.get(name, (generation, "", 0))[0]
            self._remove_old_files(name, {generation, previous})
        gone = [k for k, v in (secrets or {}).items() if v is None]
        if gone:  # after the commit point: an endpoint still there keeps its secret
            with contextlib.suppress(OSError, MlopsError):
                self._write_secrets(dict.fromkeys(gone))
        return len(outbox)

    def _remove_old_files(self, name: str, keep: set[int]) -> None:
        """Remove a model type's files but `keep` (best effort: a file left is never read)."""
        with (
            contextlib.suppress(OSError, MlopsError),
            safefs.dir_in(self.root, f"{MODELS_DIR}/{name}", create=False) as dir_fd,
        ):
            for entry in os.listdir(dir_fd):
                stem, _, ext = entry.partition(".")
                if ext == "jsonl" and stem.isdigit() and int(stem) not in keep:
                    os.unlink(entry, dir_fd=dir_fd)

    def _append_committing(
        self, path: Path, committed: int | None, data: bytes, timeout: float
    ) -> tuple[int, int]:
        """Append `data` after the committed lines of a log: (start, end) of what it holds.

        Lines past `committed` were written by a commit that never happened (a crash before its
        registry replace): they are cut first. A log that is absent and gets nothing stays absent.
        """
        if not data and not os.path.lexists(path):
            return 0, 0
        with jsonl.locked_log(path, timeout, root=self.root) as fd:
            if committed is not None and os.fstat(fd).st_size > committed:
                os.ftruncate(fd, committed)
            jsonl.write_locked(fd, path, data)  # a torn tail cut; fsynced; all or nothing
            end = os.fstat(fd).st_size
        return end - len(data), end

    # -- events out: the outbox, delivery state, signing secrets ---------------------------

    def _write_secrets(self, changes: dict[str, str | None]) -> None:
        """Keep (a string) or remove (None) signing secrets in SECRETS_FILE, mode 0600."""
        import orjson

        held = self._secrets()
        for key, value in changes.items():
            if value is None:
                held.pop(key, None)
            else:
                held[key] = value
        data = orjson.dumps(held, option=orjson.OPT_SORT_KEYS) + b"\n"
        safefs.atomic_replace(self.root, SECRETS_FILE, data, mode=0o600)
        fd = safefs.open_read(self.root, SECRETS_FILE)
        try:
            os.fchmod(fd, 0o600)  # (also one a person widened: a rewrite keeps the mode)
        finally:
            os.close(fd)

    def _secrets(self) -> dict[str, str]:
        try:
            data = safefs.read_file(self.root / SECRETS_FILE)
        except FileNotFoundError:
            return {}
        try:
            doc = jsonl.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise StateError(f"{self.root / SECRETS_FILE}: not a JSON object of secrets")
        return doc

    def secret(self, webhook_id: str) -> str | None:
        return self._secrets().get(webhook_id)

    def outbox_read(self, after: int, limit: int) -> list[dict[str, Any]]:
        end = self.read().committed.get("outbox")
        if not end:
            return []
        path = self.root / OUTBOX_FILE
        found: list[dict[str, Any]] = []
        with os.fdopen(safefs.open_read(self.root, OUTBOX_FILE), "rb") as f:
            f.seek(_outbox_seek(f, after, end, path))
            while f.tell() < end and len(found) < limit:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                entry = _outbox_entry(line, path)
                if entry["n"] > after:
                    found.append(entry)
        return found

    @contextmanager
    def delivery(self) -> Iterator[DeliveryState]:
        """Under the flock of outbox/deliveries.jsonl: outbox/lanes.json read, then written
        (atomically) with the log lines appended after it (fsynced)."""
        import orjson

        timeout = self._lock_timeout()
        log = self.root / OUTBOX_LOG
        with jsonl.locked_log(log, timeout, root=self.root) as fd:
            try:
                data = safefs.read_file(self.root / OUTBOX_LANES)
            except FileNotFoundError:
                data = b"{}"
            try:
                doc = jsonl.loads(data)
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                raise StateError(f"{self.root / OUTBOX_LANES}: not a JSON object")
            state = DeliveryState(copy.deepcopy(doc))
            yield state
            if state.log:  # first: a crash before the lanes are written delivers again
                jsonl.write_locked(fd, log, jsonl.encode_batch(state.log))
            if state.doc != doc:
                safefs.atomic_replace(self.root, OUTBOX_LANES, orjson.dumps(state.doc))

    def delivery_log(self, limit: int) -> list[dict[str, Any]]:
        path = self.root / OUTBOX_LOG
        if not path.exists():
            return []
        return list(jsonl.tail(path, limit, skip_invalid=True).records)

    def _cut(self, path: Path, start: int, timeout: float) -> None:
        """Take back lines appended by a commit that failed (best effort: if this fails too,
        readers ignore them and the next commit cuts them)."""
        with (
            contextlib.suppress(OSError, MlopsError),
            jsonl.locked_log(path, timeout, root=self.root) as fd,
        ):
            if os.fstat(fd).st_size > start:
                os.ftruncate(fd, start)
                os.fsync(fd)

    def _registry_holds(self, data: bytes) -> bool:
        """Whether registry.yaml holds `data` (a replace that renamed, then failed to fsync)."""
        try:
            return safefs.read_file(self.registry_path) == data
        except (OSError, MlopsError):
            return False

    def _committed_end(self, path: Path, key: str) -> int | None:
        """Where the committed lines of events.jsonl or the archive end, when lines of an
        uncommitted write lie past it (None: read the whole log)."""
        end = self.read().committed.get(key)
        if end is None:
            return None
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        return end if size > end else None

    # -- the archive of finalized A/B tests ------------------------------------------------

    def archived_tests(self) -> list[ABTest]:
        path = self.archive_path
        if not path.exists():
            return []
        registry = self.read().ab_tests
        found: dict[str, ABTest] = {}
        line = 0
        for chunk in jsonl.read_span(path, 0, self._committed_end(path, "archive")):
            for row in chunk.records:
                line += 1
                test = self._archived(row, line)
                if test.name not in registry:
                    found[test.name] = test
        return list(found.values())

    def archived_test(self, name: str) -> ABTest | None:
        validate_name(name, "A/B test name")
        path = self.archive_path
        try:
            fd = safefs.open_file_for_read(path)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb"):
            size = os.fstat(fd).st_size
            end = self._committed_end(path, "archive") or size
            if end == 0:
                return None
            # The line of a test starts {"name":"<name>", (orjson keeps to_dict's order): find
            # the last one without parsing the archive.
            import mmap

            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
                needle = b'{"name":"' + name.encode() + b'",'
                at = view.rfind(b"\n" + needle, 0, end) + 1
                if not at and view[: len(needle)] != needle:
                    return None
                stop = view.find(b"\n", at, end)
                if stop < 0:
                    return None  # a torn last line: never committed
                text = view[at:stop]
        try:
            row = jsonl.loads(text)
        except ValueError:  # orjson.JSONDecodeError
            raise StateError(f"{path}: the line of A/B test {name} is not JSON") from None
        return self._archived(row, None)

    def _archived(self, row: Any, line: int | None) -> ABTest:
        """A validated test from an archive line (an error names the file and line)."""
        where = f"{self.archive_path}: line {line}" if line else f"{self.archive_path}"
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise StateError(f"{where}: not an archived A/B test")
        name = row["name"]
        try:
            # a line archived before schema 4 lacks the rules' fields: it had the old rules
            fields = legacy_test({k: v for k, v in row.items() if k != "name"})
            doc = AB_TEST(fields, f"ab_tests.{name}")
        except ValueError as exc:
            raise StateError(f"{where}: {exc}") from None
        return ABTest(name=name, **doc)

    # -- streams ----------------------------------------------------------------------------

    def path(self, stream: str) -> Path:
        """The log file of a stream (names were validated when the stream name was built);
        remembered, as per-request appends ask for it every call."""
        found = self._paths.get(stream)
        if found is None:
            found = self._paths[stream] = self._log_path(stream)
        return found

    def _log_path(self, stream: str) -> Path:
        parts = stream.split("/")
        if stream == "events":
            return self.root / EVENTS_FILE
        if parts[0] == "ab" and len(parts) == 2:
            return self.root / "logs" / "ab" / f"{parts[1]}.jsonl"
        if parts[0] == "metrics" and len(parts) == 3:
            return self.root / "logs" / "metrics" / parts[1] / f"{parts[2]}.jsonl"
        if parts[0] == "drift" and len(parts) == 4 and parts[3] in DRIFT_KINDS:
            return self.root / "logs" / "drift" / parts[1] / parts[2] / f"{parts[3]}.jsonl"
        raise ValueError(f"unknown stream {stream!r}")

    def append(self, stream: str, record: dict[str, Any]) -> None:
        log = self._logs.get(stream)
        if log is None:
            if stream == EVENTS:  # events are committed with the registry (module docstring)
                with self.transaction() as txn:
                    txn.events.append(record)
                return
            import orjson  # (not at start-up: a command that appends nothing never needs it)

            self._encode = orjson.dumps
            log = self._logs[stream] = jsonl.WRITER.log(self.path(stream), self.root)
        log.append(self._encode(record) + b"\n", self._lock_timeout)

    def append_batch(
        self,
        stream: str,
        data: Source,
        validate: Validator,
        batch_id: str | None,
        progress: Progress | None = None,
        cap: int | None = None,
    ) -> BatchResult:
        from .. import batch

        room = None
        if cap is not None:
            limit = cap

            def room(fd: int) -> tuple[int, int]:
                return self._count_fd(stream, fd), limit

        return batch.append_batch(
            self.path(stream),
            data,
            validate,
            self._lock_timeout(),
            batch_id,
            progress,
            root=self.root,
            room=room,
        )

    def replace(
        self, stream: str, data: Source, validate: Validator, cap: int | None = None
    ) -> int:
        from .. import batch

        path = self.path(stream)
        source, _ = batch.as_stream(data, None)
        scan = batch.Scan(validate, jsonl.utc_now())

        def chunks() -> Iterator[bytes]:
            for chunk in scan.chunks(source):
                if cap is not None and scan.count > cap:
                    continue  # keep reading for the count; refused below
                yield chunk
            if cap is not None and scan.count > cap:
                raise batch.CapError(0, scan.count, cap)

        with jsonl.locked_log(path, self._lock_timeout(), root=self.root):
            safefs.atomic_replace(self.root, path, chunks())
        return scan.count

    def count(self, stream: str) -> int:
        try:
            fd = safefs.open_read(self.root, self.path(stream))  # no link, FIFO or device
        except FileNotFoundError:
            return 0
        try:
            return self._count_fd(stream, fd)
        finally:
            os.close(fd)

    def _count_fd(self, stream: str, fd: int) -> int:
        """Whole lines in a stream, reading only bytes not counted before."""
        st = os.fstat(fd)
        inode, offset, lines = self._counted.get(stream, (0, 0, 0))
        if inode != st.st_ino or offset > st.st_size:
            inode, offset, lines = st.st_ino, 0, 0
        at = offset  # read up to here; `offset`: the end of the last whole line
        while at < st.st_size:
            block = os.pread(fd, min(1 << 20, st.st_size - at), at)
            if not block:
                break
            whole = block.rfind(b"\n") + 1
            if whole:  # a block inside a line longer than the block holds no newline
                lines += block.count(b"\n", 0, whole)
                offset = at + whole
            at += len(block)
        self._counted[stream] = (inode, offset, lines)
        return lines

    def position(self, stream: str) -> int:
        """The log's file (inode), length and first and last 4 KiB, hashed into one number:
        an append makes the log longer; a replace writes a new file (a new inode while the old
        one is still in place; its first line carries the replace's stamp unless the records
        bring their own ts), so a replace back to an earlier length still moves it. Reads and
        a refused batch (cut back to the same bytes) leave it. 0 for a stream never written."""
        try:
            fd = safefs.open_read(self.root, self.path(stream))  # no link, FIFO or device
        except FileNotFoundError:
            return 0
        try:
            st = os.fstat(fd)
            head = os.pread(fd, _ENDS, 0)
            tail = os.pread(fd, _ENDS, max(st.st_size - _ENDS, 0))
        finally:
            os.close(fd)
        import hashlib  # here: light commands never ask for a position

        digest = hashlib.blake2b(digest_size=8)
        for part in (st.st_ino.to_bytes(8, "little"), st.st_size.to_bytes(8, "little")):
            digest.update(part)
        digest.update(head)
        digest.update(tail)
        # under 2**62, so it fits a JSON integer in a drift check's row; never 0
        return (int.from_bytes(digest.digest(), "little") >> 2) or 1

    def summary(
        self,
        stream: str,
        key_field: str | None,
        keys: tuple[str, ...] | None = None,
        skip_invalid: bool = False,
        per_user: bool = False,
        until: str | None = None,
    ) -> Summary:
        from .. import summary

        found = summary.summarize(
            self.path(stream), key_field, skip_invalid, keys, per_user, until
        )
        return Summary(found.arms, found.torn_bytes, found.skipped, found.users)

    def tail_sums(
        self,
        stream: str,
        threshold_ms: float,
        keys: tuple[str, ...],
        until: str | None = None,
    ) -> dict[str, TailSums]:
        from .. import summary

        return summary.tail_counts(self.path(stream), threshold_ms, keys, until)

    def samples(
        self,
        stream: str,
        last: int | None = None,
        first: int | None = None,
        skip_invalid: bool = False,
    ) -> Samples:
        path = self.path(stream)
        start, end, torn, limit = _window(path, last, first)
        pred, conf, skipped, ordered = read_window(path, start, end, limit, skip_invalid)
        return Samples(pred, conf, skipped, torn, ordered)

    def reference_and_window(
        self, reference: str, first: int, production: str, last: int, skip_invalid: bool = False
    ) -> tuple[Samples, Samples]:
        # The window's child starts first and a reference read whole is read beside it; a
        # large one is read in two parts itself, before the window.
        ref_path, win_path = self.path(reference), self.path(production)
        ref_start, ref_end, _torn, ref_limit = _window(ref_path, None, first)
        start, end, torn, limit = _window(win_path, last, None)

        def read_reference() -> tuple[Any, Any, int, Any]:
            return read_window(ref_path, ref_start, ref_end, ref_limit, skip_invalid)

        if ref_end is not None:
            ref = read_reference()
            window = _WindowRead(win_path, start, end, limit, skip_invalid)
        else:
            try:
                before = os.stat(ref_path).st_size  # under SPLIT_BYTES, or it would be split
            except FileNotFoundError:
                before = 0
            window = _WindowRead(win_path, start, end, limit, skip_invalid, before)
            try:
                ref = read_reference()
            except BaseException:
                window.cancel()
                raise
        ref_pred, ref_conf, ref_skipped, ref_sorted = ref
        pred, conf, skipped, ordered = window.finish()
        return (
            Samples(ref_pred, ref_conf, ref_skipped, 0, ref_sorted),
            Samples(pred, conf, skipped, torn, ordered),
        )

    def feature_chunks(
        self,
        stream: str,
        last: int | None = None,
        first: int | None = None,
        skip_invalid: bool = False,
    ) -> Iterator[list[dict[str, Any] | None]]:
        path = self.path(stream)
        start, end, _, todo = _window(path, last, first)
        for chunk in jsonl.read_span(path, start, end, skip_invalid, FEATURE_BLOCK):
            if todo <= 0:
                break
            rows = [_features_of(r) for r in chunk.records[:todo]]
            todo -= len(rows)
            if rows:
                yield rows

    def fold_features(
        self,
        stream: str,
        last: int,
        skip_invalid: bool,
        fold: Callable[[Iterable[list[dict[str, Any] | None]]], T],
        join: Callable[[T, T], T],
    ) -> T:
        """A window of SPLIT_BYTES or more is folded in two parts, the later one by a forked
        child (its result pickled back) where one may be made; a child that fails leaves its
        part to this process, so the result and any error are those of one fold."""
        path = self.path(stream)
        start, end, _, _ = _window(path, last, None)
        if end is None or end - start < SPLIT_BYTES or not forked.may_fork():
            return fold(self.feature_chunks(stream, last=last, skip_invalid=skip_invalid))
        second = _line_start(path, start + int((end - start) * PARENT_SHARE), end)

        def part(low: int, high: int) -> Iterator[list[dict[str, Any] | None]]:
            for chunk in jsonl.read_span(path, low, high, skip_invalid, FEATURE_BLOCK):
                yield [_features_of(r) for r in chunk.records]

        import pickle

        child = forked.Child(lambda: pickle.dumps(fold(part(second, end)), protocol=5))
        try:
            mine = fold(part(start, second))
            found = child.result()
        finally:
            child.cancel()
        theirs = pickle.loads(found) if found is not None else fold(part(second, end))
        return join(mine, theirs)

    def load_profile(self, stream: str) -> dict[str, Any] | None:
        try:
            data = safefs.read_file(_profile_path(self.path(stream)))
        except FileNotFoundError:
            return None
        try:
            doc = jsonl.loads(data)
        except ValueError:
            return None  # a derived cache: a damaged one is computed again
        return doc if type(doc) is dict else None

    def save_profile(self, stream: str, doc: dict[str, Any]) -> None:
        path = _profile_path(self.path(stream))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, jsonl.dumps(doc))

    def history(
        self,
        stream: str,
        since: datetime | None = None,
        limit: int | None = None,
        skip_invalid: bool = False,
    ) -> list[dict[str, Any]]:
        path = self.path(stream)
        end = self._committed_end(path, "events") if stream == EVENTS else None
        if end is not None:  # lines of a write that never committed lie past `end`
            read = jsonl.Chunk()
            for chunk in jsonl.read_span(path, 0, end, skip_invalid):
                read.records += chunk.records
                read.skipped += chunk.skipped
            read.records = [r for r in read.records if since is None or _when(r) >= since]
            return _rows(read.records[-limit:] if limit else read.records, read)
        if since is None:
            if not limit:
                return _rows(None, jsonl.read_from(path, skip_invalid=skip_invalid))
            count = limit
            while True:  # further back until `limit` records (a skipped line holds none)
                read = jsonl.tail(path, count, skip_invalid)
                if len(read.records) >= limit or read.lines < count:
                    return _rows(read.records[-limit:], read)
                count *= 4
        count = 256
        while True:
            read = jsonl.tail(path, count, skip_invalid)
            rows = read.records
            if read.lines < count or (rows and _when(rows[0]) < since):
                rows = [r for r in rows if _when(r) >= since]
                return _rows(rows[-limit:] if limit else rows, read)
            count *= 4

    def page(
        self,
        stream: str,
        limit: int,
        before: int | None = None,
        match: dict[str, tuple[str, ...]] | None = None,
        skip_invalid: bool = False,
    ) -> Page:
        """Read backwards from `before` (a byte offset that starts a line) or from the end of
        the committed lines; one record past the page tells whether an older one matches."""
        path = self.path(stream)
        size = self._committed_end(path, "events") if stream == EVENTS else None
        if size is None:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                size = 0
        end = size
        if before is not None:
            if not 0 <= before <= size or (before and not self._starts_line(path, before)):
                raise ValidationError(f"{before} is no position in {path.name}")
            end = before
        records: list[dict[str, Any]] = []
        skipped, previous = 0, end
        wanted = list((match or {}).items())
        for run_start, run in jsonl.blocks_backwards(path, end):
            lines = run.split(b"\n")[:-1]
            parsed = _records(lines)  # every line passed over is checked, matching or not
            starts = [run_start]
            for line in lines[:-1]:
                starts.append(starts[-1] + len(line) + 1)
            for i in range(len(lines) - 1, -1, -1):
                record = parsed[i]
                if record is None:
                    if not skip_invalid:
                        raise StateError(
                            f"{path}: the line at byte {starts[i]} is not a JSON object; "
                            f"{SKIP_INVALID}"
                        )
                    skipped += 1
                    continue
                if wanted and any(record.get(k) not in v for k, v in wanted):
                    continue
                if len(records) == max(1, limit):
                    return Page(records, previous, skipped)  # an older record matches
                records.append(record)
                previous = starts[i]
        return Page(records, None, skipped)

    def _starts_line(self, path: Path, offset: int) -> bool:
        fd = safefs.open_file_for_read(path)
        try:
            return os.pread(fd, 1, offset - 1) == b"\n"
        finally:
            os.close(fd)

    def scan(self, stream: str, skip_invalid: bool = False) -> Iterator[list[dict[str, Any]]]:
        path = self.path(stream)
        end = self._committed_end(path, "events") if stream == EVENTS else None
        chunks = (
            jsonl.read_chunks(path, skip_invalid=skip_invalid)
            if end is None
            else jsonl.read_span(path, 0, end, skip_invalid)
        )
        for chunk in chunks:
            if chunk.records:
                yield chunk.records

    def streams(self) -> list[str]:
        """Every stream with a log: its name rebuilt from the path and checked, so hidden
        files beside the logs (batch journals, caches) and stray files are never streams."""
        logs = self.root / "logs"
        found = ["events"] if (self.root / EVENTS_FILE).is_file() else []
        candidates = [
            *(("ab", p.stem) for p in (logs / "ab").glob("*.jsonl")),
            *(("metrics", p.parent.name, p.stem) for p in (logs / "metrics").glob("*/*.jsonl")),
            *(
                ("drift", p.parent.parent.name, p.parent.name, p.stem)
                for p in (logs / "drift").glob("*/*/*.jsonl")
            ),
        ]
        for parts in sorted(candidates):
            stream = "/".join(parts)
            try:
                if self.path(stream) == self.root.joinpath(
                    "logs", *parts[:-1], f"{parts[-1]}.jsonl"
                ) and _valid_stream(parts):
                    found.append(stream)
            except (ValueError, MlopsError):
                continue
        return found

    def batches(self, stream: str) -> dict[str, int]:
        """From the log's batch journal (a batch recorded before the journal said counts: 0)."""
        return jsonl.recorded_batches(self.path(stream))

    def carry_batches(self, stream: str, batches: dict[str, int]) -> None:
        jsonl.add_recorded_batches(self.path(stream), batches, self.root)

    def copying(self) -> contextlib.nullcontext[None]:
        """Nothing to hold: a copy into a directory writes a temporary one (copy_project)."""
        return contextlib.nullcontext()

    def claim(self, key: str, ttl_s: float) -> bool:
        path = self.root / "logs" / "claims.jsonl"
        now = self.clock()
        with jsonl.locked_log(path, self._lock_timeout(), root=self.root) as fd:
            for row in reversed(jsonl.read_from(path).records):
                if row.get("key") == key:
                    if now - _when(row) < timedelta(seconds=ttl_s):
                        return False
                    break
            jsonl.write_locked(fd, path, jsonl.dumps_line({"ts": stamp(now), "key": key}))
        return True

    def flush(self, stream: str | None = None) -> None:
        """Nothing waits: every append is written before it returns."""

    def close(self) -> None:
        """Let go of the registry.yaml the project's snapshot holds open, and of the logs this
        store appended to (another store of the project in this process opens them again on
        its next append)."""
        snapshots.forget(self._snapshot_key)
        for log in self._logs.values():
            jsonl.WRITER.forget(log.path)
            log.close()
        self._logs.clear()


_ENDS = 4096  # bytes of each end of a log that its position covers


_CHECKED_LINES = 64  # new lines of a model type's file checked one by one, beyond: its digest


def model_file(name: str, generation: int) -> str:
    """Where a model type's file of a generation lies, relative to the project."""
    return f"{MODELS_DIR}/{name}/{generation}.jsonl"


def new_index() -> dict[str, Any]:
    """registry.yaml of a new, empty project."""
    doc = new_document()
    return {"schema_version": doc["schema_version"], "generation": 0, **doc}


def index_of(
    state: RegistryState, generation: int, files: dict[str, tuple[int, str, int]]
) -> dict[str, Any]:
    """registry.yaml's document: the state without its model types, naming their files."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generation": generation,
        "settings": state.settings.data,
        "models": {
            name: dict(zip(("generation", "blake2b", "versions"), files[name], strict=True))
            for name in state.models
        },
        "ab_tests": {name: t.to_doc() for name, t in state.ab_tests.items()},
        "committed": dict(state.committed),
        # (absent until used: a project without endpoints keeps the bytes it had before)
        **({"webhooks": copy.deepcopy(state.webhooks)} if state.webhooks else {}),
        **({"outbox": {"n": state.outbox_n, "seq": dict(state.outbox_seq)}}
           if state.outbox_n else {}),
    }


def _outbox_entry(line: bytes, path: Path) -> dict[str, Any]:
    try:
        entry = jsonl.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("n"), int):
        raise StateError(f"{path}: a line is not an outbox entry; restore it from backup")
    return entry


def _outbox_seek(f: Any, after: int, end: int, path: Path) -> int:
    """The offset of a line at or before the first entry numbered above `after`: a binary
    search over the committed bytes (entries are written in number order), so a read costs
    what it returns, not the outbox's history."""
    lo, hi = 0, end  # lo: a line start at or before the answer; hi: at or after it
    while hi - lo > 8192:
        f.seek((lo + hi) // 2)
        f.readline()  # to the next line start
        start = f.tell()
        if start >= hi:
            break
        line = f.readline()
        if _outbox_entry(line, path)["n"] <= after:
            lo = start + len(line)
        else:
            hi = start
    return lo


def _valid_stream(parts: tuple[str, ...]) -> bool:
    """Whether a path's parts name a stream (valid names and versions, a known drift kind)."""
    kind = parts[0]
    validate_name(parts[1], "name")
    if kind == "ab":
        return True
    validate_version(parts[2])
    return kind == "metrics" or parts[3] in DRIFT_KINDS


def _window(path: Path, last: int | None, first: int | None) -> tuple[int, int | None, int, int]:
    """Where a sample window lies in its log: the byte span to read (start, end; end None:
    to the end of the log), the torn bytes at the end left out, and how many lines to take:
    the last `last`, the first `first`, or all."""
    if last is not None:
        start, end, torn = jsonl.tail_span(path, last)
        return start, end, torn, last
    if first is not None:
        try:
            large = os.stat(path).st_size >= SPLIT_BYTES
        except FileNotFoundError:
            large = False
        if large:  # its end found, so that it may be read in two parts
            return 0, jsonl.head_span(path, first), 0, first
    return 0, None, 0, first if first is not None else 1 << 62


FEATURE_BLOCK = 512 << 10
"""Bytes of sample lines read and parsed at a time for their features: the objects of a few
hundred samples stay in the CPU's caches while they are taken apart feature by feature (with
8 MiB blocks a window's features took twice as long)."""


def _features_of(record: dict[str, Any]) -> dict[str, Any] | None:
    found = record.get("features")
    return found if type(found) is dict else None


def _profile_path(log: Path) -> Path:
    """The reference's feature profile, beside its log (a derived cache, never a stream)."""
    return log.with_name(log.stem + ".profile.json")


def _rows(records: list[dict[str, Any]] | None, read: jsonl.Chunk) -> Rows:
    """`records` (default: all `read` holds) with the count of lines skipped to read them."""
    rows = Rows(read.records if records is None else records)
    rows.skipped = len(read.skipped)
    return rows


def _records(lines: list[bytes]) -> list[dict[str, Any] | None]:
    """Log lines as records (None for a line that is not a JSON object), all at once where
    every line is one (the common case, at orjson's speed)."""
    import orjson

    try:
        records: list[Any] = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError:
        records = [_record(line) for line in lines]
    return [r if type(r) is dict else None for r in records]


def _record(line: bytes) -> dict[str, Any] | None:
    """A log line as a record (None: not a JSON object)."""
    try:
        record = jsonl.loads(line)
    except ValueError:  # orjson.JSONDecodeError
        return None
    return record if type(record) is dict else None


def _when(row: dict[str, Any]) -> datetime:
    """A record's time; one without a valid `ts` counts as older than any (the caller's
    validation of the record names it)."""
    try:
        return parse_ts(str(row["ts"]))
    except (KeyError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)


def read_columns(
    path: Path, start: int, stop: int | None, limit: int, skip_invalid: bool = False
) -> tuple[Any, Any, int]:
    """Predictions and confidences of at most `limit` lines from `start`, a block at a time.

    Returns the arrays and the number of malformed lines skipped (only with `skip_invalid`;
    otherwise a malformed line is an error naming its line)."""
    pred, conf, skipped, _ = read_window(path, start, stop, limit, skip_invalid)
    return pred, conf, skipped


def read_window(
    path: Path, start: int, stop: int | None, limit: int, skip_invalid: bool = False
) -> tuple[Any, Any, int, Any]:
    """read_columns, and the predictions sorted when they were sorted on the way (else None).

    A span of SPLIT_BYTES or more is read in two parts, the later one by a forked child where
    one may be made (forked.py), each part's predictions sorted where it was read and the two
    merged here: the arrays, and any error, are the same as when this process reads it all."""
    return _WindowRead(path, start, stop, limit, skip_invalid).finish()


class _WindowRead:
    """read_window begun: the child for the span's later part (if any) starts at once, so
    that this process may read something else (`before` bytes of it) until `finish`; its own
    part is then the smaller, to end about when the child does."""

    def __init__(
        self,
        path: Path,
        start: int,
        stop: int | None,
        limit: int,
        skip_invalid: bool,
        before: int = 0,
    ) -> None:
        self.path, self.start, self.limit, self.skip_invalid = path, start, limit, skip_invalid
        self.stop = self.mid = stop
        self.child: forked.Child | None = None
        if stop is not None and stop - start >= SPLIT_BYTES and forked.may_fork():
            span = stop - start
            share = max(PARENT_SHARE - before * (1 - PARENT_SHARE) / span, 1 - PARENT_SHARE)
            mid = _line_start(path, start + int(span * share), stop)
            if mid < stop:
                self.child = forked.Child(lambda: _packed_columns(path, mid, stop))
                self.mid = mid

    def finish(self) -> tuple[Any, Any, int, Any]:
        """The arrays of read_window (the child stopped whatever happens)."""
        import numpy as np

        child, limit, skip_invalid = self.child, self.limit, self.skip_invalid
        try:
            pred, conf, skipped = _read_span(self.path, self.start, self.mid, limit, skip_invalid)
            if child is None or len(pred) >= limit:
                return pred, conf, skipped, None
            mine = np.sort(pred)  # while the child finishes
            packed = child.result()
            if packed is None:  # a block the child left to the line-by-line parse: read here
                assert self.mid is not None
                more_pred, more_conf, more_skipped = _read_span(
                    self.path, self.mid, self.stop, limit - len(pred), skip_invalid
                )
                theirs = None
            else:
                values = np.frombuffer(packed, np.float64)
                third = len(values) // 3
                more_pred, more_conf = values[:third], values[third : 2 * third]
                theirs, more_skipped = values[2 * third :], 0
            take = limit - len(pred)
            whole = None
            if theirs is not None and take >= len(more_pred):
                # two sorted runs: the stable sort finds and merges them in one pass
                whole = np.sort(np.concatenate((mine, theirs)), kind="stable")
            return (
                np.concatenate((pred, more_pred[:take])),
                np.concatenate((conf, more_conf[:take])),
                skipped + more_skipped,
                whole,
            )
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self.child is not None:
            self.child.cancel()


PARENT_SHARE = 0.56
"""The part of a split span this process reads: the child's part costs it more (the fork's
copied pages, the pipe back), so both end about together."""


SPLIT_BYTES = 16 << 20
"""Sample lines from which a window is read in two processes (about 160,000 lines): a fork
and the pipe back cost a few milliseconds; the parse of 1,000,000 lines about 0.3 s (orjson
holds the GIL, so threads could not share it)."""


def _read_span(
    path: Path, start: int, stop: int | None, limit: int, skip_invalid: bool
) -> tuple[Any, Any, int]:
    """read_columns of one span, in this process."""
    import numpy as np

    size = min(limit, 1 << 20)
    pred, conf = np.empty(size), np.empty(size)
    n = skipped = 0
    for block in _sample_blocks(path, start, stop, 1 << 20):
        if not block.data:
            continue
        found = _block_columns(block.data)
        if found is None:
            # Line by line: names a bad line, or a value out of bounds (or skips them).
            p, c, bad = _parse_samples(path, block, skip_invalid)
            skipped += bad
        else:
            p, c = found
        take = min(len(p), limit - n)
        while n + take > len(pred):
            pred = np.resize(pred, 2 * len(pred))
            conf = np.resize(conf, 2 * len(conf))
        pred[n : n + take] = p[:take]
        conf[n : n + take] = c[:take]
        n += take
        if n >= limit:
            break
    return pred[:n], conf[:n], skipped


def _packed_columns(path: Path, start: int, stop: int) -> memoryview:
    """The span's predictions, confidences and sorted predictions as float64 bytes (a forked
    child's work); raises at a block that only the line-by-line parse takes (the parent then
    reads it)."""
    import numpy as np

    preds, confs = [], []
    for block in _sample_blocks(path, start, stop, 1 << 20):
        if not block.data:
            continue
        found = _block_columns(block.data)
        if found is None:
            raise ValueError("a block for the line-by-line parse")
        preds.append(found[0])
        confs.append(found[1])
    n = sum(len(p) for p in preds)
    out = np.empty(3 * n, np.float64)  # filled in place: no copy of the whole made twice
    if n:
        np.concatenate(preds, out=out[:n])
        np.concatenate(confs, out=out[n : 2 * n])
        out[2 * n :] = out[:n]
        out[2 * n :].sort()
    return out.data.cast("B")


def _line_start(path: Path, pos: int, stop: int) -> int:
    """The first place at or after `pos` where a line starts (`stop` if none before it)."""
    fd = safefs.open_file_for_read(path)
    try:
        at = pos - 1  # a newline just before `pos` makes `pos` a line's start
        while at < stop:
            chunk = os.pread(fd, min(1 << 16, stop - at), at)
            if not chunk:
                break
            cut = chunk.find(b"\n")
            if cut >= 0:
                return min(at + cut + 1, stop)
            at += len(chunk)
        return stop
    finally:
        os.close(fd)


def _block_columns(data: bytes) -> tuple[Any, Any] | None:
    """A block's arrays by sample_columns, or None when it leaves the block to the line-by-line
    parse or a value lies out of bounds (which that parse names)."""
    from ..columns import general_columns, sample_columns, writer_columns
    from ..features import without_features

    found = writer_columns(data)  # the writers' lines: first, as most blocks are theirs
    if found is None:
        stripped = without_features(data)  # samples with input features: outputs without them
        found = general_columns(data) if stripped is None else sample_columns(stripped)
    return found if found is not None and _in_bounds(*found) else None


def _sample_blocks(path: Path, start: int, stop: int | None, size: int) -> Iterator[jsonl.Block]:
    """The whole lines from `start` to `stop` (or the size at opening), a block at a time:
    each block read once and cut at its last newline, the cut-off line read again with the
    next (no joining). From a block without a newline on (a line longer than a block, or a
    torn tail) jsonl.read_blocks goes on, which bounds over-long lines and reports the tail."""
    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        return
    pos = start
    try:
        end = os.fstat(fd).st_size if stop is None else stop
        while pos < end:
            chunk = os.pread(fd, min(size, end - pos), pos)
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                break
            yield jsonl.Block(chunk if cut == len(chunk) else chunk[:cut], pos, pos + cut)
            pos += cut
        else:
            return
    finally:
        os.close(fd)
    yield from jsonl.read_blocks(path, pos, size, stop)


def _parse_samples(
    path: Path, block: jsonl.Block, skip_invalid: bool
) -> tuple[list[Any], list[Any], int]:
    """A block's samples parsed line by line: what sample_columns did not take. A bad line is
    an error naming its line, or skipped."""
    from ..errors import ValidationError

    lines = block.data.split(b"\n")[:-1]
    try:
        rows, bad = jsonl.parse_lines(lines, path, 1, skip_invalid)
    except StateError:  # said again with the line counted from the top (read only now)
        jsonl.parse_lines(lines, path, jsonl.lines_before(path, block.start) + 1, False)
        raise
    try:
        p: list[Any] = [r["prediction"] for r in rows]
        c: list[Any] = [r["confidence"] for r in rows]
        if _all_numbers(p, c) and _in_bounds(p, c):
            return p, c, len(bad)
    except (KeyError, TypeError):
        pass
    good = []
    for i, row in enumerate(rows):
        try:
            good.append(validate_sample(row, judge_ts=False))  # stored: its time was judged
        except ValidationError as exc:
            if not skip_invalid:  # then no line was skipped above
                line = jsonl.lines_before(path, block.start) + 1 + i
                raise StateError(
                    f"{path}: line {line} is not a valid sample ({exc}); {SKIP_INVALID}"
                ) from None
    skipped = len(bad) + len(rows) - len(good)
    return [r["prediction"] for r in good], [r["confidence"] for r in good], skipped


def _in_bounds(p: Any, c: Any) -> bool:
    """Whether every prediction lies within +-PREDICTION_ABS_MAX and every confidence in
    [0, 1] (numbers parsed from JSON are finite), checked over the arrays at once."""
    import numpy as np

    from ..limits import PREDICTION_ABS_MAX

    p, c = np.asarray(p, dtype=np.float64), np.asarray(c, dtype=np.float64)
    return bool((np.abs(p) <= PREDICTION_ABS_MAX).all() and ((c >= 0) & (c <= 1)).all())


def _all_numbers(p: list[Any], c: list[Any]) -> bool:
    number = (int, float)
    return all(type(x) in number for x in p) and all(type(x) in number for x in c)
