"""The audit log a page at a time: newest first, a cursor, a bounded page, read from the end.

A large log is written directly (fast), then committed by one real change, so the expected
pages come from the list that was written, not from the code under test.
"""

from __future__ import annotations

import json
import os
import random
import threading
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mlops_cli import ModelVersion, Project
from mlops_cli import jsonl as jsonl_module
from mlops_cli.errors import StateError, ValidationError
from mlops_cli.limits import LINE_MAX_BYTES
from mlops_cli.ui import data
from mlops_cli.ui.server import make_server, url_of

N = 30_000
KINDS = ("registered", "promoted", "rolled_back", "deprecated")


def written_events(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "ts": f"2026-01-01T00:00:{i % 60:02d}.000000Z",
            "event": KINDS[rng.randrange(4)],
            "model_type": "a" if rng.random() < 0.9 else "b",
            "version": f"1.0.{i}",
            "actor": "gen",
            "seq": i,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A project whose audit log holds N written events, then the two its registrations
    commit (which make the written ones committed too)."""
    root = tmp_path_factory.mktemp("paging") / "p"
    project = Project.init(root)
    written = written_events(N)
    (root / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in written))
    for model_type in ("a", "b"):
        project.registry.register_version(ModelVersion(model_type, "9.0.0", model_path="/m"))
    every = written + [
        {k: v for k, v in e.items()} for e in project.registry.history(limit=4)
    ]  # the last four: registered and promoted, for a and b
    assert [e["seq"] for e in every[:N]] == list(range(N))
    return root, every


def walk(root: Path, limit: int, **query: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    before = None
    while True:
        page = data.events(root, before=before, limit=limit, **query)
        assert len(page["events"]) <= limit
        got += page["events"]
        if page["next"] is None:
            return got
        before = page["next"]


def test_pages_of_a_large_log_join_up_to_it_newest_first(
    big: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, every = big
    first = data.events(root, limit=10)
    assert first["events"] == every[::-1][:10]
    assert first["next"] is not None
    second = data.events(root, before=first["next"], limit=10)
    assert second["events"] == every[::-1][10:20]
    assert walk(root, 4999) == every[::-1]


def test_a_filtered_page_holds_only_matching_events_in_order(
    big: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, every = big
    expected = [e for e in reversed(every) if e["model_type"] == "b" and e["event"] == "promoted"]
    assert len(expected) > 500  # about 30,000 / 10 / 4
    assert walk(root, 211, model_type="b", kind="promoted") == expected
    page = data.events(root, model_type="b", kind="promoted", limit=len(expected))
    assert page["events"] == expected and page["next"] is None  # nothing older matches


def test_a_page_reads_from_the_end_not_the_whole_log(
    big: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = big
    size = (root / "events.jsonl").stat().st_size
    assert size > 3_000_000
    data.events(root, limit=50)  # imports and caches warmed
    tracemalloc.start()
    try:
        data.events(root, limit=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a block of lines parsed at a time (about 0.6 MB of records); the whole log parsed would
    # be several times its size
    assert peak < size / 2, (peak, size)


def test_a_cursor_that_is_no_position_is_refused(big: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = big
    first = data.events(root, limit=1)
    with pytest.raises(ValidationError, match=r"is no position in events\.jsonl"):
        data.events(root, before=first["next"] + 1)  # inside a line
    size = (root / "events.jsonl").stat().st_size
    with pytest.raises(ValidationError):
        data.events(root, before=size + 1)
    empty = data.events(root, before=0)  # the start of the log: nothing older
    assert empty["events"] == [] and empty["next"] is None


# -- what is left out ---------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Project:
    project = Project.init(tmp_path / "s")
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    return project


def test_malformed_lines_are_skipped_and_counted_or_refused(small: Project) -> None:
    log = small.root / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = b"{" + b"x" * (len(lines[1]) - 2) + b"\n"  # same length: still committed
    log.write_bytes(b"".join(lines))
    page = small.registry.history_page(limit=10, skip_invalid=True)
    assert [e["version"] for e in page] == ["1.2.0", "1.1.0", "1.0.0"]  # registered x3
    assert len(page) == len(lines) - 1 and page.skipped == 1
    with pytest.raises(StateError, match=r"events.jsonl: the line at byte \d+ is not a JSON"):
        small.registry.history_page(limit=10)


def test_lines_of_an_uncommitted_change_are_not_on_a_page(small: Project) -> None:
    log = small.root / "events.jsonl"
    before = [e.to_dict() for e in small.registry.history_page(limit=100)]
    with open(log, "ab") as f:  # a commit that crashed before its registry.yaml
        f.write(orjson.dumps({"event": "promoted", "model_type": "gnn", "version": "x"}) + b"\n")
    assert [e.to_dict() for e in small.registry.history_page(limit=100)] == before


def test_reading_backwards_matches_reading_forwards(tmp_path: Path) -> None:
    """Lines of every length around the block and the line limit, in blocks of many sizes;
    a torn last line is left out and an over-long line stands as OVERLONG_LINE."""
    rng = random.Random(3)
    path = tmp_path / "log"
    for trial in range(60):
        lines = [
            os.urandom(rng.choice([0, 1, 7, 64, 200])).replace(b"\n", b"n")
            for _ in range(rng.randrange(0, 40))
        ]
        if trial % 10 == 0:
            lines.insert(rng.randrange(len(lines) + 1), b"L" * (LINE_MAX_BYTES + 1))
        torn = b"t" * rng.randrange(0, 3)
        path.write_bytes(b"".join(x + b"\n" for x in lines) + torn)
        starts, at = [], 0
        for x in lines:
            starts.append(at)
            at += len(x) + 1
        expected = [
            (s, jsonl_module.OVERLONG_LINE if len(x) > LINE_MAX_BYTES else x)
            for s, x in zip(starts, lines, strict=True)
        ][::-1]
        block = rng.choice([5, 4096, 1 << 16] if trial % 10 == 0 else [1, 5, 64, 4096])
        assert list(jsonl_module.lines_backwards(path, path.stat().st_size, block)) == expected


# -- the API, the model page and the report -----------------------------------------------------


@pytest.fixture
def served(big: tuple[Path, list[dict[str, Any]]]) -> Iterator[str]:
    server = make_server(str(big[0]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url_of(server).rstrip("/")
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_events_api_pages_with_a_cursor_and_a_bounded_size(
    served: str, big: tuple[Path, list[dict[str, Any]]]
) -> None:
    every = big[1][::-1]
    status, page = get(served + "/api/events")
    assert status == 200 and page["events"] == every[: data.EVENTS_PAGE]
    status, page = get(served + f"/api/events?limit=7&before={page['next']}")
    assert page["events"] == every[data.EVENTS_PAGE : data.EVENTS_PAGE + 7]
    status, page = get(served + f"/api/events?limit={data.MAX_EVENTS_PAGE}")
    assert status == 200 and len(page["events"]) == data.MAX_EVENTS_PAGE
    for bad in (f"limit={data.MAX_EVENTS_PAGE + 1}", "limit=0", "limit=abc", "before=-1",
                "before=1" + "0" * 30, "before=%C2%B2", "before=3"):  # fmt: skip
        status, doc = get(served + "/api/events?" + bad)
        assert status == 400, bad
        assert doc["error"]["type"] == "ValidationError"


def test_the_model_page_holds_its_newest_events_and_the_cursor_of_older_ones(
    big: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, every = big
    doc = data.model(root, "b")
    mine = [e for e in reversed(every) if e["model_type"] == "b"]
    assert doc["events"] == mine[: data.MODEL_EVENTS]
    older = data.events(root, "b", before=doc["events_next"], limit=5)
    assert older["events"] == mine[data.MODEL_EVENTS : data.MODEL_EVENTS + 5]
    changes = [e for e in mine if e["event"] in data.CHAMPION_EVENTS][: data.TIMELINE_CHANGES]
    assert doc["timeline_complete"] is False
    assert doc["timeline"][-1]["version"] == "9.0.0"
    assert len(doc["timeline"]) <= len(changes)


def test_the_report_keeps_the_newest_thousand_events(
    big: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, every = big
    docs = data.bundle(root)
    assert docs["/events"]["events"] == every[::-1][: data.REPORT_EVENTS]
    assert docs["/events"]["kept"] == data.REPORT_EVENTS == 1000
