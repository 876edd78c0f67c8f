"""`mlops store copy`: a directory project into PostgreSQL and back; the registry, every record
and every decision come out the same (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import Project
from mlops_cli.errors import ProjectNotFoundError
from tests.golden.capture import normalize

from . import pg_server as fixtures
from .faults.helpers import ab_project, requests_jsonl

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url

QUERIES = [
    ["list", "--json"],
    ["champion", "gnn", "--json"],
    ["history", "--json"],
    ["ab", "list", "--json"],
    ["ab", "evaluate", "gnn_v2.2_test", "--json"],
    ["drift", "report", "gnn", "v2.2.0", "--json"],
    ["config", "list", "--json"],
]


def mlops(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_PROJECT_DIR"}
    return subprocess.run([sys.executable, "-m", "mlops_cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def answers(location: str, demo: Path) -> dict[str, Any]:
    out = {}
    for query in QUERIES:
        run = mlops("-C", location, *query)
        assert run.returncode == 0, (location, query, run.stderr)
        out[" ".join(query)] = normalize(json.loads(run.stdout), str(demo))
    return out


def test_a_project_copied_into_postgresql_and_back_answers_the_same(
    pg_url: str, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    assert mlops("demo", str(demo)).returncode == 0
    there = mlops("store", "copy", str(demo), pg_url, "--json")
    assert there.returncode == 0, there.stderr
    back = tmp_path / "back"
    assert mlops("store", "copy", pg_url, str(back), "--json").returncode == 0
    want = answers(str(demo), demo)
    got = answers(pg_url, demo)
    assert got == want, _diff(got, want)[:8]
    assert answers(str(back), demo) == want
    records = json.loads(there.stdout)["records"]
    assert records["ab/gnn_v2.2_test"] == 7 * 1500
    assert records["drift/gnn/v2.2.0/reference"] == 5000
    assert mlops("store", "copy", str(demo), pg_url).returncode == 1  # not into a used store


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


# -- batch ids, checking first, one unit ----------------------------------------------------------

BATCH = 1000  # requests of the batch recorded before the copy
SINGLE = 5  # requests recorded one at a time


def location(kind: str, tmp_path: Path, server: fixtures.Server, name: str) -> str:
    """A new project location of a kind: a directory path or a new database's URL."""
    if kind == "dir":
        return str(tmp_path / name)
    return server.url(server.create_database())


def with_a_batch(where: str) -> None:
    """The faults suite's A/B project with a batch sent under an id and a few single records."""
    project = ab_project(where)
    try:
        first = project.ab.record_batch("t", requests_jsonl(BATCH, seed=3), batch_id="nightly-7")
        assert (first.recorded, first.already_recorded) == (BATCH, 0)
        for _ in range(SINGLE):
            project.ab.record_result("t", "control", 10.0, 0.5, user_id="u1")
    finally:
        project.store.close()


@pytest.mark.parametrize(
    ("source_kind", "target_kind"), [("dir", "pg"), ("pg", "dir"), ("dir", "dir"), ("pg", "pg")]
)
def test_a_batch_recorded_before_a_copy_is_recorded_once_after_it(
    source_kind: str, target_kind: str, pg_server: fixtures.Server, tmp_path: Path
) -> None:
    source = location(source_kind, tmp_path, pg_server, "source")
    target = location(target_kind, tmp_path, pg_server, "target")
    with_a_batch(source)
    copied = mlops("store", "copy", source, target, "--json")
    assert copied.returncode == 0, copied.stderr
    result = json.loads(copied.stdout)
    assert result["records"]["ab/t"] == BATCH + SINGLE
    was = Project.open(source)
    try:  # on PostgreSQL the flushed single records are a batch of their own, id and all
        ids = was.store.batches("ab/t")
    finally:
        was.store.close()
    assert ids["nightly-7"] == BATCH and result["batch_ids"] == len(ids)
    project = Project.open(target)
    try:
        assert project.store.batches("ab/t") == ids
        again = project.ab.record_batch("t", requests_jsonl(BATCH, seed=3), batch_id="nightly-7")
        assert (again.recorded, again.already_recorded) == (0, BATCH)
        assert project.store.count("ab/t") == BATCH + SINGLE  # not 2 * BATCH + SINGLE
        other = project.ab.record_batch("t", requests_jsonl(10, seed=4), batch_id="nightly-8")
        assert (other.recorded, other.already_recorded) == (10, 0)  # other ids still append
    finally:
        project.store.close()


def poison(root: Path, line: bytes) -> bytes:
    """Write a line by hand into a directory project's A/B log; return the log as it was."""
    log = root / "logs" / "ab" / "t.jsonl"
    before = log.read_bytes()
    log.write_bytes(before + line + b"\n")
    return before


NUL_USER = b'{"ts":"2026-12-01T10:00:00.000000Z","variant":"control","user_id":"a\\u0000b",' \
    b'"inference_time_ms":10.0,"confidence":0.5,"error":false}'
FAR_FUTURE = b'{"ts":"9999-12-31T23:59:59-14:00","variant":"control","user_id":"u2",' \
    b'"inference_time_ms":10.0,"confidence":0.5,"error":false}'


@pytest.mark.parametrize(("target_kind", "line", "says"), [
    ("pg", NUL_USER, "nul"), ("dir", NUL_USER, "nul"), ("pg", FAR_FUTURE, "ts")
])
def test_a_record_a_store_cannot_hold_fails_the_copy_cleanly_and_the_retry_works(
    target_kind: str, line: bytes, says: str, pg_server: fixtures.Server, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    with_a_batch(str(source))
    clean = poison(source, line)
    target = location(target_kind, tmp_path, pg_server, "target")
    failed = mlops("store", "copy", str(source), target)
    assert failed.returncode == 1 and failed.stdout == ""
    lines = failed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), failed.stderr
    # the record is named: the 1,006th of ab/t (after the batch and the single records)
    assert f"ab/t, record {BATCH + SINGLE + 1}" in lines[0] and says in lines[0].lower()
    assert lines[0].endswith("nothing was copied: correct or remove that record in the source, "
                             "then copy again")
    if target_kind == "dir":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # no target, no temp
    else:  # refused before anything was written: the database untouched, no mlops schema
        with pytest.raises(ProjectNotFoundError):
            Project.open(target)
    (source / "logs" / "ab" / "t.jsonl").write_bytes(clean)  # fixed: the line taken out
    retried = mlops("store", "copy", str(source), target, "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["records"]["ab/t"] == BATCH + SINGLE


@pytest.mark.parametrize("target_kind", ["dir", "pg"])
def test_a_copy_failing_while_it_writes_leaves_no_target(
    target_kind: str, pg_server: fixtures.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after records were written (here: noting the last stream's batch ids)
    leaves no directory, or the store as empty as it was found."""
    from mlops_cli.errors import StateError
    from mlops_cli.project import copy_project
    from mlops_cli.store.files import FileStore
    from mlops_cli.store.postgres import PostgresStore

    with_a_batch(str(tmp_path / "source"))
    source = Project.open(tmp_path / "source")
    target = location(target_kind, tmp_path, pg_server, "target")

    def fail(self: Any, stream: str, batches: dict[str, int]) -> None:
        raise StateError("disk full (injected)")

    monkeypatch.setattr(FileStore if target_kind == "dir" else PostgresStore, "carry_batches", fail)
    with pytest.raises(StateError, match="injected"):
        copy_project(source, target)
    if target_kind == "dir":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]
    else:
        empty = Project.open(target)
        try:
            assert empty.store.streams() == [] and not empty.state().models
        finally:
            empty.store.close()
    monkeypatch.undo()
    assert copy_project(source, target).records["ab/t"] == BATCH + SINGLE


def test_a_copy_into_a_directory_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    with_a_batch(str(tmp_path / "source"))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    run = mlops("store", "copy", str(tmp_path / "source"), str(tmp_path / "used"))
    assert run.returncode == 1 and "not empty" in run.stderr
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()  # an empty directory is taken
    assert mlops("store", "copy", str(tmp_path / "source"), str(tmp_path / "empty")).returncode == 0
    assert Project.open(tmp_path / "empty").store.count("ab/t") == BATCH + SINGLE


# -- what a copy checks, record by record (no server) ----------------------------------------

RECENT = "2026-11-30T12:00:00.000000Z"
REQUEST = {"ts": RECENT, "variant": "control", "user_id": "u1", "inference_time_ms": 10.0,
           "confidence": 0.5, "error": False}
METRIC = {"ts": RECENT, "inference_time_ms": 10.0, "confidence": 0.5, "error": False}
EVENT = {"ts": RECENT, "event": "promoted", "model_type": "gnn", "reason": "ok",
         "actor": "ci", "details": {"tags": ["a", "b"]}}


@pytest.mark.parametrize(
    ("stream", "record", "refused"),
    [
        ("ab/t", REQUEST, None),
        ("ab/t", {**REQUEST, "user_id": "a\x00b"}, "NUL"),
        ("ab/t", {**REQUEST, "ts": "9999-12-31T23:59:59-14:00"}, "ts"),  # year 10000 in UTC
        ("ab/t", {k: v for k, v in REQUEST.items() if k != "ts"}, "no ts"),
        ("ab/t", {**REQUEST, "variant": "other"}, "variant"),  # the stream's own validation
        ("metrics/gnn/1.0.0", METRIC, None),
        ("metrics/gnn/1.0.0", {**METRIC, "confidence": 1.5}, "confidence"),
        ("metrics/gnn/1.0.0", {**METRIC, "error": "no"}, "error"),
        ("metrics/gnn/1.0.0", {k: v for k, v in METRIC.items() if k != "confidence"}, "missing"),
        ("drift/gnn/1.0.0/production", {"ts": RECENT, "prediction": 0.1, "confidence": 0.9},
         None),
        ("drift/gnn/1.0.0/production", {"ts": RECENT, "prediction": 0.1}, "missing"),
        ("events", EVENT, None),
        ("events", {**EVENT, "details": {"tags": ["a", "b\x00"]}}, "NUL"),  # nested text
        ("events", {**EVENT, "details": {"a\x00": 1}}, "NUL"),  # a key
        ("drift/gnn/1.0.0/checks", ["not", "a", "record"], "JSON object"),
    ],
)
def test_what_a_copy_checks_in_each_record(
    stream: str, record: Any, refused: str | None
) -> None:
    from mlops_cli.errors import ValidationError
    from mlops_cli.project import check_record

    if refused is None:
        check_record(stream, record, 7)
        return
    with pytest.raises(ValidationError) as info:
        check_record(stream, record, 7)
    assert f"cannot copy {stream}, record 7: " in str(info.value)
    assert refused in str(info.value)


def test_a_copy_into_a_directory_keeps_no_descriptor_of_it(tmp_path: Path) -> None:
    """The process's shared log descriptors (jsonl.WRITER) of the copy's logs are let go:
    a library process copying many projects does not hold their files open."""
    from mlops_cli.project import copy_project

    with_a_batch(str(tmp_path / "source"))
    source = Project.open(tmp_path / "source")
    copy_project(source, tmp_path / "target")
    source.store.close()

    def held() -> list[str]:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # the descriptor listdir itself used
                continue
        return [link for link in links if link.startswith(str(tmp_path / "target"))]

    assert held() == []
    assert Project.open(tmp_path / "target").store.count("ab/t") == BATCH + SINGLE


@pytest.mark.parametrize("target_kind", ["dir", "pg"])
def test_a_copy_carries_the_aliases(
    target_kind: str, tmp_path: Path, pg_server: fixtures.Server
) -> None:
    source = tmp_path / "src"
    with Project.init(source) as project:
        from mlops_cli import ModelVersion

        project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m.pt"))
        project.registry.register_version(ModelVersion("gnn", "1.1.0", model_path="m.pt"))
        project.registry.set_alias("gnn", "shadow", "1.1.0")
    target = location(target_kind, tmp_path, pg_server, "dst")
    assert mlops("store", "copy", str(source), target).returncode == 0
    with Project.open(target) as copied:
        assert copied.registry.get_version_by_alias("gnn", "shadow").version == "1.1.0"
