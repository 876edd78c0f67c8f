"""Events out on every store: a real receiver on 127.0.0.1, an injected clock for backoff."""

from __future__ import annotations

import multiprocessing
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import Project
from mlops_cli.errors import NotFoundError, ValidationError
from mlops_cli.webhooks import KNOWN_EVENTS, backoff_s, parse_events, signature, validate_url

from ..webhook_receiver import closed_port_url, receiver
from .conftest import Clock, dump, reopen

DOCS = Path(__file__).parents[2] / "docs" / "events.md"


def documented_verify() -> Any:
    """The receiver's check exactly as docs/events.md gives it."""
    text = DOCS.read_text()
    block = re.search(r"```python\n(import hashlib.*?def verify.*?)```", text, re.S)
    assert block is not None, "docs/events.md lost its verification snippet"
    scope: dict[str, Any] = {}
    exec(block.group(1), scope)
    return scope["verify"]


def toggle(project: Project, times: int, model_type: str = "gnn", alias: str = "shadow") -> None:
    """`times` registry events: an alias moved back and forth (from where it points)."""
    held = {a.alias: a.version for a in project.registry.aliases(model_type)}
    for i in range(times):
        odd = (held.get(alias) == "1.1.0") != (i % 2 == 1)
        project.registry.set_alias(model_type, alias, "1.0.0" if odd else "1.1.0")


def quiet(project: Project) -> None:
    """No delivery by the process that changes (the test delivers when it says)."""
    project.set_setting("webhooks.drain_s", "0")


def test_a_change_is_delivered_signed_and_the_documented_check_accepts_it(
    project: Project,
) -> None:
    project.store.clock = lambda: datetime.now(timezone.utc)  # the snippet checks freshness
    verify = documented_verify()
    with receiver() as got:
        hook = project.webhooks.add(got.url, "*")
        assert hook.secret is not None and len(hook.secret) == 64
        project.registry.promote_to_champion("gnn", "1.1.0", reason="better")
        assert len(got.accepted) == 1  # delivered by the process that made the change
        request = got.accepted[0]
        assert verify(hook.secret, request.headers, request.body)
        assert not verify("another secret", request.headers, request.body)
        tampered = request.body.replace(b"1.1.0", b"1.0.0")
        assert not verify(hook.secret, request.headers, tampered)
        doc = request.doc
        assert (doc["event"], doc["model_type"], doc["seq"]) == ("promoted", "gnn", 1)
        assert doc["data"]["version"] == "1.1.0" and doc["data"]["reason"] == "better"
        assert request.headers["X-Mlops-Event-Id"] == doc["id"]
        assert request.headers["X-Mlops-Sequence"] == "1"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # RFC 4231 test case 2 (key "Jefe"), on the message this scheme builds
    import hashlib
    import hmac

    body = b'{"a":1}'
    want = hmac.new(b"Jefe", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("Jefe", 1700000000, body) == "sha256=" + want
    assert hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_a_receiver_failing_three_times_then_succeeding_gets_every_event_once(
    project: Project, clock: Clock
) -> None:
    quiet(project)
    with receiver(fail_first=3) as got:
        project.webhooks.add(got.url, "alias_set")
        toggle(project, 5)
        first = project.webhooks.deliver(for_s=0)
        assert (first.delivered, first.failed) == (0, 1)
        for attempt in (1, 2):  # each retry waits 10 s, then 20 s: not due before
            assert project.webhooks.deliver(for_s=0).failed == 0
            clock.now += timedelta(seconds=backoff_s(attempt, 10.0))
            assert project.webhooks.deliver(for_s=0).failed == 1
        assert project.webhooks.deliver(for_s=0).delivered == 0  # the third retry: not due
        clock.now += timedelta(seconds=40)
        last = project.webhooks.deliver(for_s=0)
        assert (last.delivered, last.failed, last.pending) == (5, 0, 0)
    assert len(got.requests) == 3 + 5
    assert got.duplicates == 0
    assert [r.doc["seq"] for r in got.accepted] == [1, 2, 3, 4, 5]
    assert len({r.doc["id"] for r in got.accepted}) == 5
    first_event = got.requests[0].headers["X-Mlops-Event-Id"]
    assert {r.headers["X-Mlops-Event-Id"] for r in got.requests[:4]} == {first_event}
    shown = project.webhooks.deliveries()
    assert [(d.seq, d.status, d.attempt) for d in shown] == [
        (1, "delivered", 4), (2, "delivered", 1), (3, "delivered", 1), (4, "delivered", 1),
        (5, "delivered", 1),
    ]


def test_after_max_attempts_an_event_is_dead_lettered_and_the_next_one_goes(
    project: Project, clock: Clock
) -> None:
    quiet(project)
    project.set_setting("webhooks.max_attempts", "3")
    project.set_setting("webhooks.backoff_s", "1")
    with receiver(always_fail=True) as got:
        project.webhooks.add(got.url, "*")
        toggle(project, 2)
        for wait in (0, 1, 2):
            clock.now += timedelta(seconds=wait)
            project.webhooks.deliver(for_s=0)
        dead = project.webhooks.deliveries(status="dead")
        assert [(d.seq, d.attempt, d.error) for d in dead] == [(1, 3, "HTTP 500")]
        got.always_fail = False
        project.webhooks.deliver(for_s=0)  # the lane moved on: the next event is due at once
    assert [r.doc["seq"] for r in got.accepted] == [2]
    assert [(d.seq, d.status) for d in project.webhooks.deliveries()] == [
        (1, "dead"), (2, "delivered")
    ]


def test_a_change_waits_at_most_drain_s_and_a_post_it_cuts_short_is_not_a_failure(
    project: Project, clock: Clock
) -> None:
    """webhooks.timeout_s (5) is longer than drain_s (2): the change's posts get at most the
    drain's time, and one that runs out of it is left for the next deliverer, no attempt
    counted. `deliver` gives the endpoint its whole timeout, and a timeout there is one."""
    project.set_setting("webhooks.timeout_s", "5")
    given: list[float] = []

    def slow(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        given.append(timeout)
        raise TimeoutError("timed out")

    project.webhooks.post = slow
    project.webhooks.add("http://127.0.0.1:9/hook", "alias_set")
    project.registry.set_alias("gnn", "shadow", "1.1.0")  # drains for drain_s (2)
    assert given and max(given) <= 2.0
    assert project.webhooks.deliveries() == []  # no failed attempt: still due
    given.clear()
    assert project.webhooks.deliver(for_s=0).failed == 1  # the whole timeout: a failure
    assert given == [5.0]
    project.set_setting("webhooks.drain_s", "10")  # longer than the timeout: nothing is cut
    project.webhooks.post = lambda url, body, headers, timeout: 200
    clock.now += timedelta(seconds=10)  # the retry is due
    toggle(project, 1)
    assert [(d.seq, d.status, d.attempt) for d in project.webhooks.deliveries()] == [
        (1, "delivered", 2), (2, "delivered", 1)
    ]


def test_a_slow_endpoint_holds_up_only_its_own_lane(project: Project) -> None:
    """Two endpoints that each answer only once the other has its request too: lanes posting
    one after another would time the first out (10 s) before the second was asked."""
    import threading

    quiet(project)
    project.set_setting("webhooks.timeout_s", "10")
    both = threading.Barrier(2, timeout=60)  # (only a hang takes this long)
    with receiver() as one, receiver() as two:
        for got in (one, two):
            def meet(headers: dict[str, str], body: bytes, answer: Any = got.handle) -> int:
                both.wait()
                return int(answer(headers, body))

            got.handle = meet  # type: ignore[method-assign]
            project.webhooks.add(got.url, "alias_set")
        toggle(project, 1)
        report = project.webhooks.deliver(for_s=0)
    assert (report.delivered, report.failed) == (2, 0)
    assert len(one.accepted) == len(two.accepted) == 1


def test_a_change_succeeds_with_the_receiver_down(project: Project) -> None:
    project.webhooks.add(closed_port_url(), "*")
    moved = project.registry.set_alias("gnn", "shadow", "1.1.0")  # delivery fails: no raise
    assert moved.version == "1.1.0"
    assert reopen(project).registry.get_version_by_alias("gnn", "shadow").version == "1.1.0"
    [failed] = project.webhooks.deliveries()
    assert (failed.status, failed.event, failed.seq) == ("failed", "alias_set", 1)


def test_an_endpoint_gets_only_its_kinds_and_model_type_in_order(
    project: Project, clock: Clock
) -> None:
    from mlops_cli import ModelVersion

    quiet(project)
    project.registry.register_version(ModelVersion("cnn", "1.0.0", model_path="m.pt"))
    project.registry.register_version(ModelVersion("cnn", "1.1.0", model_path="m.pt"))
    with receiver() as mine, receiver() as every:
        project.webhooks.add(mine.url, "alias_deleted", model_type="gnn")
        project.webhooks.add(every.url, "*")
        toggle(project, 2, "gnn")
        toggle(project, 2, "cnn")
        project.registry.delete_alias("gnn", "shadow")
        project.registry.delete_alias("cnn", "shadow")
        project.webhooks.deliver(for_s=0)
    assert [(r.doc["model_type"], r.doc["event"]) for r in mine.accepted] == [
        ("gnn", "alias_deleted")
    ]
    assert mine.accepted[0].doc["seq"] == 3  # the third gnn event since the endpoint
    per_type: dict[str, list[int]] = {}
    for r in every.accepted:
        per_type.setdefault(r.doc["model_type"], []).append(r.doc["seq"])
    assert per_type == {"gnn": [1, 2, 3], "cnn": [1, 2, 3]}


def test_events_before_an_endpoint_was_added_are_not_sent_to_it(project: Project) -> None:
    quiet(project)
    with receiver() as first, receiver() as second:
        project.webhooks.add(first.url, "*")
        toggle(project, 2)
        project.webhooks.add(second.url, "*")
        toggle(project, 1)
        project.webhooks.deliver(for_s=0)
    assert [r.doc["seq"] for r in first.accepted] == [1, 2, 3]
    assert [r.doc["seq"] for r in second.accepted] == [3]


def test_a_removed_endpoint_gets_nothing_more(project: Project) -> None:
    """Nor is it listed by `deliveries`: its failures would never be retried."""
    quiet(project)
    other = project.webhooks.add(closed_port_url(), "*")  # stays, and its failure stays listed
    with receiver(always_fail=True) as got:
        hook = project.webhooks.add(got.url, "*")
        toggle(project, 1)
        project.webhooks.deliver(for_s=0)
        failed = {d.webhook for d in project.webhooks.deliveries(status="failed")}
        assert failed == {hook.id, other.id}
        project.webhooks.remove(hook.id)
        got.always_fail = False
        got.requests.clear()
        toggle(project, 1)
        project.webhooks.deliver(for_s=0)
        assert got.requests == []
        assert project.store.secret(hook.id) is None
    assert [d.webhook for d in project.webhooks.deliveries()] == [other.id]
    assert [w.id for w in project.webhooks.endpoints()] == [other.id]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda w: w.add("ftp://example.com/x", "*"), ValidationError),
        (lambda w: w.add("http://user:pw@example.com/x", "*"), ValidationError),
        (lambda w: w.add("http:// spaces.example.com", "*"), ValidationError),
        (lambda w: w.add("https://example.com/x", "promoted,nope"), ValidationError),
        (lambda w: w.add("https://example.com/x", ""), ValidationError),
        (lambda w: w.add("https://example.com/x", "*", model_type="nope"), NotFoundError),
        (lambda w: w.remove("wh-000000000000"), NotFoundError),
        (lambda w: w.deliveries(status="lost"), ValidationError),
    ],
)
def test_bad_webhook_input_changes_nothing(project: Project, call: Any, error: Any) -> None:
    before = dump(project)
    with pytest.raises(error):
        call(project.webhooks)
    assert dump(reopen(project)) == before


def test_event_filters_and_urls() -> None:
    assert parse_events("promoted, rolled_back") == ["promoted", "rolled_back"]
    assert parse_events("promoted,*") == ["*"]
    assert parse_events("promoted,promoted") == ["promoted"]
    assert "test_ramped" in KNOWN_EVENTS and "alias_set" in KNOWN_EVENTS
    for bad in ("promoted,,x", "Promoted", "webhook_added"):
        with pytest.raises(ValidationError):
            parse_events(bad)
    assert validate_url("https://h.example:8443/a?b=c") == "https://h.example:8443/a?b=c"
    for bad in ("https://", "h.example/x", "javascript:alert(1)", "https://a b", "http://x" + "/a" * 1100):
        with pytest.raises(ValidationError):
            validate_url(bad)


def test_the_backoff_schedule() -> None:
    assert [backoff_s(k, 10.0) for k in range(1, 9)] == [10, 20, 40, 80, 160, 320, 640, 1280]


# -- many processes at once ---------------------------------------------------------------

EVENTS_TOTAL = 1000
PROCESSES = 4


def _worker(location: str, model_type: str, count: int, alias: str) -> None:
    project = Project.open(location)
    toggle(project, count, model_type, alias)
    project.close()


def test_events_from_four_processes_each_arrive_once_in_order_per_model_type(
    project: Project,
) -> None:
    from mlops_cli import ModelVersion

    total = EVENTS_TOTAL
    project.registry.register_version(ModelVersion("cnn", "1.0.0", model_path="m.pt"))
    project.registry.register_version(ModelVersion("cnn", "1.1.0", model_path="m.pt"))
    project.store.clock = lambda: datetime.now(timezone.utc)
    with receiver() as got:
        project.webhooks.add(got.url, "*")
        context = multiprocessing.get_context("fork")
        workers = [
            context.Process(
                target=_worker,
                args=(project.store.location, ("gnn", "cnn")[i % 2], total // PROCESSES, f"p{i}"),
            )
            for i in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(600)
            assert worker.exitcode == 0
        project.webhooks.deliver(for_s=600)  # what the changing processes left (cron's part)
    ids = [r.doc["id"] for r in got.accepted]
    assert len(ids) == total and len(set(ids)) == total
    assert got.duplicates == 0
    per_type: dict[str, list[int]] = {}
    for r in got.accepted:
        per_type.setdefault(r.doc["model_type"], []).append(r.doc["seq"])
    assert per_type == {t: list(range(1, total // 2 + 1)) for t in ("gnn", "cnn")}
