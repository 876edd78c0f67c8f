"""The PostgreSQL store against a real server (tests/pg_server.py starts it)."""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_cli.batch import BatchError
from mlops_cli.errors import (
    ConflictError,
    MlopsError,
    ProjectNotFoundError,
    ServiceError,
    StateError,
)
from mlops_cli.records import validate_request, validate_sample
from mlops_cli.state import ModelType, VersionRecord

from . import pg_server as fixtures
from .conftest import HANG_S, finishes
from .pg_server import Server

pg_server = fixtures.pg_server  # the session's server
pg_url = fixtures.pg_url  # a new database on it

pytestmark = pytest.mark.postgres
DOCS = Path(__file__).parent.parent / "docs" / "postgresql.md"
SPAWN = multiprocessing.get_context("spawn")


def store_for(url: str) -> Any:
    from mlops_cli.store.postgres import PostgresStore

    return PostgresStore(url)


@pytest.fixture
def store(pg_url: str) -> Any:
    from mlops_cli.store.postgres import PostgresStore

    s = PostgresStore.init(pg_url)
    yield s
    s.close()


def version(path: str = "m.pkl") -> VersionRecord:
    return VersionRecord(path, {}, 0.0, "2026-01-01T00:00:00Z", "", {}, None, None, False)


def requests_jsonl(rows: list[dict[str, Any]]) -> bytes:
    import orjson

    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def random_requests(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "variant": "treatment" if rng.random() < 0.3 else "control",
            "user_id": int(rng.integers(0, 50)),
            "inference_time_ms": float(rng.gamma(2.0, 10.0)),
            "confidence": float(rng.random()),
            "error": bool(rng.random() < 0.05),
        }
        for _ in range(n)
    ]


# -- registry ----------------------------------------------------------------------------------


def test_init_creates_default_registry_and_refuses_a_second_init(pg_url: str) -> None:
    from mlops_cli.schema import DEFAULT_SETTINGS
    from mlops_cli.store.postgres import PostgresStore

    store = PostgresStore.init(pg_url)
    state = store.read()
    assert state.settings.data == DEFAULT_SETTINGS
    assert state.models == {} and state.ab_tests == {}
    with store.transaction() as txn:
        txn.state.models["m"] = ModelType("m", versions={"1.0.0": version()})
    store.append("drift/m/1.0.0/production", {"prediction": 1.0, "confidence": 0.5})
    store.close()
    with pytest.raises(ConflictError, match="force=True"):
        PostgresStore.init(pg_url)
    with pytest.raises(ConflictError, match="old_logs='delete'"):  # records would be inherited
        PostgresStore.init(pg_url, force=True)
    assert PostgresStore(pg_url).count("drift/m/1.0.0/production") == 1
    store = PostgresStore.init(pg_url, force=True, old_logs="delete")
    assert store.read().models == {}
    assert store.count("drift/m/1.0.0/production") == 0 and store.streams() == []
    store.close()


def test_transaction_commits_state_and_events_together(store: Any) -> None:
    with store.transaction() as txn:
        model = txn.state.models["fraud"] = ModelType("fraud")
        model.versions["1.0.0"] = version("a.pkl")
        model.versions["1.1.0"] = version("b.pkl")
        model.make_champion("1.0.0")
        model.make_champion("1.1.0")
        txn.state.settings.data["lock_timeout_s"] = 12.5
        txn.event("promoted", "better", model_type="fraud", version="1.1.0")
    state = store.read()
    assert state.models["fraud"].champion == "1.1.0"
    assert state.models["fraud"].champion_history == ["1.0.0"]
    assert list(state.models["fraud"].versions) == ["1.0.0", "1.1.0"]
    assert state.models["fraud"].versions["1.1.0"].traffic_percentage == 100.0
    assert state.settings.lock_timeout_s == 12.5
    (event,) = store.history("events")
    assert event["event"] == "promoted" and event["reason"] == "better"
    assert list(event) == ["ts", "event", "model_type", "version", "actor", "reason"]


def test_transaction_rolls_back_on_exception(store: Any) -> None:
    with store.transaction() as txn:
        txn.state.models["fraud"] = ModelType("fraud", versions={"1.0.0": version()})
    before = store.read().to_doc()
    with pytest.raises(RuntimeError), store.transaction() as txn:
        txn.state.models["fraud"].make_champion("1.0.0")
        del txn.state.models["fraud"].versions["1.0.0"]
        txn.state.models["other"] = ModelType("other")
        txn.event("registered", model_type="other")
        raise RuntimeError("boom")
    assert store.read().to_doc() == before
    assert store.history("events") == []


def _add_versions(url: str, worker: int, count: int) -> None:
    store = store_for(url)
    for i in range(count):
        with store.transaction() as txn:
            model = txn.state.models["m"]
            model.versions[f"{worker}.{i}.0"] = version()
            counter = model.versions["0.0.1"]
            counter.tags["n"] = str(int(counter.tags.get("n", "0")) + 1)
            txn.event("registered", model_type="m", version=f"{worker}.{i}.0")
    store.close()


def test_concurrent_transactions_lose_no_update(store: Any) -> None:
    with store.transaction() as txn:
        txn.state.models["m"] = ModelType("m", versions={"0.0.1": version()})
    workers, each = 4, 10
    procs = [
        SPAWN.Process(target=_add_versions, args=(store.location, w + 1, each))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    model = store.read().models["m"]
    assert len(model.versions) == 1 + workers * each
    assert model.versions["0.0.1"].tags["n"] == str(workers * each)
    assert store.count("events") == workers * each


def _host(url: str, host: int, writers: int, each: int) -> None:
    """A service host: `writers` threads recording requests through one store."""
    import threading

    store = store_for(url)

    def write(thread: int) -> None:
        for i in range(each):
            store.append(
                "ab/t",
                {
                    "ts": "2026-01-01T00:00:00Z",
                    "variant": "control" if i % 2 else "treatment",
                    "user_id": f"h{host}-t{thread}-{i}",
                    "inference_time_ms": 1.0,
                    "confidence": 0.5,
                    "error": False,
                },
            )

    threads = [threading.Thread(target=write, args=(t,)) for t in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()


def _pipeline(url: str, rounds: int) -> None:
    store = store_for(url)
    for _ in range(rounds):
        with store.transaction() as txn:
            model = txn.state.models["m"]
            other = "2.0.0" if model.champion == "1.0.0" else "1.0.0"
            model.make_champion(other)
            txn.event("promoted", model_type="m", version=other)
        store.summary("ab/t", "variant")
    store.close()


def test_four_hosts_with_eight_writers_and_two_pipelines(store: Any) -> None:
    with store.transaction() as txn:
        model = txn.state.models["m"] = ModelType("m")
        model.versions["1.0.0"] = version()
        model.versions["2.0.0"] = version()
        model.make_champion("1.0.0")
    hosts = [SPAWN.Process(target=_host, args=(store.location, h, 8, 400)) for h in range(4)]
    pipelines = [SPAWN.Process(target=_pipeline, args=(store.location, 15)) for _ in range(2)]
    for p in hosts + pipelines:
        p.start()
    for p in hosts + pipelines:
        p.join(180)
        assert p.exitcode == 0
    summary = store.summary("ab/t", "variant")
    assert sum(m.n for m in summary.arms.values()) == 4 * 8 * 400 == store.count("ab/t")
    assert len(store.summary("ab/t", "user_id").arms) == 4 * 8 * 400  # none doubled
    model = store.read().models["m"]
    assert len(model.champion_history) == 30  # every promotion kept, none lost
    assert model.champion == "1.0.0"  # 30 alternations from 1.0.0
    assert [v.traffic_percentage for v in model.versions.values()] == [100.0, 0.0]
    assert store.count("events") == 30


def test_lock_timeout_is_a_clean_error(store: Any) -> None:
    from mlops_cli.errors import LockTimeoutError

    with store.transaction() as txn:
        txn.state.settings.data["lock_timeout_s"] = 0.2
    other = store_for(store.location)
    other.read()  # learns lock_timeout_s
    def wait_for_the_lock() -> None:
        with other.transaction():
            pass

    with store.transaction(), pytest.raises(LockTimeoutError, match="lock_timeout_s"):
        finishes(wait_for_the_lock)  # (held until this block ends: unbounded, it would hang)
    other.close()


def test_clock_is_the_database_clock(store: Any) -> None:
    import psycopg

    with psycopg.connect(store.location) as conn:
        before = conn.execute("SELECT clock_timestamp()").fetchone()
        now = store.clock()
        after = conn.execute("SELECT clock_timestamp()").fetchone()
    assert before is not None and after is not None
    # The server's time estimated from a measured offset (its error: half the round trip of
    # the measurement, which load can stretch): between the two reads, give or take a second.
    slack = timedelta(seconds=1)
    assert before[0] - slack <= now <= after[0] + slack
    with store.transaction() as txn:
        first = txn.clock()
        time.sleep(0.01)
        assert txn.clock() == first  # the transaction's now()


# -- appends -----------------------------------------------------------------------------------


def test_batch_all_or_nothing_and_once_per_id(store: Any) -> None:
    rows = random_requests(50)
    data = requests_jsonl(rows)
    bad = data.replace(b'"confidence":', b'"confidence":7,"x":', 1)
    bad += b"not json\n"
    with pytest.raises(BatchError, match=r"2 bad line\(s\), nothing recorded: line 1: .*line 51"):
        store.append_batch("ab/t", bad, validate_request, "b1")
    assert store.count("ab/t") == 0
    result = store.append_batch("ab/t", data, validate_request, "b1")
    assert (result.recorded, result.already_recorded) == (50, 0)
    again = store.append_batch("ab/t", data, validate_request, "b1")
    assert (again.recorded, again.already_recorded) == (0, 50)
    assert store.count("ab/t") == 50
    hashed = store.append_batch("ab/t", data, validate_request, None)
    assert hashed.recorded == 50 and store.append_batch(
        "ab/t", data, validate_request, None
    ) == type(hashed)(hashed.batch_id, 0, 50)
    with pytest.raises(MlopsError, match="no records"):
        store.append_batch("ab/t", b"\n\n", validate_request, "empty")


def test_batch_stamps_lines_without_ts_and_keeps_given_ones(store: Any) -> None:
    data = (
        b'{"prediction": 1.5, "confidence": 0.5}\n'
        b'{"prediction": 2.5, "confidence": 0.25, "ts": "2025-01-02T03:04:05Z"}\n'
    )
    store.append_batch("drift/m/1.0.0/reference", data, validate_sample, None)
    first, second = store.history("drift/m/1.0.0/reference")
    assert abs((datetime.fromisoformat(first["ts"]) - store.clock()).total_seconds()) < 5
    assert second == {"ts": "2025-01-02T03:04:05.000000Z", "prediction": 2.5, "confidence": 0.25}


def test_batch_cap_refuses_and_records_nothing(store: Any) -> None:
    data = b'{"prediction": 1, "confidence": 0.5}\n' * 6
    stream = "drift/m/1.0.0/reference"
    store.append_batch(stream, data, validate_sample, "a", cap=10)
    with pytest.raises(MlopsError, match="holds 6 of 10 records; adding 6 exceeds it"):
        store.append_batch(stream, data, validate_sample, "b", cap=10)
    assert store.count(stream) == 6
    assert (
        store.append_batch(stream, data[: len(data) // 3], validate_sample, "b", cap=10).recorded
        == 2
    )


def _batch_worker(url: str, data: bytes, batch_id: str, out: Any) -> None:
    store = store_for(url)
    result = store.append_batch("ab/t", data, validate_request, batch_id)
    out.put((result.recorded, result.already_recorded))
    store.close()


def test_the_same_batch_from_two_processes_counts_once(store: Any) -> None:
    data = requests_jsonl(random_requests(20000, seed=3))
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_batch_worker, args=(store.location, data, "same", out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    assert results == [(0, 20000), (20000, 0)]
    assert store.count("ab/t") == 20000


def wait_for(predicate: Any, timeout: float = 60.0) -> bool:
    """Whether `predicate()` became true before a generous deadline (which only catches hangs)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_append_buffers_until_size_time_flush_and_exit(store: Any) -> None:
    from mlops_cli.store.postgres import PostgresStore

    reader = store_for(store.location)
    stream = "metrics/m/1.0.0"
    record = {"ts": "2026-01-01T00:00:00Z", "inference_time_ms": 1.0, "confidence": 0.5}
    by_size = PostgresStore(store.location, flush_records=10, flush_seconds=3600)
    for _ in range(9):
        by_size.append(stream, record)
    assert reader.count(stream) == 0  # buffered in the writer's process (no time flush)
    by_size.append(stream, record)
    assert wait_for(lambda: reader.count(stream) == 10)  # flushed by size, in the background
    by_time = PostgresStore(store.location, flush_records=10**6, flush_seconds=0.05)
    by_time.append(stream, record)
    assert wait_for(lambda: reader.count(stream) == 11)  # by time
    by_size.append(stream, record)
    by_size.flush()
    assert reader.count(stream) == 12  # on flush()
    code = (
        "import sys; from mlops_cli.store.postgres import PostgresStore\n"
        "s = PostgresStore(sys.argv[1])\n"
        "for _ in range(7): s.append('metrics/m/1.0.0', "
        "{'inference_time_ms': 2.0, 'confidence': 0.5, 'error': True})\n"
    )
    subprocess.run([sys.executable, "-c", code, store.location], check=True, timeout=60)
    assert reader.count(stream) == 19  # at exit
    assert reader.summary(stream, None).arm("all").errors == 7
    for s in (reader, by_size, by_time):
        s.close()


def test_buffered_records_are_not_flushed_into_a_transaction_that_rolls_back(store: Any) -> None:
    stream = "drift/m/1.0.0/production"
    store.append(stream, {"prediction": 1.0, "confidence": 0.5})
    with pytest.raises(RuntimeError), store.transaction():
        store.count(stream)  # a read flushes first, but not inside the registry transaction
        raise RuntimeError("boom")
    store.flush()
    other = store_for(store.location)
    assert other.count(stream) == 1
    other.close()


def test_a_forked_child_writes_its_own_records_not_the_parents(store: Any) -> None:
    import os

    stream = "drift/m/1.0.0/production"
    store.append(stream, {"prediction": 1.0, "confidence": 0.5})
    pid = os.fork()
    if pid == 0:  # the child: its own connection and buffer
        code = 1
        try:
            store.append(stream, {"prediction": 2.0, "confidence": 0.5})
            store.close()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert sorted(store.samples(stream).prediction.tolist()) == [1.0, 2.0]


def test_appends_while_the_server_is_away_are_kept_and_written_later(
    pg_server: Server, store: Any, tmp_path: Path
) -> None:
    from mlops_cli.errors import BufferFullError
    from mlops_cli.store.postgres import PostgresStore

    away = PostgresStore(store.location, flush_records=10, max_records=30, spool_dir=tmp_path)
    stream = "metrics/m/1.0.0"
    record = {"inference_time_ms": 1.0, "confidence": 0.5, "error": False}
    away.read()
    pg_server.stop()
    try:
        for _ in range(30):
            away.append(stream, record)  # flushes fail in the background: kept
        with pytest.raises(BufferFullError, match=r"^30 records wait for the PostgreSQL store"):
            away.append(stream, record)  # the buffer is full: refused, not kept
        with pytest.raises(ServiceError):
            away.flush()
    finally:
        pg_server.start()
    away.flush()
    assert away.count(stream) == 30
    away.close()


def test_checks_and_events_are_written_at_once_and_read_since(store: Any) -> None:
    stream = "drift/m/1.0.0/checks"
    now = store.clock()
    for days in (10, 3, 1):
        when = (now - timedelta(days=days)).isoformat().replace("+00:00", "Z")
        store.append(stream, {"ts": when, "status": "active", "score": days / 10, "level": "ok"})
    other = store_for(store.location)
    assert [r["score"] for r in other.history(stream)] == [1.0, 0.3, 0.1]
    assert [r["score"] for r in other.history(stream, since=now - timedelta(days=7))] == [0.3, 0.1]
    assert [r["score"] for r in other.history(stream, limit=2)] == [0.3, 0.1]
    assert list(other.history(stream)[0]) == ["ts", "status", "score", "level"]
    other.close()


def test_replace_and_position(store: Any) -> None:
    stream = "drift/m/1.0.0/reference"
    store.append_batch(stream, b'{"prediction": 1, "confidence": 0.5}\n' * 5, validate_sample, None)
    assert (store.count(stream), store.position(stream)) == (5, 5)
    n = store.replace(stream, b'{"prediction": 2, "confidence": 0.5}\n' * 3, validate_sample)
    assert n == 3 and store.count(stream) == 3 and store.position(stream) == 8
    assert store.samples(stream).prediction.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(BatchError):
        store.replace(stream, b'{"prediction": "x", "confidence": 0.5}\n', validate_sample)
    assert store.count(stream) == 3


# -- reads -------------------------------------------------------------------------------------


def test_summary_equals_a_numpy_recomputation(store: Any) -> None:
    rows = random_requests(5000, seed=7)
    store.append_batch("ab/t", requests_jsonl(rows[:4000]), validate_request, None)
    for row in rows[4000:]:
        store.append("ab/t", {**row, "ts": "2026-01-01T00:00:00Z"})
    summary = store.summary("ab/t", "variant")
    per_user = store.summary("ab/t", "user_id")
    assert set(summary.arms) == {"control", "treatment"}
    for key, arms, field in (
        ("variant", summary.arms, "variant"),
        ("user", per_user.arms, "user_id"),
    ):
        assert key
        for name, m in arms.items():
            mine = [r for r in rows if str(r[field]) == name]
            t = np.array([r["inference_time_ms"] for r in mine])
            c = np.array([r["confidence"] for r in mine])
            assert m.n == len(mine)
            assert m.errors == sum(r["error"] for r in mine)
            assert m.confidence_sum == pytest.approx(c.sum(), rel=1e-12)
            assert m.confidence_sum_squares == pytest.approx((c * c).sum(), rel=1e-12)
            assert m.time_sum == pytest.approx(t.sum(), rel=1e-12)
            assert m.time_sum_squares == pytest.approx((t * t).sum(), rel=1e-12)
    assert sum(m.n for m in per_user.arms.values()) == 5000
    only = store.summary("ab/t", "variant", keys=("treatment",))
    assert set(only.arms) == {"treatment"}
    assert store.summary("ab/other", "variant").arms == {}


def test_samples_last_and_first(store: Any) -> None:
    stream = "drift/m/1.0.0/production"
    values = np.arange(3000, dtype=float)
    data = b"".join(b'{"prediction": %d, "confidence": 0.5}\n' % v for v in range(2500))
    store.append_batch(stream, data, validate_sample, None)
    for v in range(2500, 3000):
        store.append(stream, {"prediction": float(v), "confidence": 1.0})
    last = store.samples(stream, last=1000)
    assert last.prediction.tolist() == values[-1000:].tolist()
    assert last.confidence.tolist() == [0.5] * 500 + [1.0] * 500
    assert store.samples(stream, first=10).prediction.tolist() == values[:10].tolist()
    assert len(store.samples(stream)) == 3000
    assert len(store.samples("drift/m/9.9.9/production", last=10)) == 0


# -- claims ------------------------------------------------------------------------------------


def _claim_worker(url: str, out: Any) -> None:
    store = store_for(url)
    out.put(store.claim("hook/m/1.0.0/retrain", 60))
    store.close()


def test_claim_is_true_exactly_once_among_four_processes(store: Any) -> None:
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=_claim_worker, args=(store.location, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(results) == [False, False, False, True]
    assert store.claim("short", 3600) and not store.claim("short", 3600)
    assert store.claim("brief", 0.05)  # then again once its time to live has passed:
    deadline = time.monotonic() + HANG_S  # (a deadline that only catches a claim kept forever)
    while not store.claim("brief", 0.05):
        assert time.monotonic() < deadline
        time.sleep(0.05)


# -- schema, connections, roles ----------------------------------------------------------------


def test_a_store_at_another_schema_version_is_refused(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_cli.store import postgres

    with pytest.raises(ProjectNotFoundError, match="init"):
        postgres.PostgresStore(pg_url)
    postgres.PostgresStore.init(pg_url).close()
    latest = postgres.LATEST
    later = [*postgres.connection._migrations(), (latest + 1, "CREATE TABLE extra (x int);")]
    monkeypatch.setattr(postgres.connection, "_migrations", lambda: later)
    for module in (postgres, postgres.connection, postgres.store):
        monkeypatch.setattr(module, "LATEST", latest + 1)
    with pytest.raises(
        StateError, match=rf"schema {latest}; this mlops needs {latest + 1}: run `mlops -C .* db upgrade"
    ):
        postgres.PostgresStore(pg_url)
    assert postgres.upgrade(pg_url) == (latest, latest + 1)
    assert postgres.upgrade(pg_url) == (latest + 1, latest + 1)
    postgres.PostgresStore(pg_url).close()
    for module in (postgres, postgres.connection, postgres.store):
        monkeypatch.setattr(module, "LATEST", latest)
    with pytest.raises(StateError, match="newer than this mlops"):
        postgres.PostgresStore(pg_url)


def test_concurrent_upgrades_apply_each_migration_once(pg_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    from mlops_cli.store import postgres

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: postgres.upgrade(pg_url), range(4)))
    assert sorted(results) == [(0, postgres.LATEST)] + [(postgres.LATEST, postgres.LATEST)] * 3
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
    shipped = Path(postgres.__file__).parent / "migrations"
    assert rows == [(int(p.name[:4]),) for p in sorted(shipped.glob("*.sql"))]


def test_an_unreachable_server_is_a_clean_error_within_5_s() -> None:
    import socket

    from mlops_cli.store.postgres import PostgresStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (
        f"postgresql://u:secret@127.0.0.1:{port}/db",  # nothing listens
        "postgresql://u:secret@10.255.255.1:5432/db",  # nothing answers
    ):
        # (unbounded, the connection to an address that never answers waits out TCP's
        # retries, over 2 minutes)
        with pytest.raises(ServiceError, match="cannot connect") as info:
            finishes(lambda url=url: PostgresStore(url), within=60)
        assert "secret" not in str(info.value)


def test_a_restarted_server_is_a_clean_error_then_the_retry_succeeds(
    pg_server: Server,
    store: Any,
) -> None:
    store.read()
    pg_server.stop()
    pg_server.start()
    with pytest.raises(ServiceError, match="retry"):
        store.read()
    assert store.read().models == {}


def _docs_sql(section: str) -> str:
    text = DOCS.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```sql\n(.*?)```", body, re.S))


def test_the_service_role_appends_and_reads_but_cannot_change_the_registry(
    pg_server: Server,
    store: Any,
) -> None:
    import psycopg

    from mlops_cli.store.postgres import PostgresStore

    with store.transaction() as txn:
        txn.state.models["m"] = ModelType("m", versions={"1.0.0": version()})
    grants = _docs_sql("Roles").replace("CHANGE-ME", "pw")
    with psycopg.connect(store.location, autocommit=True) as conn:
        for statement in grants.split(";"):
            if statement.strip():
                # Roles are cluster-wide: an earlier test may have made them.
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(statement)
    db = store.location.rsplit("/", 1)[1]
    service = PostgresStore(pg_server.url(db, "mlops_service"))
    service.append("drift/m/1.0.0/production", {"prediction": 1.0, "confidence": 0.5})
    service.append(  # a sample with its input features
        "drift/m/1.0.0/production", {"prediction": 1.0, "confidence": 0.5, "features": {"a": 1}}
    )
    service.append_batch("ab/t", requests_jsonl(random_requests(3)), validate_request, None)
    service.flush()
    with pytest.raises(ServiceError, match="permission denied for table feature_profiles"):
        service.save_profile("drift/m/1.0.0/reference", {"position": 1, "features": {}})
    assert service.read().models["m"].champion is None
    with pytest.raises(ServiceError, match="permission denied"), service.transaction() as txn:
        txn.state.models["m"].make_champion("1.0.0")
    service.close()
    assert store.read().models["m"].champion is None
    pipeline = PostgresStore(pg_server.url(db, "mlops_pipeline"))
    with pipeline.transaction() as txn:
        txn.state.models["m"].make_champion("1.0.0")
    pipeline.save_profile("drift/m/1.0.0/reference", {"position": 1, "features": {}})
    pipeline.save_profile("drift/m/1.0.0/reference", {"position": 2, "features": {}})
    assert pipeline.load_profile("drift/m/1.0.0/reference") == {"position": 2, "features": {}}
    assert [r for c in pipeline.feature_chunks("drift/m/1.0.0/production") for r in c] == [
        None,
        {"a": 1},
    ]
    pipeline.close()
    assert store.read().models["m"].champion == "1.0.0"


def _kill_during_copy(url: str, data: bytes) -> None:
    import os
    import signal

    from mlops_cli.store import postgres

    original = postgres.copy._validated_chunk
    calls = []

    def slow(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first chunk is in the COPY: die
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args)

    postgres.copy._validated_chunk = slow
    store_for(url).append_batch("ab/t", data, validate_request, "k9")


def test_kill_9_during_a_batch_leaves_nothing_and_the_retry_counts_once(store: Any) -> None:
    from mlops_cli.store import postgres

    data = requests_jsonl(random_requests(80000, seed=5))
    assert len(data) > 2 * postgres.copy._CHUNK_BYTES
    proc = SPAWN.Process(target=_kill_during_copy, args=(store.location, data))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -9
    assert store.count("ab/t") == 0  # (uncommitted, whether or not the server noticed yet)
    import psycopg

    with psycopg.connect(store.location) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
    assert store.append_batch("ab/t", data, validate_request, "k9").recorded == 80000
    assert store.append_batch("ab/t", data, validate_request, "k9").already_recorded == 80000
    assert store.count("ab/t") == 80000


def test_import_of_the_package_does_not_import_psycopg() -> None:
    code = "import mlops_cli, mlops_cli.store.base, sys; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_timestamps_are_utc(store: Any) -> None:
    store.append("events", {"ts": "2026-01-01T01:00:00+01:00", "event": "x", "actor": "a"})
    (row,) = store.history("events", since=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert row["ts"] == "2026-01-01T01:00:00+01:00"  # the document as written


def test_store_copy_carries_archived_tests_and_events_both_ways(
    pg_url: str, tmp_path: Path
) -> None:
    from mlops_cli import ABTestConfig, ModelVersion, Project
    from mlops_cli.project import copy_project

    source = Project.init(tmp_path / "src")
    for v in ("1.0.0", "1.1.0"):
        source.registry.register_version(ModelVersion("gnn", v, model_path="m.pt"))
    source.ab.start_test(ABTestConfig("done", "gnn", treatment_version="1.1.0"))
    source.ab.finalize_test("done", "rollback")
    source.ab.start_test(ABTestConfig("live", "gnn", treatment_version="1.1.0"))
    events = [e.to_dict() for e in source.registry.history()]
    for location in (pg_url, str(tmp_path / "back")):
        copy_project(source, location)
        target = Project.open(location)
        archived = target.store.archived_test("done")
        assert archived == source.store.archived_test("done")
        assert list(target.store.read().ab_tests) == ["live"]
        assert [e.to_dict() for e in target.registry.history()] == events
        source = target


def test_reading_the_registry_does_not_scan_archived_tests(pg_url: str) -> None:
    """Finished tests stay in ab_tests (the archive); the registry reads the running ones
    through the partial index, so its cost does not grow with them."""
    import psycopg

    from mlops_cli import ABTestConfig, ModelVersion, Project
    from mlops_cli.state import ABTest

    project = Project.init(pg_url)
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="m.pt"))
    project.ab.start_test(ABTestConfig("first", "gnn", treatment_version="1.1.0"))
    done = project.ab.finalize_test("first", "rollback")
    with project.store.transaction() as txn:
        for i in range(20_000):
            txn.state.ab_tests[f"t{i}"] = ABTest(**{**done.to_dict(), "name": f"t{i}"})
    assert project.store.read().ab_tests == {}
    assert len(project.store.archived_tests()) == 20_001
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ANALYZE ab_tests")
        plan = "\n".join(
            str(row[0])
            for row in conn.execute("EXPLAIN SELECT * FROM ab_tests WHERE status = 'running'")
        )
    assert "ab_tests_running" in plan and "Seq Scan" not in plan, plan


def _roles(store: Any) -> None:
    """The documented roles, made on the test server (cluster-wide: maybe made before)."""
    import psycopg

    grants = _docs_sql("Roles").replace("CHANGE-ME", "pw")
    with psycopg.connect(store.location, autocommit=True) as conn:
        for statement in grants.split(";"):
            if statement.strip():
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(statement)


def test_the_service_role_fills_the_reference_but_cannot_replace_it(
    pg_server: Server, store: Any
) -> None:
    """A service fills the reference sample by sample (the seed's add_reference_sample) until
    it is full; replacing it is the pipeline's: a compromised service cannot poison it."""
    import warnings

    from mlops_cli import Project

    with store.transaction() as txn:
        txn.state.models["m"] = ModelType("m", versions={"1.0.0": version()})
        txn.state.settings.drift["reference_size"] = 3
    _roles(store)
    db = store.location.rsplit("/", 1)[1]
    reference = "drift/m/1.0.0/reference"
    service = Project.open(pg_server.url(db, "mlops_service"))
    try:
        detector = service.drift_detector("m", "1.0.0")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(5):
                detector.add_reference_sample(float(i), 0.5)
                service.store.flush()
        assert [str(w.message) for w in caught] == [
            "the reference of m 1.0.0 is full (3 samples, drift.reference_size): further "
            "reference samples are ignored"
        ]
        assert store.count(reference) == 3
        poison = b'{"prediction": 99.0, "confidence": 0.01}\n'
        with pytest.raises(ServiceError, match="permission denied for table drift_samples"):
            detector.set_reference(poison, replace=True)
        with pytest.raises(ServiceError, match="permission denied"):
            service.store.replace(reference, poison, validate_sample)
    finally:
        service.store.close()
    import psycopg

    # With the service's own credentials: no rows before the reference (ids are not its to
    # choose), no deletes; appending (what it may do) lands after the first three.
    with (
        psycopg.connect(pg_server.url(db, "mlops_service"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(
            "INSERT INTO drift_samples (id, model_type, version, kind, prediction, "
            "confidence, ts) OVERRIDING SYSTEM VALUE VALUES "
            "(-1, 'm', '1.0.0', 'reference', 99, 0.01, now())"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM drift_samples")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE drift_samples SET prediction = 99")
        conn.execute(
            "INSERT INTO drift_samples (model_type, version, kind, prediction, confidence, ts) "
            "VALUES ('m', '1.0.0', 'reference', 99, 0.01, now())"
        )
    assert list(store.samples(reference, first=3).prediction) == [0.0, 1.0, 2.0]
    with psycopg.connect(store.location, autocommit=True) as conn:
        conn.execute("DELETE FROM drift_samples WHERE prediction = 99")
    assert store.count(reference) == 3
    assert list(store.samples(reference).prediction) == [0.0, 1.0, 2.0]
    pipeline = Project.open(pg_server.url(db, "mlops_pipeline"))
    assert pipeline.drift_detector("m", "1.0.0").set_reference(poison, replace=True) == 1
    pipeline.store.close()
    assert list(store.samples(reference).prediction) == [99.0]


def test_a_connection_lost_during_a_batch_is_one_error_line(store: Any, tmp_path: Path) -> None:
    """The server ends the session mid-COPY: the command prints one `error:` line (psycopg's
    own "error ignored terminating <psycopg.Copy>" warning is not printed) and records
    nothing."""
    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.open(store.location)
    project.registry.register_version(ModelVersion("m", "1.0.0", model_path="m.pt"))
    project.registry.register_version(ModelVersion("m", "1.1.0", model_path="m.pt"))
    project.ab.start_test(ABTestConfig("t", "m", treatment_version="1.1.0"))
    project.store.close()
    batch = tmp_path / "batch.jsonl"
    batch.write_bytes(requests_jsonl(random_requests(200)))
    script = f"""
import socket, sys
from mlops_cli.store.postgres import copy
from mlops_cli.cli import main
copy._CHUNK_BYTES = 1024
validated, copying, calls = copy._validated_chunk, copy._copy_validated, []
def capture(cur, *args):
    calls.append(cur)
    return copying(cur, *args)
def cut(*args):
    calls.append(None)
    if len(calls) == 3:  # the first chunk is in the COPY: the network goes away
        fd = calls[0].connection.pgconn.socket
        socket.socket(fileno=fd).close()  # the connection is gone, as on a network loss
    return validated(*args)
copy._copy_validated, copy._validated_chunk = capture, cut
sys.argv = ["mlops", "-C", {store.location!r}, "ab", "record", "t", "--file", {str(batch)!r}]
main()
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "lost the PostgreSQL store" in lines[0], lines[0]
    fresh = store_for(store.location)
    assert fresh.count("ab/t") == 0
    fresh.close()


OLD_GRANTS = """
CREATE ROLE mlops_service LOGIN PASSWORD 'pw';
CREATE ROLE mlops_pipeline LOGIN PASSWORD 'pw';
GRANT USAGE ON SCHEMA public TO mlops_service, mlops_pipeline;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO mlops_service, mlops_pipeline;
GRANT INSERT ON requests, metrics, drift_samples, batches TO mlops_service, mlops_pipeline;
GRANT UPDATE (records) ON batches TO mlops_service, mlops_pipeline;
GRANT INSERT, UPDATE ON stream_counts TO mlops_service, mlops_pipeline;
"""


def test_the_documented_upgrade_of_the_grants_lets_services_append_batches_again(
    pg_server: Server, store: Any
) -> None:
    """Roles made with the grants of store schema 3: after the upgrade's statements (docs,
    Migrations) a service records a batch with an id and can no longer choose ids."""
    import psycopg

    with store.transaction() as txn:
        txn.state.models["m"] = ModelType("m", versions={"1.0.0": version()})
    db = store.location.rsplit("/", 1)[1]
    with psycopg.connect(store.location, autocommit=True) as conn:
        for statement in OLD_GRANTS.split(";"):
            if statement.strip():
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(statement)
        for statement in _docs_sql("Migrations").split(";"):
            if statement.strip():
                conn.execute(statement)
    service = store_for(pg_server.url(db, "mlops_service"))
    try:
        data = requests_jsonl(random_requests(5))
        assert service.append_batch("ab/t", data, validate_request, "b1").recorded == 5
        assert service.append_batch("ab/t", data, validate_request, "b1").already_recorded == 5
    finally:
        service.close()
    with (
        psycopg.connect(pg_server.url(db, "mlops_service"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(
            "INSERT INTO drift_samples (id, model_type, version, kind, prediction, "
            "confidence, ts) OVERRIDING SYSTEM VALUE VALUES "
            "(-1, 'm', '1.0.0', 'reference', 99, 0.01, now())"
        )


def test_the_service_role_cannot_read_webhook_secrets(pg_server: Server, store: Any) -> None:
    """The documented roles: the pipeline adds an endpoint and delivers (signing with the
    secret); the service reads the registry and the outbox but not the secrets."""
    from mlops_cli import ModelVersion, Project

    from .webhook_receiver import receiver

    _roles(store)
    db = store.location.rsplit("/", 1)[1]
    pipeline = Project.open(pg_server.url(db, "mlops_pipeline"))
    service = Project.open(pg_server.url(db, "mlops_service"))
    try:
        with receiver() as got:
            pipeline.registry.register_version(ModelVersion("m", "1.0.0", model_path="m.pt"))
            hook = pipeline.webhooks.add(got.url, "*")
            pipeline.registry.register_version(ModelVersion("m", "1.1.0", model_path="m.pt"))
            pipeline.registry.set_alias("m", "shadow", "1.1.0")
            assert [r.doc["event"] for r in got.accepted] == ["registered", "alias_set"]
        assert pipeline.store.secret(hook.id) == hook.secret
        assert [w.id for w in service.webhooks.endpoints()] == [hook.id]
        assert len(service.store.outbox_read(0, 10)) == 2
        with pytest.raises(ServiceError, match="permission denied for schema mlops_private"):
            service.store.secret(hook.id)
    finally:
        pipeline.store.close()
        service.store.close()


def test_a_running_test_naming_a_version_the_store_lacks_is_a_state_error(pg_url: str) -> None:
    """Read checks a running test's versions against its type's (a hand-edited database);
    the error names the test, its role and the version."""
    import psycopg

    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.init(pg_url)
    for v in ("1.0.0", "2.0.0"):
        project.registry.register_version(ModelVersion("m", v, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "m", treatment_version="2.0.0"))
    project.close()
    assert Project.open(pg_url).ab.get_test("t").treatment_version == "2.0.0"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE ab_tests SET treatment_version = '9.9.9' WHERE name = 't'")
    with pytest.raises(StateError, match=r"ab_tests\.t\.treatment_version: '9\.9\.9' is not "
                                         r"registered"):
        Project.open(pg_url).registry.list_versions("m")


def test_a_type_read_again_after_changes_elsewhere_equals_a_fresh_read(pg_url: str) -> None:
    """A store holding a type reads back only the versions changed since (their revision): after
    each change made by another process, and after several between two reads, what it holds
    is what a store reading everything finds, in the same order."""
    from mlops_cli import ModelVersion, Project

    holder = Project.init(pg_url)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        holder.registry.register_version(ModelVersion("m", v, model_path=f"/{v}"))
    other = Project.open(pg_url)

    def same() -> None:
        held = holder.store.read().model("m")
        fresh = store_for(pg_url).read().model("m")
        assert list(held.versions) == list(fresh.versions)
        assert held.to_doc() == fresh.to_doc()

    same()
    other.registry.promote_to_champion("m", "1.1.0")
    same()
    other.registry.register_version(ModelVersion("m", "1.3.0", model_path="/new", tags={"a": "b"}))
    other.registry.deprecate("m", "1.2.0")
    other.registry.set_alias("m", "shadow", "1.3.0")
    other.registry.promote_to_champion("m", "1.3.0")
    same()
    assert holder.store.read().model("m").champion == "1.3.0"


def test_a_version_gone_from_a_held_type_is_seen(pg_url: str) -> None:
    """A version removed (or removed and registered again) since a type was read: the changed
    rows alone do not add up, so the type is read whole."""
    import psycopg

    from mlops_cli import ModelVersion, Project

    holder = Project.init(pg_url)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        holder.registry.register_version(ModelVersion("m", v, model_path="/m"))
    assert list(holder.store.read().model("m").versions) == ["1.0.0", "1.1.0", "1.2.0"]
    bump = "UPDATE model_types SET rev = (SELECT rev FROM settings) + 1 WHERE name = 'm'"
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as a writer that removes would
        conn.execute("DELETE FROM versions WHERE version = '1.1.0'")
        conn.execute(bump)
    assert list(holder.store.read().model("m").versions) == ["1.0.0", "1.2.0"]
    with psycopg.connect(pg_url, autocommit=True) as conn:  # 1.0.0 again, now last
        row = conn.execute(
            "SELECT model_path, config, traffic_percentage, registered_at, description, tags, "
            "deprecated FROM versions WHERE version = '1.0.0'"
        ).fetchone()
        conn.execute("DELETE FROM versions WHERE version = '1.0.0'")
        conn.execute(
            "INSERT INTO versions (model_type, version, model_path, config, traffic_percentage, "
            "registered_at, description, tags, deprecated, rev) "
            "VALUES ('m', '1.0.0', %s, %s, %s, %s, %s, %s, %s, (SELECT rev FROM settings) + 2)",
            [row[0], psycopg.types.json.Json(row[1]), row[2], row[3], row[4],
             psycopg.types.json.Json(row[5]), row[6]],
        )
        conn.execute(bump.replace("+ 1", "+ 2"))
    assert list(holder.store.read().model("m").versions) == ["1.2.0", "1.0.0"]


def test_a_change_rewrites_only_the_rows_it_changed(pg_url: str) -> None:
    """A promote writes the type row and the two versions whose traffic moved: the other
    versions' rows, and the rows of a type a running test names, keep their xmin (a reader
    holding them reads nothing again)."""
    import psycopg

    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.init(pg_url)
    for t in ("a", "b"):
        for v in ("1.0.0", "1.1.0", "1.2.0"):
            project.registry.register_version(ModelVersion(t, v, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "b", treatment_version="1.1.0"))

    def xmins() -> dict[str, str]:
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(
                "SELECT 'type ' || name, xmin::text FROM model_types UNION ALL "
                "SELECT model_type || ' ' || version, xmin::text FROM versions"
            ).fetchall()
        return dict(rows)

    before = xmins()
    project.registry.promote_to_champion("a", "1.2.0")
    after = xmins()
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["a 1.0.0", "a 1.2.0", "type a"]
