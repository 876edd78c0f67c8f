"""The Store protocol itself: transactions, the archive, streams, batches, windows, claims."""

from __future__ import annotations

import io
import multiprocessing
from datetime import timedelta

import numpy as np
import orjson
import pytest

from mlops_cli import (
    ABTestConfig,
    ConflictError,
    ModelVersion,
    Project,
    StateError,
    ValidationError,
)
from mlops_cli.batch import BatchError
from mlops_cli.errors import BatchConflictError
from mlops_cli.limits import LINE_MAX_BYTES
from mlops_cli.records import validate_request, validate_sample
from mlops_cli.store.base import EVENTS, Store, ab_stream, drift_stream

from .conftest import T0, reopen, requests_jsonl, samples_jsonl

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


def test_a_batch_id_with_other_content_is_refused_whole(store: Store) -> None:
    """`B2` with lines 1,2,3 then `B2` with 1,4,5: refused, nothing of it recorded (not "1
    already recorded, 2 added"); the same lines again are already recorded."""
    stream = ab_stream("t")
    data, _ = requests_jsonl(5, seed=7)
    rows = data.splitlines(keepends=True)
    first = store.append_batch(stream, b"".join(rows[:3]), validate_request, "B2")
    assert (first.recorded, first.already_recorded) == (3, 0)
    position = store.position(stream)
    for other in ([0, 3, 4], [0, 1], [0, 1, 2, 3]):
        with pytest.raises(ConflictError, match="batch id B2 holds other content"):
            store.append_batch(stream, b"".join(rows[i] for i in other), validate_request, "B2")
        assert store.count(stream) == 3 and store.position(stream) == position
    again = store.append_batch(stream, b"".join(rows[:3]), validate_request, "B2")
    assert (again.recorded, again.already_recorded) == (0, 3)
    assert store.count(stream) == 3


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
    reference = drift_stream("gnn", "1.0.0", "reference")
    ref_data, ref_values = samples_jsonl(50, seed=16)
    store.append_batch(reference, ref_data, validate_sample, None)
    ref, win = store.reference_and_window(reference, 20, stream, 1000)
    assert np.array_equal(ref.prediction, ref_values[:20, 0])
    assert np.array_equal(win.prediction, values[-1000:, 0])
    assert np.array_equal(win.confidence, values[-1000:, 1])


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


# -- values a store could not hold ----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            b'{"variant":"control","inference_time_ms":5,"confidence":0.9,"user_id":"a\\u0000b"}',
            r"line 4: user_id holds a NUL character",
        ),
        (
            b'{"variant":"control","inference_time_ms":5,"confidence":0.9,'
            b'"ts":"9999-12-31T23:59:59-14:00"}',
            r"line 4: ts must lie between 1970-01-01T00:00:00Z and 24 hours from now",
        ),
        (
            b'{"variant":"control","inference_time_ms":5,"confidence":0.9,"user_id":"'
            + b"u" * 257
            + b'"}',
            r"line 4: user_id is longer than 256 bytes",
        ),
    ],
    ids=["nul user_id", "year 9999 at -14:00", "long user_id"],
)
def test_a_batch_with_a_value_no_store_can_hold_is_refused_whole(
    project: Project, line: bytes, message: str
) -> None:
    """The same validation on both stores: PostgreSQL cannot store a NUL character or a time
    past year 9999, so neither store takes one, and the batch is refused whole."""
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    good, _ = requests_jsonl(3, seed=5)
    before = project.store.count(ab_stream("t"))
    with pytest.raises(ValidationError, match=message):
        project.ab.record_batch("t", good + line + b"\n" + good)
    with pytest.raises(ValidationError, match=message.removeprefix("line 4: ")):
        doc = orjson.loads(line)
        project.ab.record_result(
            "t", "control", 5, 0.9, user_id=doc.get("user_id"), ts=doc.get("ts")
        )
    project.store.close()
    assert Project.open(project.store.location).store.count(ab_stream("t")) == before


def test_a_reason_past_the_text_bound_changes_nothing(project: Project) -> None:
    before = project.store.read().to_doc()
    events = len(project.store.history(EVENTS))
    with pytest.raises(ValidationError, match=r"the reason is longer than 4,096 bytes \(4,097\)"):
        project.registry.promote_to_champion("gnn", "1.1.0", reason="r" * 4097)
    with pytest.raises(ValidationError, match="the reason holds a NUL character"):
        project.registry.deprecate("gnn", "1.1.0", reason="why\x00")
    assert project.store.read().to_doc() == before
    assert len(project.store.history(EVENTS)) == events


# -- reads of streams ---------------------------------------------------------------------------


def test_a_stream_without_records_reads_as_empty(store: Store) -> None:
    for stream in (ab_stream("t"), drift_stream("gnn", "1.0.0", "production")):
        assert store.count(stream) == 0 and store.history(stream) == []
        assert list(store.scan(stream)) == [] and stream not in store.streams()
    summary = store.summary(ab_stream("t"), "variant", ("control", "treatment"), per_user=True)
    assert summary.arm("control").n == 0 and summary.torn_bytes == 0 and summary.skipped == []
    window = store.samples(drift_stream("gnn", "1.0.0", "production"), last=100)
    assert len(window) == 0 and window.prediction.dtype == np.float64


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


def test_an_archived_test_is_looked_up_by_a_valid_name_only(store: Store) -> None:
    with pytest.raises(ValidationError, match="A/B test name"):
        store.archived_test("../t")


def test_a_used_batch_id_with_other_content_is_refused_and_records_nothing(
    store: Store,
) -> None:
    stream = ab_stream("t")
    first, _ = requests_jsonl(200, seed=1)
    other, _ = requests_jsonl(300, seed=2)
    assert store.append_batch(stream, first, validate_request, "nightly-7").recorded == 200
    with pytest.raises(BatchConflictError, match="nightly-7 holds other content"):
        store.append_batch(stream, other, validate_request, "nightly-7")
    assert store.count(stream) == 200
    again = store.append_batch(stream, first, validate_request, "nightly-7")
    assert (again.recorded, again.already_recorded, store.count(stream)) == (0, 200, 200)


def _padded(size: int) -> bytes:
    """A valid sample line of exactly `size` bytes (its newline not counted): spaces pad it."""
    head, tail = b'{"prediction": 0.5, "confidence": 0.9', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


def test_a_batch_line_over_one_mebibyte_is_refused_naming_it(store: Store) -> None:
    """Both stores read a batch in bounded memory and refuse a line of 1 MiB + 1 byte (valid
    JSON though it is) by its number, recording nothing; a line of exactly 1 MiB is taken."""
    assert LINE_MAX_BYTES == 1_048_576  # 1 MiB, counted without the newline
    stream = drift_stream("gnn", "1.0.0", "production")
    good = b'{"prediction": 0.5, "confidence": 0.9}\n'
    over = good * 3 + _padded(LINE_MAX_BYTES + 1) + b"\n" + good
    assert len(_padded(LINE_MAX_BYTES + 1)) == 1_048_577
    for source in (lambda: over, lambda: io.BufferedReader(io.BytesIO(over))):
        with pytest.raises(
            BatchError,
            match=r"^1 bad line\(s\), nothing recorded: line 4: "
            r"longer than 1 MiB \(1,048,576 bytes\)$",
        ):
            store.append_batch(stream, source(), validate_sample, "over")  # type: ignore[arg-type]
        assert store.count(stream) == 0 and stream not in store.streams()


def test_a_batch_line_of_exactly_one_mebibyte_is_recorded_and_read_back(store: Store) -> None:
    """The directory store splices a ts into a line without one: a line at the limit is
    stored compactly (its padding dropped), so it is still counted and read back."""
    stream = drift_stream("gnn", "1.0.0", "production")
    good = b'{"prediction": 0.5, "confidence": 0.9}\n'
    at_limit = good * 3 + _padded(LINE_MAX_BYTES) + b"\n" + good
    result = store.append_batch(stream, at_limit, validate_sample, "at-limit")
    assert (result.recorded, store.count(stream)) == (5, 5)
    assert len([r for chunk in store.scan(stream) for r in chunk]) == 5


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


# -- batch ids a copy carries ---------------------------------------------------------------


def test_batches_are_listed_by_id_with_their_records(store: Store) -> None:
    import io

    data, _ = requests_jsonl(30, seed=21)
    store.append_batch("ab/t", data, validate_request, "b1")
    more, _ = requests_jsonl(7, seed=22)
    store.append_batch("ab/t", io.BytesIO(more), validate_request, None)  # a stream: no id
    assert store.batches("ab/t") == {"b1": 30}
    assert store.batches("ab/other") == {}


def test_a_carried_batch_is_not_recorded_again(store: Store) -> None:
    data, _ = requests_jsonl(12, seed=23)
    store.carry_batches("ab/t", {"b9": 12})  # as a copy does, after writing its records
    again = store.append_batch("ab/t", data, validate_request, "b9")
    assert (again.recorded, again.already_recorded) == (0, 12)
    assert store.count("ab/t") == 0  # the copy wrote the records; the retry adds none
    other = store.append_batch("ab/t", data, validate_request, "b10")
    assert (other.recorded, other.already_recorded) == (12, 0)
    assert store.batches("ab/t") == {"b9": 12, "b10": 12}


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
