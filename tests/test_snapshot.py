"""The service path: the registry snapshot each process routes and records from, and a
per-request call that only appends (DESIGN section 13)."""

from __future__ import annotations

import os
import pickle
import subprocess
from collections.abc import Hashable
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from mlops_cli import ABTestConfig, ConflictError, ModelVersion, Project
from mlops_cli.state import RegistryState
from mlops_cli.store import snapshot as snapshots
from mlops_cli.store.files import CHECK_EVERY_S
from mlops_cli.store.snapshot import Snapshot

from . import pg_server as fixtures
from .conftest import MLOPS_BIN

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url


@pytest.fixture(params=["files", pytest.param("postgres", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "proj")


def running_test(location: str) -> Project:
    """A project with champion v1.0.0 and a running test against v1.1.0 (10% treatment)."""
    project = Project.init(location, force=location.startswith("postgresql://"))
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m.pt"))
    project.registry.register_version(ModelVersion("gnn", "v1.1.0", model_path="/m.pt"))
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="v1.1.0"))
    return project


def seed_request(project: Project, i: int) -> None:
    """The seed's four calls for one request (main.py)."""
    user = f"user-{i}"
    variant = project.ab.assign_variant("gnn", user)
    project.registry.update_metrics("gnn", variant["version"], 10.0, 0.8, False)
    project.drift_detector("gnn", variant["version"]).add_production_sample(0.5, 0.8)
    if "t" in project.ab.active_tests:
        project.ab.record_result("t", variant["name"], 10.0, 0.8, False, user_id=user)


# -- the snapshot itself: injected generation, poll interval and clock -------------------------


class Registry:
    """A stand-in registry: a generation and a state, changed by the test."""

    def __init__(self) -> None:
        self.generation = 1
        self.state = RegistryState.from_doc(_empty_doc())
        self.loads = 0
        self.checks = 0

    def load(self) -> tuple[Hashable, RegistryState]:
        self.loads += 1
        return self.generation, self.state

    def current(self) -> Hashable:
        self.checks += 1
        return self.generation


def _empty_doc() -> dict[str, object]:
    from mlops_cli.schema import new_document

    return new_document()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_change_elsewhere_is_seen_after_the_poll_interval_and_not_before() -> None:
    registry, clock = Registry(), Clock()
    snap = Snapshot(registry.load, registry.current, check_every_s=1.0, clock=clock)
    first = snap.state()
    registry.generation, registry.state = 2, RegistryState.from_doc(_empty_doc())
    clock.now += 0.999
    assert snap.state() is first  # within the interval: no check at all
    assert registry.checks == 0
    clock.now += 0.001
    assert snap.state() is registry.state  # the interval is up: checked, and reloaded
    assert (registry.checks, registry.loads) == (1, 2)


def test_an_unchanged_generation_is_not_reloaded() -> None:
    registry, clock = Registry(), Clock()
    snap = Snapshot(registry.load, registry.current, check_every_s=1.0, clock=clock)
    first = snap.state()
    for _ in range(5):
        clock.now += 1.0
        assert snap.state() is first
    assert (registry.checks, registry.loads) == (5, 1)


def test_an_invalidation_is_seen_at_once_whatever_the_generation() -> None:
    registry, clock = Registry(), Clock()
    snap = Snapshot(registry.load, registry.current, check_every_s=3600.0, clock=clock)
    snap.state()
    registry.state = RegistryState.from_doc(_empty_doc())  # the same generation (a NOTIFY)
    snap.invalidate()
    assert snap.state() is registry.state
    assert registry.loads == 2


def test_a_forked_child_starts_with_no_shared_snapshot(tmp_path: Path) -> None:
    made: list[int] = []

    def make() -> Snapshot:
        made.append(1)
        registry = Registry()
        return Snapshot(registry.load, registry.current)

    key = ("test", str(tmp_path))
    snapshots.shared(key, make)
    assert snapshots.shared(key, make) is snapshots.shared(key, make)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new snapshot is made
        snapshots.shared(key, make)
        os.write(write, str(len(made)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 8) == b"2"
    assert len(made) == 1
    snapshots.forget(key)


# -- the stores: both share the code below ----------------------------------------------------


def test_a_change_made_in_this_process_is_seen_at_once(location: str) -> None:
    """Every store of the project in the process shares one snapshot; a commit invalidates
    it, whatever its poll interval."""
    service = running_test(location)
    service.store._snapshot().check_every_s = 3600.0  # no poll: only the commit can tell
    assert service.ab.assign_variant("gnn", "u").test == "t"
    admin = Project.open(location)
    admin.ab.finalize_test("t", "promote", force=True)
    assignment = service.ab.assign_variant("gnn", "u")
    assert (assignment.name, assignment.version, assignment.test) == ("champion", "v1.1.0", None)
    assert service.ab.active_tests == {}


def test_per_request_calls_never_read_the_registry(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = running_test(location)
    seed_request(project, 0)
    snap = project.store._snapshot()
    loads = snap.loads
    reads: list[int] = []
    store_type = type(project.store)
    real_read = store_type.read
    monkeypatch.setattr(store_type, "read", lambda self: reads.append(1) or real_read(self))
    for i in range(1, 201):
        seed_request(project, i)
    assert (snap.loads - loads, len(reads)) == (0, 0)
    project.store.close()


def test_the_assigned_model_computes_its_serving_metrics_when_read(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = running_test(location)
    for ms, error in ((10.0, False), (30.0, True)):
        project.registry.update_metrics("gnn", "v1.0.0", ms, 0.5, error)
    project.store.close()  # PostgreSQL: the buffered records written
    project = Project.open(location)
    summaries: list[str] = []
    store_type = type(project.store)
    real_summary = store_type.summary
    monkeypatch.setattr(
        store_type,
        "summary",
        lambda self, stream, *a, **k: summaries.append(stream)
        or real_summary(self, stream, *a, **k),
    )
    users = (f"u{i}" for i in range(100))  # 90% of users are in the control arm
    assignment = next(a for a in map(lambda u: project.ab.assign_variant("gnn", u), users)
                      if a.name == "control")
    assert assignment["version"] == "v1.0.0" and assignment["name"] == "control"
    assert summaries == []  # routing read no metrics
    model = assignment["model"]
    assert model.model_path == "/m.pt" and summaries == []
    assert (model.requests, model.avg_inference_time_ms, model.error_rate) == (2, 20.0, 0.5)
    assert summaries == ["metrics/gnn/v1.0.0"]  # once, on first access
    assert model == project.registry.get_version("gnn", "v1.0.0")
    assert pickle.loads(pickle.dumps(assignment.model)) == model
    project.store.close()


def test_a_test_started_elsewhere_is_recorded_into_at_once(location: str) -> None:
    """A record for a test the snapshot does not hold yet reads the registry fresh."""
    project = running_test(location)
    project.ab.finalize_test("t", "rollback", force=True)
    service = Project.open(location)
    service.store._snapshot().check_every_s = 3600.0
    assert service.ab.active_tests == {}
    project.ab.start_test(ABTestConfig("t2", "gnn", treatment_version="v1.1.0"))
    service.ab.record_result("t2", "control", 10.0, 0.8, False)
    service.store.close()
    assert Project.open(location).ab.status("t2").requests["control"] == 1


# -- the directory store ----------------------------------------------------------------------


def test_a_promote_in_another_process_routes_the_requests_after_the_next_check(
    tmp_path: Path,
) -> None:
    root = tmp_path / "proj"
    project = running_test(str(root))
    project.ab.finalize_test("t", "rollback", force=True)
    project.registry.register_version(ModelVersion("gnn", "v2.0.0", model_path="/m.pt"))
    clock = Clock()
    _private_snapshot(project, clock=clock)  # the directory's default interval
    try:
        assert project.ab.assign_variant("gnn", "u").version == "v1.0.0"
        subprocess.run(
            [str(MLOPS_BIN), "-C", str(root), "promote", "gnn", "v2.0.0"],
            check=True, capture_output=True, timeout=120,
        )
        assert project.ab.assign_variant("gnn", "u").version == "v1.0.0"  # not looked yet
        clock.now += CHECK_EVERY_S
        assert project.ab.assign_variant("gnn", "u").version == "v2.0.0"
    finally:
        snapshots.forget(("another process", project.location))


def test_a_read_sees_a_change_elsewhere_at_once_whatever_the_interval(tmp_path: Path) -> None:
    """`read()` (commands, transactions) compares the registry's generation on every call:
    a transaction never starts from a state another process has changed since, and the
    per-request calls see what it read."""
    root = tmp_path / "proj"
    admin = running_test(str(root))
    service = Project.open(root)
    _private_snapshot(service, check_every_s=3600.0, clock=Clock())
    try:
        assert service.ab.assign_variant("gnn", "u").test == "t"
        admin.ab.finalize_test("t", "promote", force=True)
        admin.registry.register_version(ModelVersion("gnn", "v2.0.0", model_path="/m.pt"))
        assert service.ab.assign_variant("gnn", "u").test == "t"  # within the interval
        service.registry.register_version(ModelVersion("gnn", "v3.0.0", model_path="/m.pt"))
        assert sorted(Project.open(root).state().models["gnn"].versions) == [
            "v1.0.0", "v1.1.0", "v2.0.0", "v3.0.0",
        ]  # no update lost
        assignment = service.ab.assign_variant("gnn", "u")  # the snapshot the read refreshed
        assert (assignment.test, assignment.version) == (None, "v1.1.0")
    finally:
        snapshots.forget(("another process", service.location))


def _listing(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def test_recording_rewrites_no_file_only_the_logs_grow(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    project = running_test(str(root))
    for i in range(40):  # both arms served: every log exists
        seed_request(project, i)
    project.ab.evaluate_test("t")  # the summaries' caches exist: they must stay as they are
    project.registry.list_versions()
    before = _listing(root)
    assert "logs/metrics/gnn/v1.1.0.jsonl" in before
    for i in range(40, 100):
        seed_request(project, i)
    after = _listing(root)
    assert after.keys() == before.keys()  # nothing created or removed
    changed = {k for k in after if after[k] != before[k]}
    versions = ("v1.0.0", "v1.1.0")
    logs = {
        "logs/ab/t.jsonl",
        *(f"logs/metrics/gnn/{v}.jsonl" for v in versions),
        *(f"logs/drift/gnn/{v}/production.jsonl" for v in versions),
    }
    assert changed <= logs and {"logs/ab/t.jsonl", "logs/metrics/gnn/v1.0.0.jsonl"} <= changed
    for name in changed:
        assert after[name][0] == before[name][0]  # appended in place, never replaced
        assert after[name][2] > before[name][2]


def test_summaries_stay_incremental_after_the_service_path(tmp_path: Path) -> None:
    """Evaluations still read only the lines appended since the last one."""
    from mlops_cli import jsonl

    root = tmp_path / "proj"
    project = running_test(str(root))
    for i in range(20):
        seed_request(project, i)
    first = project.ab.evaluate_test("t")
    seen: list[int] = []
    real = jsonl.read_chunks

    def spy(path: Path, offset: int = 0, *args: object, **kwargs: object) -> object:
        seen.append(offset)
        return real(path, offset, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonl, "read_chunks", spy)
        again = project.ab.evaluate_test("t")
    size = (root / "logs" / "ab" / "t.jsonl").stat().st_size
    assert seen == [size]  # read from the end: nothing new to fold
    assert again.metrics == first.metrics



# -- records that race a finalize -------------------------------------------------------------


class WallClock:
    """A settable UTC clock for a project (the records' `ts`, a test's `finalized_at`)."""

    def __init__(self, now: str) -> None:
        from mlops_cli.timeutil import parse_ts

        self.now = parse_ts(now)

    def __call__(self) -> datetime:
        return self.now


def test_a_record_racing_a_finalize_is_kept_but_not_counted(location: str) -> None:
    admin_clock = WallClock("2026-12-01T00:00:00Z")
    running_test(location)
    admin = Project.open(location, clock=admin_clock)
    for _ in range(3):
        admin.ab.record_result("t", "control", 10.0, 0.8, False)
    service_clock = WallClock("2026-12-01T11:59:59Z")
    service = Project.open(location, clock=service_clock)
    _private_snapshot(service, check_every_s=3600.0, listen=False)  # not told of the finalize
    try:
        assert "t" in service.ab.active_tests
        admin_clock.now = service_clock.now + timedelta(seconds=1)
        admin.ab.finalize_test("t", "rollback", force=True)  # at 12:00:00
        # The service has not seen it yet: one record at the finalize's second is counted,
        # one after it is kept but not counted.
        service.ab.record_result("t", "control", 10.0, 0.8, False, ts="2026-12-01T12:00:00Z")
        service_clock.now += timedelta(seconds=1, microseconds=1)
        service.ab.record_result("t", "control", 10.0, 0.8, False)
        service.store.close()  # PostgreSQL: what it buffered is written
        admin.store.close()
        fresh = Project.open(location)
        assert fresh.store.count("ab/t") == 5
        assert fresh.ab.evaluate_test("t").metrics["control"]["requests"] == 4
        assert fresh.ab.status("t").requests == {"control": 4, "treatment": 0}
        # Once the service's snapshot is current, a record is an error and changes nothing.
        service.store._snapshot().invalidate()  # type: ignore[attr-defined]
        with pytest.raises(ConflictError, match="already finalized"):
            service.ab.record_result("t", "control", 10.0, 0.8, False)
        service.store.close()
        fresh.store.close()
        fresh = Project.open(location)
        assert fresh.store.count("ab/t") == 5
    finally:
        snapshots.forget(("another process", service.location))


@pytest.mark.parametrize(
    ("ts", "counted"),
    [
        ("2026-12-01T12:00:00.000000Z", True),  # at the finalize: counted
        ("2026-12-01T12:00:00.000001Z", False),  # a microsecond later: not
        ("2026-12-01T13:00:00+01:00", True),  # the same instant with an offset
        ("2026-12-01T13:00:00.000001+01:00", False),
        ("2026-12-01T12:00:00Z", True),  # no fraction
    ],
)
def test_a_finalized_test_counts_records_up_to_its_finalized_at(
    tmp_path: Path, ts: str, counted: bool
) -> None:
    from mlops_cli import summary

    log = tmp_path / "t.jsonl"
    line = {"variant": "control", "inference_time_ms": 1.0, "confidence": 0.5, "error": False}
    log.write_bytes(
        b"".join(
            orjson.dumps({"ts": t, **line}) + b"\n"
            for t in ("2026-12-01T11:00:00.000000Z", ts)
        )
    )
    until = "2026-12-01T12:00:00.000000Z"
    found = summary.summarize(log, "variant", keys=("control", "treatment"), until=until)
    assert found.arm("control").n == 1 + counted
    again = summary.summarize(log, "variant", keys=("control", "treatment"), until=until)
    assert again.arm("control").n == 1 + counted  # from its cache
    assert summary.summarize(log, "variant").arm("control").n == 2  # unfiltered: both


def _private_snapshot(project: Project, **options: object) -> Snapshot:
    """Give a project the snapshot another process would have (not invalidated by commits
    here), built with `options` (poll interval, clock, listener)."""
    store = project.store
    store._snapshot_key = ("another process", project.location)  # type: ignore[attr-defined]
    return snapshots.shared(
        store._snapshot_key,  # type: ignore[attr-defined]
        lambda: store._new_snapshot(**options),  # type: ignore[attr-defined]
    )


def test_a_change_elsewhere_is_seen_within_the_poll_interval(location: str) -> None:
    admin = running_test(location)
    service = Project.open(location)
    clock = Clock()
    _private_snapshot(service, check_every_s=1.0, clock=clock, listen=False)
    try:
        assert service.ab.assign_variant("gnn", "u").test == "t"
        admin.ab.finalize_test("t", "promote", force=True)
        clock.now += 0.999
        assert service.ab.assign_variant("gnn", "u").test == "t"  # not checked yet
        clock.now += 0.001
        assignment = service.ab.assign_variant("gnn", "u")
        assert (assignment.name, assignment.version, assignment.test) == (
            "champion", "v1.1.0", None,
        )
    finally:
        snapshots.forget(("another process", service.location))
        service.store.close()


@pytest.mark.postgres
def test_the_listener_tells_another_process_of_a_change(pg_url: str) -> None:
    """The listener thread invalidates the snapshot (at the commit's NOTIFY, or its own
    poll): the snapshot's own poll interval is an hour, and the change is seen (the
    deadline only catches a hang)."""
    import time

    admin = running_test(pg_url)
    service = Project.open(pg_url)
    _private_snapshot(service, check_every_s=3600.0, listen=True)
    try:
        assert service.ab.assign_variant("gnn", "u").test == "t"
        deadline = time.monotonic() + 60
        admin.ab.finalize_test("t", "promote", force=True)
        while service.ab.assign_variant("gnn", "u").test == "t":
            assert time.monotonic() < deadline, "the notification never arrived"
            time.sleep(0.05)
        assert service.ab.assign_variant("gnn", "u").version == "v1.1.0"
    finally:
        snapshots.forget(("another process", service.location))
        service.store.close()


def test_a_registry_edited_in_place_or_replaced_is_read_again(tmp_path: Path) -> None:
    """The directory store checks the registry.yaml it read with one fstat: an edit in place
    (its size and time change) and a replace by a commit (its link count drops to 0) are both
    seen by another process's snapshot. (A hard-linked registry.yaml is refused by writers.)"""
    root = tmp_path / "proj"
    admin = running_test(str(root))
    service = Project.open(root)
    snap = _private_snapshot(service, check_every_s=0.0)  # checked on every call
    try:
        service.ab.assign_variant("gnn", "u")
        loads = snap.loads
        with open(root / "registry.yaml", "ab") as f:  # in place: the same inode
            f.write(b"# a note\n")
        service.ab.assign_variant("gnn", "u")
        assert snap.loads == loads + 1
        admin.ab.finalize_test("t", "promote", force=True)
        assert service.ab.assign_variant("gnn", "u").version == "v1.1.0"
    finally:
        snapshots.forget(("another process", service.location))


def test_beyond_the_files_held_a_snapshot_checks_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_cli.store.files import _Watched

    monkeypatch.setattr(_Watched, "HELD", 1)
    first = running_test(str(tmp_path / "a"))
    service = Project.open(first.root)
    _private_snapshot(service, check_every_s=0.0)
    try:
        assert service.ab.assign_variant("gnn", "u").test == "t"
        Project.init(tmp_path / "b").state()  # holds its registry.yaml: the first is let go
        first.ab.finalize_test("t", "promote", force=True)
        assert service.ab.assign_variant("gnn", "u").version == "v1.1.0"
    finally:
        snapshots.forget(("another process", service.location))


@pytest.mark.postgres
def test_a_process_keeps_a_bounded_number_of_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each listener holds a connection: past the bound the oldest stops (its snapshot
    keeps the poll), so a process opening many projects never exhausts the server."""
    from mlops_cli.store.postgres import notify

    monkeypatch.setattr(notify, "LISTENERS", 2)
    monkeypatch.setattr(notify, "_running", [])  # the listeners of earlier tests aside
    unreachable = "postgresql://127.0.0.1:1/none?connect_timeout=1"
    listeners = [notify.Listener(unreachable, lambda: None, lambda: None) for _ in range(3)]
    try:
        for listener in listeners:
            listener.start()
        assert [listener.stopped for listener in listeners] == [True, False, False]
    finally:
        for listener in listeners:
            listener.close()


# -- the logs a service keeps open (jsonl.AppendLog) --------------------------------------------


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _record_each(project: Project, ms: float) -> None:
    """One record into each per-request stream of version v1.0.0 and test t."""
    project.ab.record_result("t", "control", ms, 0.8, False)
    project.registry.update_metrics("gnn", "v1.0.0", ms, 0.8, False)
    project.drift_detector("gnn", "v1.0.0").add_production_sample(ms, 0.8)


PER_REQUEST_LOGS = (
    ("logs/ab/t.jsonl", "inference_time_ms"),
    ("logs/metrics/gnn/v1.0.0.jsonl", "inference_time_ms"),
    ("logs/drift/gnn/v1.0.0/production.jsonl", "prediction"),
)


def test_a_log_removed_or_replaced_under_a_service_gets_its_next_record(tmp_path: Path) -> None:
    """The descriptor a service keeps per log is checked under the lock on every append: a
    log removed or replaced since is opened again, and the next record goes to the new file."""
    root = tmp_path / "proj"
    project = running_test(str(root))
    _record_each(project, 10.0)  # every log open
    for name, _ in PER_REQUEST_LOGS:
        (root / name).unlink()
    _record_each(project, 11.0)
    for name, _ in PER_REQUEST_LOGS:  # replaced by a copy (a new file renamed over it)
        copy = root / f"{name}.copy"
        copy.write_bytes((root / name).read_bytes())
        os.replace(copy, root / name)
    _record_each(project, 12.0)
    for name, key in PER_REQUEST_LOGS:
        assert [r[key] for r in _lines(root / name)] == [11.0, 12.0], name


def test_a_log_linked_or_torn_under_a_service(tmp_path: Path) -> None:
    """A hard link made to an open log (a `cp -al` backup) refuses the next record and leaves
    the backup as it was; a torn last line another writer left is cut before the next record."""
    from mlops_cli import StateError

    root = tmp_path / "proj"
    project = running_test(str(root))
    _record_each(project, 10.0)
    log = root / "logs" / "ab" / "t.jsonl"
    backup = tmp_path / "backup.jsonl"
    os.link(log, backup)
    before = backup.read_bytes()
    with pytest.raises(StateError, match="2 hard links"):
        project.ab.record_result("t", "control", 11.0, 0.8, False)
    assert backup.read_bytes() == before
    backup.unlink()
    with open(log, "ab") as f:
        f.write(b'{"ts": "2026-12-0')  # a writer that died mid-line
    project.ab.record_result("t", "control", 12.0, 0.8, False)
    assert [r["inference_time_ms"] for r in _lines(log)] == [10.0, 12.0]


def test_a_forked_child_appends_through_its_own_descriptor(tmp_path: Path) -> None:
    """A child never shares the parent's open log (an flock on a shared open file would not
    exclude the parent): while the parent holds the log's lock, the child's append waits for
    it and times out, recording nothing."""
    import fcntl

    from mlops_cli import jsonl

    root = tmp_path / "proj"
    project = running_test(str(root))
    project.set_setting("lock_timeout_s", "0.2")
    project.ab.record_result("t", "control", 10.0, 0.8, False)  # the log is open here
    log = root / "logs" / "ab" / "t.jsonl"
    fd = jsonl.WRITER.log(log, root).fd()  # the descriptor the process appends through
    fcntl.flock(fd, fcntl.LOCK_EX)
    pid = os.fork()
    if pid == 0:  # the child: 3 when its append timed out, 4 when it went through
        code = 4
        try:
            project.ab.record_result("t", "control", 11.0, 0.8, False)
        except Exception as exc:
            code = 3 if type(exc).__name__ == "LockTimeoutError" else 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    assert os.waitstatus_to_exitcode(status) == 3
    assert [r["inference_time_ms"] for r in _lines(log)] == [10.0]


# -- routing and the versions handed out, bound once per snapshot ------------------------------


def test_the_bound_router_routes_by_the_documented_bucket(tmp_path: Path) -> None:
    """treatment when the first 8 bytes of sha256("test:user"), big-endian, modulo 10,000 are
    below treatment_traffic_pct x 100 (computed here from that definition)."""
    import hashlib

    project = running_test(str(tmp_path / "proj"))  # 10% treatment
    treated = 0
    for i in range(2000):
        user = f"user-{i}"
        digest = hashlib.sha256(f"t:{user}".encode()).digest()
        expected = "treatment" if int.from_bytes(digest[:8], "big") % 10000 < 1000 else "control"
        assignment = project.ab.assign_variant("gnn", user)
        assert (assignment.name, assignment.test) == (expected, "t")
        assert assignment.version == ("v1.1.0" if expected == "treatment" else "v1.0.0")
        treated += expected == "treatment"
    assert 0 < treated < 2000


def test_each_request_gets_its_own_model_version(tmp_path: Path) -> None:
    """The version handed out is built once per snapshot, but each request gets its own
    object: a change a caller makes to one never reaches the next request or the registry."""
    project = running_test(str(tmp_path / "proj"))
    users = [f"u{i}" for i in range(40)]
    first, second = (
        next(a for a in map(lambda u: project.ab.assign_variant("gnn", u), users)
             if a.name == "control")
        for _ in range(2)
    )
    assert first.model is not second.model and first.model == second.model
    first.model.config["changed"] = True
    first.model.tags["changed"] = "yes"
    assert second.model.config == {} and second.model.tags == {}
    assert project.registry.get_version("gnn", "v1.0.0").config == {}


def _open_under(top: Path) -> list[str]:
    """The files under `top` this process holds open."""
    found = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # the listing's own descriptor, gone
        if target.startswith(str(top)):
            found.append(target)
    return found


def test_a_closed_project_holds_no_log_open(tmp_path: Path) -> None:
    """The per-request appends keep their logs open; closing the project lets them go (a
    process that opens many projects one after another does not pile up descriptors)."""
    root = tmp_path / "p"
    project = Project.init(root)
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    for _ in range(3):
        project.registry.update_metrics("gnn", "1.0.0", 12.0, 0.8)
        project.drift_detector("gnn", "1.0.0").add_production_sample(0.5, 0.9)
    assert any(p.endswith(".jsonl") for p in _open_under(root))
    project.close()
    assert _open_under(root) == []
    again = Project.open(root)  # appends again after another store's close
    again.registry.update_metrics("gnn", "1.0.0", 12.0, 0.8)
    assert again.registry.get_version("gnn", "1.0.0").requests == 4
    again.close()


def test_a_log_dropped_without_close_lets_its_descriptor_go(tmp_path: Path) -> None:
    """A store never closed (a Project not used as a context manager) must not keep its open
    logs' descriptors for the life of the process."""
    import gc

    from mlops_cli.jsonl import AppendLog

    log = AppendLog(tmp_path / "a.jsonl", tmp_path)
    log.append(b'{"x":1}\n', 5.0)
    fd = log.fd()
    os.fstat(fd)  # open
    del log
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert (tmp_path / "a.jsonl").read_bytes() == b'{"x":1}\n'
