"""The Store protocol itself: transactions, the archive, streams, batches, windows, claims."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import numpy as np
import pytest

from mlops_cli import (
    ABTestConfig,
    ConflictError,
    ModelVersion,
    Project,
    StateError,
    ValidationError,
)
from mlops_cli.records import validate_request, validate_sample
from mlops_cli.store.base import EVENTS, Store, ab_stream, drift_stream

from .conftest import T0, known_defect, reopen, requests_jsonl, samples_jsonl

# -- transactions ---------------------------------------------------------------------------


def test_a_transaction_commits_state_and_events_together(store: Store) -> None:
    events = len(store.history(EVENTS))
    with store.transaction() as txn:
        txn.state.models["gnn"].make_champion("1.1.0")
        txn.event("promoted", model_type="gnn", version="1.1.0")
    assert store.read().models["gnn"].champion == "1.1.0"
    assert store.history(EVENTS)[-1]["event"] == "promoted"
    assert len(store.history(EVENTS)) == events + 1


def test_a_failed_transaction_changes_nothing(store: Store) -> None:
    before = store.read().to_doc()
    events = store.history(EVENTS)
    with pytest.raises(ConflictError), store.transaction() as txn:
        txn.state.models["gnn"].make_champion("1.1.0")
        txn.event("promoted", model_type="gnn", version="1.1.0")
        raise ConflictError("changed my mind")
    assert store.read().to_doc() == before
    assert store.history(EVENTS) == events


def _register_many(location: str, worker: int, count: int) -> None:
    project = Project.open(location)
    for i in range(count):
        project.registry.register_version(
            ModelVersion(f"m{worker}", f"1.{i}.0", model_path="m.pt")
        )
        project.registry.register_version(ModelVersion("shared", f"{worker}.{i}.0", model_path="m"))


def test_transactions_under_contention_lose_no_update(project: Project) -> None:
    location = project.store.location
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(location, w, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = Project.open(location).store.read()
    assert len(state.models["shared"].versions) == 20
    assert all(len(state.models[f"m{w}"].versions) == 5 for w in range(4))
    registered = [e for e in Project.open(location).registry.history() if e.kind == "registered"]
    assert len(registered) == 2 + 40


# -- the archive of finalized A/B tests -----------------------------------------------------


def test_finalized_tests_move_to_the_archive_in_the_same_transaction(project: Project) -> None:
    store = project.store
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    assert store.archived_test("t") is None and store.archived_tests() == []
    project.ab.finalize_test("t", "rollback")
    assert "t" not in store.read().ab_tests
    archived = store.archived_test("t")
    assert archived is not None and archived.status == "rolled_back" and archived.finalized_at
    assert [t.name for t in store.archived_tests()] == ["t"]
    assert project.ab.get_test("t") == archived
    assert project.ab.status("t").test.status == "rolled_back"
    assert project.ab.evaluate_test("t").status == "rolled_back"
    # a second test, aborted by promote --force, joins it; names stay taken forever
    project.ab.start_test(ABTestConfig("u", "gnn", treatment_version="1.1.0"))
    project.registry.promote_to_champion("gnn", "1.1.0", reason="hotfix", force=True)
    aborted = store.archived_test("u")
    assert aborted is not None and aborted.status == "aborted"
    assert [s.test.name for s in project.ab.list_tests()] == ["t", "u"]
    assert [t.name for t in store.archived_tests()] == ["t", "u"]
    assert store.read().ab_tests == {}
    with pytest.raises(ConflictError, match="already exists"):
        project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.0.0"))
    kinds = [e["event"] for e in store.history(EVENTS)]
    assert kinds[-3:] == ["ab_started", "ab_aborted", "promoted"]


def test_a_failed_transaction_archives_nothing(project: Project) -> None:
    store = project.store
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    with pytest.raises(ConflictError), store.transaction() as txn:
        txn.state.ab_tests["t"].status = "aborted"
        raise ConflictError("changed my mind")
    assert store.archived_test("t") is None and store.read().ab_tests["t"].running


# -- streams --------------------------------------------------------------------------------


def test_append_and_history(store: Store) -> None:
    stream = drift_stream("gnn", "1.0.0", "checks")
    for day in range(5):
        store.append(stream, {"ts": (T0 + timedelta(days=day)).isoformat(), "score": day / 10})
    rows = store.history(stream)
    assert [r["score"] for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert [r["score"] for r in store.history(stream, since=T0 + timedelta(days=3))] == [0.3, 0.4]
    assert [r["score"] for r in store.history(stream, limit=2)] == [0.3, 0.4]


def test_a_batch_counts_once_per_batch_id(store: Store) -> None:
    stream = ab_stream("t")
    data, _ = requests_jsonl(500, seed=1)
    first = store.append_batch(stream, data, validate_request, "b1")
    again = store.append_batch(stream, data, validate_request, "b1")
    assert (first.recorded, first.already_recorded) == (500, 0)
    assert (again.recorded, again.already_recorded) == (0, 500)
    assert store.count(stream) == 500
    other = store.append_batch(stream, data, validate_request, "b2")  # same content, new id
    assert other.recorded == 500 and store.count(stream) == 1000


def test_a_bad_batch_changes_nothing(store: Store) -> None:
    stream = ab_stream("t")
    good, _ = requests_jsonl(100, seed=2)
    store.append_batch(stream, good, validate_request, None)
    position = store.position(stream)
    bad = good + b'{"variant": "control", "inference_time_ms": -1, "confidence": 0.5}\n' + good
    with pytest.raises(ValidationError, match="line 101"):
        store.append_batch(stream, bad, validate_request, None)
    assert store.count(stream) == 100 and store.position(stream) == position


def test_summaries_equal_a_recomputation(store: Store) -> None:
    stream = ab_stream("t")
    seen: list[dict[str, object]] = []
    for seed in (3, 4, 5):  # incremental: each summary after more records
        data, rows = requests_jsonl(700, seed)
        store.append_batch(stream, data, validate_request, None)
        seen += rows
        summary = store.summary(stream, "variant", ("control", "treatment"))
        for arm in ("control", "treatment"):
            mine = [r for r in seen if r["variant"] == arm]
            conf = np.array([r["confidence"] for r in mine], dtype=float)
            ms = np.array([r["inference_time_ms"] for r in mine], dtype=float)
            m = summary.arm(arm)
            assert m.n == len(mine)
            assert m.errors == sum(bool(r["error"]) for r in mine)
            assert m.confidence_sum == pytest.approx(conf.sum(), rel=1e-12)
            assert m.confidence_sum_squares == pytest.approx((conf**2).sum(), rel=1e-12)
            assert m.time_sum == pytest.approx(ms.sum(), rel=1e-12)
            assert m.time_sum_squares == pytest.approx((ms**2).sum(), rel=1e-12)


def test_windows_are_the_last_and_first_samples(store: Store) -> None:
    stream = drift_stream("gnn", "1.0.0", "production")
    data, values = samples_jsonl(3000, seed=6)
    store.append_batch(stream, data, validate_sample, None)
    last = store.samples(stream, last=1000)
    assert np.array_equal(last.prediction, values[-1000:, 0])
    assert np.array_equal(last.confidence, values[-1000:, 1])
    first = store.samples(stream, first=10)
    assert np.array_equal(first.prediction, values[:10, 0])
    assert len(store.samples(stream, last=10**6)) == 3000


def test_a_capped_batch_is_refused_whole(store: Store) -> None:
    stream = drift_stream("gnn", "1.0.0", "reference")
    data, _ = samples_jsonl(80, seed=7)
    store.append_batch(stream, data, validate_sample, None, cap=100)
    more, _ = samples_jsonl(80, seed=8)
    with pytest.raises(ValidationError):
        store.append_batch(stream, more, validate_sample, None, cap=100)
    assert store.count(stream) == 80


def _claim(location: str, key: str, out: multiprocessing.Queue[bool]) -> None:
    out.put(Project.open(location).store.claim(key, 3600.0))


def test_a_claim_is_granted_once_per_time_to_live(project: Project) -> None:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[bool] = ctx.Queue()
    procs = [
        ctx.Process(target=_claim, args=(project.store.location, "hook:gnn:critical", results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    granted = [results.get(timeout=5) for _ in procs]
    assert sorted(granted) == [False, False, False, True]
    store = Project.open(project.store.location).store  # on the real clock, as the workers
    assert not store.claim("hook:gnn:critical", 3600.0)
    assert store.claim("hook:gnn:other", 3600.0)  # claims are per key
    # A time to live of 0 has passed at once: granted again (no waiting in a test), and that
    # grant starts a new time to live.
    assert store.claim("hook:gnn:critical", 0.0)
    assert not store.claim("hook:gnn:critical", 3600.0)


def test_a_streamed_batch_is_all_or_nothing_and_keeps_ten_bad_lines(store: Store) -> None:
    import io

    stream = ab_stream("t")
    good, _ = requests_jsonl(100, seed=2)
    store.append_batch(stream, io.BytesIO(good), validate_request, None)
    position = store.position(stream)
    big, _ = requests_jsonl(40_000, seed=3)  # several chunks on either store
    lines = big.splitlines(keepends=True)
    for i in range(30):
        lines[30_000 + i] = b"not json\n"
    with pytest.raises(ValidationError) as err:
        store.append_batch(stream, io.BytesIO(b"".join(lines)), validate_request, "s1")
    assert str(err.value).startswith("30 bad line(s), nothing recorded: line 30001: ")
    assert str(err.value).endswith("line 30010: not valid JSON (and 20 more)")
    assert store.count(stream) == 100 and store.position(stream) == position
    done = store.append_batch(stream, io.BytesIO(big), validate_request, "s1")
    assert (done.recorded, done.already_recorded) == (40_000, 0)
    again = store.append_batch(stream, io.BytesIO(big), validate_request, "s1")
    assert (again.recorded, again.already_recorded) == (0, 40_000)


def test_a_stream_without_a_batch_id_is_never_a_retry(store: Store) -> None:
    import io

    stream = drift_stream("gnn", "1.0.0", "production")
    sample = b'{"prediction": 0.5, "confidence": 0.9}\n'
    for _ in range(2):
        result = store.append_batch(stream, io.BytesIO(sample), validate_sample, None)
        assert (result.recorded, result.already_recorded) == (1, 0)
    assert store.count(stream) == 2


def test_a_streamed_replace_past_its_cap_changes_nothing(store: Store) -> None:
    import io

    from mlops_cli.batch import CapError

    stream = drift_stream("gnn", "1.0.0", "reference")
    data, _ = samples_jsonl(80, seed=7)
    store.append_batch(stream, data, validate_sample, None, cap=100)
    more, _ = samples_jsonl(150, seed=8)
    with pytest.raises(CapError):
        store.replace(stream, io.BytesIO(more), validate_sample, cap=100)
    assert store.count(stream) == 80
    half = b"".join(more.splitlines(keepends=True)[:75])
    assert store.replace(stream, io.BytesIO(half), validate_sample, cap=100) == 75
    assert store.count(stream) == 75


# -- reads of streams ---------------------------------------------------------------------------


def test_a_stream_without_records_reads_as_empty(store: Store) -> None:
    for stream in (ab_stream("t"), drift_stream("gnn", "1.0.0", "production")):
        assert store.count(stream) == 0 and store.history(stream) == []
        assert list(store.scan(stream)) == [] and stream not in store.streams()
    summary = store.summary(ab_stream("t"), "variant", ("control", "treatment"), per_user=True)
    assert summary.arm("control").n == 0 and summary.torn_bytes == 0 and summary.skipped == []
    window = store.samples(drift_stream("gnn", "1.0.0", "production"), last=100)
    assert len(window) == 0 and window.prediction.dtype == np.float64


@pytest.mark.usefixtures("replace_position_defect")
def test_position_moves_with_every_write_and_never_with_a_read(store: Store) -> None:
    stream = drift_stream("gnn", "1.0.0", "reference")
    seen = [store.position(stream)]
    data, _ = samples_jsonl(30, seed=9)
    store.append_batch(stream, data, validate_sample, None)
    seen.append(store.position(stream))
    store.append(stream, {"ts": "2026-11-01T00:00:00Z", "prediction": 0.5, "confidence": 0.5})
    seen.append(store.position(stream))
    store.replace(stream, data, validate_sample)
    seen.append(store.position(stream))
    store.samples(stream, last=5)
    store.count(stream)
    assert store.position(stream) == seen[-1]
    assert len(set(seen)) == 4 and store.count(stream) == 30


def test_streams_lists_every_stream_that_holds_records(project: Project) -> None:
    store = project.store
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    project.ab.record_result("t", "control", 1.0, 0.5)
    project.registry.update_metrics("gnn", "1.1.0", 1.0, 0.5)
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(10, seed=1)[0])
    detector.check()
    assert sorted(store.streams()) == [
        "ab/t",
        "drift/gnn/1.0.0/checks",
        "drift/gnn/1.0.0/reference",
        EVENTS,
        "metrics/gnn/1.1.0",
    ]


def test_an_unknown_stream_is_a_value_error(store: Store) -> None:
    for call in (
        lambda: store.append("logs/x", {"ts": "2026-11-01T00:00:00Z"}),
        lambda: store.count("ab/t/extra"),
        lambda: store.history("metrics/gnn"),
    ):
        with pytest.raises(ValueError, match="stream"):
            call()


def test_a_scan_returns_every_record_in_order(store: Store) -> None:
    stream = drift_stream("gnn", "1.0.0", "production")
    data, values = samples_jsonl(70_000, seed=10)
    store.append_batch(stream, data, validate_sample, None)
    chunks = list(store.scan(stream))
    assert [r["prediction"] for c in chunks for r in c] == values[:, 0].tolist()


def test_history_since_and_limit_together(store: Store) -> None:
    stream = drift_stream("gnn", "1.0.0", "checks")
    for day in range(6):
        store.append(stream, {"ts": (T0 + timedelta(days=day)).isoformat(), "score": day})
    since = T0 + timedelta(days=2)
    assert [r["score"] for r in store.history(stream, since=since, limit=2)] == [4, 5]
    assert [r["score"] for r in store.history(stream, since=since, limit=10)] == [2, 3, 4, 5]
    assert store.history(stream, since=T0 + timedelta(days=9)) == []


def test_an_unknown_drift_kind_is_a_value_error(store: Store) -> None:
    with pytest.raises(ValueError, match="stream"):
        store.history("drift/gnn/1.0.0/other")


@pytest.fixture
def replace_position_defect(request: pytest.FixtureRequest) -> None:
    known_defect(
        request,
        "files",
        "FileStore.position is the log's byte length: a replace whose log has the length of an "
        "earlier state returns that earlier position, so DriftDetector.samples_since cannot see "
        "the replace",
    )


@pytest.fixture
def archive_name_defect(request: pytest.FixtureRequest) -> None:
    known_defect(
        request,
        "postgres",
        "PostgresStore.archived_test does not validate the name: '../t' returns None where "
        "the directory store raises ValidationError",
    )


@pytest.mark.usefixtures("archive_name_defect")
def test_an_archived_test_is_looked_up_by_a_valid_name_only(store: Store) -> None:
    with pytest.raises(ValidationError, match="A/B test name"):
        store.archived_test("../t")


@pytest.fixture
def reused_batch_id_defect(request: pytest.FixtureRequest) -> None:
    from mlops_cli import errors

    known_defect(
        request,
        "files",
        "FileStore.append_batch matches a batch id's earlier attempts by their lines: other "
        "records sent under a used batch id are appended again (recorded 300), where "
        "PostgreSQL counts the id once and records nothing",
        present=not hasattr(errors, "BatchConflictError"),  # the refusal that fixes it
    )


@pytest.mark.usefixtures("reused_batch_id_defect")
def test_a_used_batch_id_records_nothing_more_whatever_it_carries(store: Store) -> None:
    """Other records under a used batch id are refused (a ConflictError), or taken for the
    batch already recorded: either way nothing more is recorded."""
    stream = ab_stream("t")
    first, _ = requests_jsonl(200, seed=1)
    other, _ = requests_jsonl(300, seed=2)
    assert store.append_batch(stream, first, validate_request, "nightly-7").recorded == 200
    try:
        again = store.append_batch(stream, other, validate_request, "nightly-7")
    except ConflictError:
        pass
    else:
        assert again.recorded == 0
    assert store.count(stream) == 200


def _register_from_threads(project: Project, worker: int) -> None:
    for i in range(5):
        project.registry.register_version(ModelVersion("shared", f"{worker}.{i}.0", model_path="m"))


def test_transactions_from_threads_of_one_process_lose_no_update(project: Project) -> None:
    import threading

    threads = [
        threading.Thread(target=_register_from_threads, args=(project, w)) for w in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(reopen(project).store.read().models["shared"].versions) == 20
    registered = [e for e in project.registry.history("shared") if e.kind == "registered"]
    assert len(registered) == 20


def test_a_transaction_that_leaves_an_invalid_state_commits_nothing(project: Project) -> None:
    store = project.store
    before = store.read().to_doc()
    with pytest.raises(StateError), store.transaction() as txn:
        txn.state.models["gnn"].versions["1.1.0"].traffic_percentage = 150.0
        txn.event("broken", model_type="gnn")
    assert store.read().to_doc() == before
    assert reopen(project).store.read().to_doc() == before
    assert [e.kind for e in project.registry.history()][-1] == "registered"


def test_checks_and_events_are_seen_by_another_store_at_once(project: Project) -> None:
    """No buffering for what a pipeline and the audit trail read next: a check row and an
    event are stored when the call returns."""
    checks = drift_stream("gnn", "1.0.0", "checks")
    project.store.append(checks, {"ts": "2026-11-01T00:00:00Z", "status": "active", "score": 1})
    project.store.append(EVENTS, {"ts": "2026-11-01T00:00:00Z", "event": "note"})
    other = reopen(project).store
    assert [r["score"] for r in other.history(checks)] == [1]
    assert other.history(EVENTS, limit=1)[0]["event"] == "note"
