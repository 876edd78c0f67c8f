"""The write rules a service and a pipeline rely on, on each store: bad input changes
nothing, a batch lands whole or not at all and once per id, concurrent writers (threads and
processes) lose nothing, a writer cut short leaves nothing, a held lock is a clean error."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from mlops_cli import (
    ABTestConfig,
    LockTimeoutError,
    MlopsError,
    ModelVersion,
    Project,
    StateError,
    ValidationError,
)

from .conftest import (
    dump,
    jsonl,
    reopen,
    requests_jsonl,
    requests_rows,
    samples_jsonl,
)


def validation_accepts(**fields: Any) -> bool:
    """Whether a request with these fields passes validation (the cause of the two defects
    below: a record PostgreSQL cannot hold must be refused before it is buffered)."""
    from mlops_cli.records import validate_request

    try:
        validate_request({"variant": "control", "inference_time_ms": 1, "confidence": 0.5,
                          **fields})
    except ValidationError:
        return False
    return True


@pytest.fixture
def running(project: Project) -> Project:
    project.ab.start_test(
        ABTestConfig("t", "gnn", treatment_version="1.1.0", treatment_traffic_pct=50)
    )
    project.ab.record_batch("t", requests_jsonl(50, seed=1)[0])
    project.drift_detector("gnn", "1.0.0").record_batch(samples_jsonl(50, seed=2)[0])
    project.registry.update_metrics("gnn", "1.0.0", 10.0, 0.5)
    return project


GOOD_REQUEST = b'{"variant": "control", "inference_time_ms": 5, "confidence": 0.5}\n'
BAD_CALLS: dict[str, Callable[[Project], Any]] = {
    "variant": lambda p: p.ab.record_result("t", "both", 10.0, 0.5),
    "negative time": lambda p: p.ab.record_result("t", "control", -1.0, 0.5),
    "confidence above 1": lambda p: p.ab.record_result("t", "control", 10.0, 1.5),
    "NaN confidence": lambda p: p.ab.record_result("t", "control", 10.0, float("nan")),
    "time without a zone": lambda p: p.ab.record_result(
        "t", "control", 10.0, 0.5, ts="2026-11-01T00:00:00"
    ),
    "batch with a bad last line": lambda p: p.ab.record_batch(
        "t", GOOD_REQUEST * 100 + b'{"variant": "control"}\n'
    ),
    "batch of nothing": lambda p: p.ab.record_batch("t", b"\n\n"),
    "batch that is not JSON": lambda p: p.ab.record_batch("t", b"variant,confidence\n"),
    "metrics of an unknown version": lambda p: p.registry.update_metrics("gnn", "7.0.0", 1.0, 0.5),
    "metrics with an infinite time": lambda p: p.registry.update_metrics(
        "gnn", "1.0.0", float("inf"), 0.5
    ),
    "sample with a NaN prediction": lambda p: p.drift_detector(
        "gnn", "1.0.0"
    ).add_production_sample(float("nan"), 0.5),
    "reference with a bad line": lambda p: p.drift_detector("gnn", "1.0.0").set_reference(
        samples_jsonl(20, seed=3)[0] + b"{}\n"
    ),
    "setting out of range": lambda p: p.set_setting("drift.window_size", "0"),
    "settings weights alone": lambda p: p.set_setting("drift.weights.statistical", "0.5"),
    "registration without a path": lambda p: p.registry.register_version(
        ModelVersion("gnn", "2.0.0", model_path="")
    ),
    "a name reaching outside": lambda p: p.registry.register_version(
        ModelVersion("../gnn", "2.0.0", model_path="m.pt")
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_one_clear_error_and_changes_nothing(running: Project, case: str) -> None:
    before = dump(running)
    with pytest.raises(MlopsError) as err:
        BAD_CALLS[case](running)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
    assert dump(running) == before
    assert dump(reopen(running)) == before


class CutShort(io.RawIOBase):
    """A batch whose sender goes away part-way: the reads fail after `good` bytes."""

    def __init__(self, data: bytes, good: int) -> None:
        self.data, self.good, self.at = data, good, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.at >= self.good:
            raise ConnectionResetError("the sender went away")
        n = min(len(buffer), self.good - self.at, 1 << 16)
        buffer[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def test_a_batch_cut_short_records_nothing_and_its_retry_counts_once(running: Project) -> None:
    data = requests_jsonl(40_000, seed=4)[0]  # several chunks on either store
    before = dump(running)
    # The sender's error propagates (PostgreSQL) or is said as a StateError (directory)
    with pytest.raises((ConnectionResetError, StateError), match="the sender went away"):
        running.ab.record_batch(
            "t", io.BufferedReader(CutShort(data, len(data) * 3 // 4)), batch_id="nightly"
        )
    assert dump(running) == before
    done = running.ab.record_batch("t", io.BytesIO(data), batch_id="nightly")
    again = running.ab.record_batch("t", io.BytesIO(data), batch_id="nightly")
    assert (done.recorded, again.recorded, again.already_recorded) == (40_000, 0, 40_000)
    assert running.ab.evaluate_test("t").requests == 50 + 40_000


SENDER = """
import sys
from mlops_cli import Project
result = Project.open(sys.argv[1]).ab.record_batch("t", open(sys.argv[2], "rb").read(),
                                                     batch_id="b-7")
print(result.recorded, result.already_recorded)
"""


def test_one_batch_id_sent_by_four_processes_at_once_counts_once(
    running: Project, tmp_path: Any
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_bytes(requests_jsonl(5000, seed=5)[0])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, running.store.location, str(batch)],
            stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outcomes = sorted(tuple(map(int, p.communicate(timeout=300)[0].split())) for p in procs)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert outcomes == [(0, 5000)] * 3 + [(5000, 0)]
    assert running.ab.evaluate_test("t").requests == 50 + 5000


WORKER = """
import sys
from mlops_cli import Project
project = Project.open(sys.argv[1])
worker, calls = int(sys.argv[2]), int(sys.argv[3])
drift = project.drift_detector("gnn", "1.0.0")
for i in range(calls):
    variant = "treatment" if i % 4 == 0 else "control"
    project.ab.record_result("t", variant, 10.0 + worker, 0.5, i % 10 == 0, user_id=f"w{worker}")
    project.registry.update_metrics("gnn", "1.0.0", 10.0 + worker, 0.5)
    drift.add_production_sample(float(worker), 0.5)
"""


def test_concurrent_writers_in_several_processes_lose_nothing(
    running: Project, tmp_path: Any
) -> None:
    """Service processes recording requests, serving metrics and samples one at a time
    while pipeline steps record batches, all into the same streams."""
    calls, workers = 300, 4
    batches = [requests_rows(2000, seed=10 + b) for b in range(3)]
    files = []
    for b, rows in enumerate(batches):
        path = tmp_path / f"batch{b}.jsonl"
        path.write_bytes(jsonl(rows))
        files.append(path)
    pipeline = (
        "import sys\nfrom mlops_cli import Project\np = Project.open(sys.argv[1])\n"
        "for f in sys.argv[2:]:\n    p.ab.record_batch('t', open(f, 'rb').read())\n"
    )
    location = running.store.location
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, location, str(w), str(calls)])
        for w in range(workers)
    ]
    procs.append(
        subprocess.Popen([sys.executable, "-c", pipeline, location, *map(str, files)])
    )
    assert [p.wait(timeout=300) for p in procs] == [0] * (workers + 1)
    running.flush()  # the fixture's own metrics record may still wait in this process's buffer
    store = reopen(running).store
    per_user: dict[str, int] = {}
    for chunk in store.scan("ab/t"):
        for row in chunk:
            if "user_id" in row:
                per_user[row["user_id"]] = per_user.get(row["user_id"], 0) + 1
    assert per_user == {f"w{w}": calls for w in range(workers)}
    evaluation = reopen(running).ab.evaluate_test("t")
    sent_treatment = workers * sum(1 for i in range(calls) if i % 4 == 0) + sum(
        r["variant"] == "treatment" for rows in batches for r in rows
    )
    assert evaluation.requests == 50 + workers * calls + 3 * 2000
    initial = sum(r["variant"] == "treatment" for r in requests_rows_of(running, first=50))
    assert evaluation.metrics["treatment"]["requests"] == initial + sent_treatment
    assert store.count("metrics/gnn/1.0.0") == 1 + workers * calls
    production = store.samples("drift/gnn/1.0.0/production")
    assert len(production) == 50 + workers * calls
    assert sorted(set(production.prediction[50:].tolist())) == [0.0, 1.0, 2.0, 3.0]


def requests_rows_of(project: Project, first: int) -> list[dict[str, Any]]:
    rows = [r for chunk in project.store.scan("ab/t") for r in chunk]
    return rows[:first]


def test_threads_of_one_service_lose_nothing(running: Project) -> None:
    """A threaded service (FastAPI runs sync endpoints in a pool) shares one store."""
    calls, threads = 500, 8

    def worker(n: int) -> None:
        drift = running.drift_detector("gnn", "1.0.0")
        for i in range(calls):
            running.ab.record_result(
                "t", ("control", "treatment")[i % 2], float(n), 0.5, user_id=f"th{n}"
            )
            drift.add_production_sample(float(n), 0.5)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    assert running.ab.evaluate_test("t").requests == 50 + calls * threads
    assert running.store.count("drift/gnn/1.0.0/production") == 50 + calls * threads
    running.store.close()
    assert reopen(running).ab.evaluate_test("t").requests == 50 + calls * threads


HOLDER = """
import sys
from mlops_cli import Project
project = Project.open(sys.argv[1])
with project.store.transaction() as txn:
    txn.state.models["gnn"].make_champion("1.1.0")
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test says
"""


def test_a_held_registry_lock_is_a_clean_timeout_and_changes_nothing(running: Project) -> None:
    running.set_setting("lock_timeout_s", "0.5")
    before = dump(running)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, running.store.location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        other = reopen(running)
        other.registry.get_champion("gnn")  # a store that has read the settings (see below)
        with pytest.raises(LockTimeoutError, match="lock_timeout_s"):
            other.registry.promote_to_champion("gnn", "1.1.0", force=True)
        with pytest.raises(LockTimeoutError, match="lock_timeout_s"):
            other.ab.finalize_test("t", "rollback")
        assert dump(other) == before
    finally:
        holder.communicate(b"\n", timeout=120)
    assert holder.returncode == 0
    assert running.registry.require_champion("gnn").version == "1.1.0"


def test_a_new_stores_first_change_waits_the_projects_lock_timeout(running: Project) -> None:
    running.set_setting("lock_timeout_s", "0.5")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, running.store.location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(LockTimeoutError, match=r"within 0\.5 s"):
            reopen(running).registry.promote_to_champion("gnn", "1.1.0", force=True)
    finally:
        holder.communicate(b"\n", timeout=120)


def test_a_request_that_a_store_cannot_hold_takes_no_other_record_with_it(
    running: Project,
) -> None:
    """A user_id with a NUL byte is refused at validation (PostgreSQL could not store it),
    and every good record around it is stored once."""
    for i in range(10):
        running.ab.record_result("t", "control", 1.0, 0.5, user_id=f"good{i}")
    with pytest.raises(ValidationError, match="NUL"):
        running.ab.record_result("t", "control", 1.0, 0.5, user_id="a\x00b")
    for i in range(10, 20):
        running.ab.record_result("t", "control", 1.0, 0.5, user_id=f"good{i}")
    running.store.close()
    users = [r.get("user_id") for chunk in reopen(running).store.scan("ab/t") for r in chunk]
    assert [u for u in users if u and u.startswith("good")] == [f"good{i}" for i in range(20)]
    assert "a\x00b" not in users


def test_a_far_future_time_is_refused_or_read_back(running: Project) -> None:
    """A time a store cannot hold is refused at validation, never stored to break later
    reads."""
    line = b'{"variant":"control","inference_time_ms":5,"confidence":0.5,' \
        b'"ts":"9999-12-31T23:59:59-14:00"}\n'
    with pytest.raises(ValidationError, match="ts must lie between"):
        running.ab.record_batch("t", line)
    assert reopen(running).ab.evaluate_test("t").requests == 50


STREAMER = """
import sys
from mlops_cli import Project
project = Project.open(sys.argv[1])
project.ab.record_batch(
    "t", sys.stdin.buffer, progress=lambda n: print(n, flush=True), batch_id="job-7"
)
"""


def test_a_batch_writer_killed_mid_way_is_completed_once_by_the_retry(running: Project) -> None:
    """kill -9 while a batch streams in (a chunk handed on, stdin still open): PostgreSQL
    leaves nothing (the transaction never committed); the directory store may leave the
    lines written so far. Either way the retry with the batch id records the batch once."""
    import select
    import signal

    data = requests_jsonl(40_000, seed=7)[0]  # about 4 MB: several chunks on either store
    before = running.store.count("ab/t")
    proc = subprocess.Popen(
        [sys.executable, "-c", STREAMER, running.store.location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(data[: len(data) * 3 // 4])
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 120)  # a deadline against a hang only
    assert ready and int(proc.stdout.readline()) > 0  # a chunk of the batch was handed on
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    left = reopen(running).store.count("ab/t") - before
    assert 0 <= left < 40_000
    if running.store.location.startswith("postgresql://"):
        assert left == 0
    retry = running.ab.record_batch("t", io.BytesIO(data), batch_id="job-7")
    assert retry.recorded + retry.already_recorded == 40_000
    again = reopen(running).ab.record_batch("t", io.BytesIO(data), batch_id="job-7")
    assert (again.recorded, again.already_recorded) == (0, 40_000)
    assert reopen(running).ab.evaluate_test("t").requests == before + 40_000
