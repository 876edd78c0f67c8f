"""Write safety: atomic replace, the project lock across processes, torn log tails."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_cli import ModelVersion, Project, StateError, jsonl
from mlops_cli.store import files as files_mod


def test_failure_between_temp_write_and_replace_keeps_old_registry(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/a"))
    before = project.registry_path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crash before rename")

    monkeypatch.setattr(files_mod.os, "replace", boom)
    with pytest.raises(RuntimeError):
        project.registry.register_version(ModelVersion("gnn", "v1.1.0", model_path="/b"))
    monkeypatch.undo()
    assert project.registry_path.read_bytes() == before
    assert [p.name for p in project.root.iterdir() if p.name.endswith(".tmp")] == []
    reopened = Project.open(project.root)
    assert [v.version for v in reopened.registry.list_versions("gnn")] == ["v1.0.0"]


def test_disk_error_on_write_is_a_clear_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = project.registry_path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_mod.os, "fsync", full)
    with pytest.raises(StateError, match="No space left"):
        project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/a"))
    monkeypatch.undo()
    assert project.registry_path.read_bytes() == before


def _register_and_promote(root: str, worker: int, rounds: int) -> None:
    project = Project.open(root)
    for i in range(rounds):
        version = f"{worker}.{i}.0"
        registered = project.registry.register_version(
            ModelVersion(f"m{worker % 2}", version, model_path="/x")
        )
        if not registered.is_champion:  # the very first version already is
            project.registry.promote_to_champion(f"m{worker % 2}", version)
        project.registry.update_metrics(f"m{worker % 2}", version, 1.0, 0.5)


def test_concurrent_processes_lose_no_update(project: Project) -> None:
    workers, rounds = 4, 25
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_register_and_promote, args=(str(project.root), w, rounds))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = Project.open(project.root).state().to_doc()
    registered = {(t, v) for t, m in state["models"].items() for v in m["versions"]}
    assert len(registered) == workers * rounds
    events = Project.open(project.root).registry.history()
    assert sum(e["event"] == "registered" for e in events) == workers * rounds
    assert sum(e["event"] == "promoted" for e in events) == workers * rounds
    for model in state["models"].values():
        # every promotion but the current champion's is in the history, in order
        assert len(model["champion_history"]) == len(model["versions"]) - 1
        champions = [v for v, r in model["versions"].items() if r["traffic_percentage"] == 100]
        assert champions == [model["champion"]]


def test_torn_tail_is_skipped_by_readers_and_cut_by_the_next_writer(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    jsonl.WRITER.append(log, b'{"a": 1}\n{"a": 2}\n', timeout=1)
    with open(log, "ab") as f:
        f.write(b'{"a": 3, "b"')  # a crash mid-line
    chunk = jsonl.read_from(log)
    assert [r["a"] for r in chunk.records] == [1, 2]
    assert chunk.torn_bytes == len(b'{"a": 3, "b"')
    assert [r["a"] for r in jsonl.tail(log, 5).records] == [1, 2]
    assert jsonl.tail(log, 5).torn_bytes == chunk.torn_bytes
    jsonl.WRITER.append(log, b'{"a": 4}\n', timeout=1)
    assert log.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 4}\n'


def test_torn_metrics_log_still_counts_whole_records(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/a"))
    project.registry.update_metrics("gnn", "v1.0.0", 10, 0.5)
    with open(project.metrics_log("gnn", "v1.0.0"), "ab") as f:
        f.write(b'{"ts": "x", "inference_time_ms": 99')
    assert project.registry.get_version("gnn", "v1.0.0").requests == 1
    project.registry.update_metrics("gnn", "v1.0.0", 20, 0.7)
    v = project.registry.get_version("gnn", "v1.0.0")
    assert (v.requests, v.avg_inference_time_ms) == (2, pytest.approx(15.0))


def test_malformed_middle_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(StateError, match=r"log.jsonl: line 2 "):
        jsonl.read_from(log)
    with pytest.raises(StateError, match=r"line 2 "):
        jsonl.tail(log, 3)
    chunk = jsonl.read_from(log, skip_invalid=True)
    assert [r["a"] for r in chunk.records] == [1, 3] and chunk.skipped == [2]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.integers(-(2**53), 2**53) | st.text(max_size=300)),
        max_size=60,
    ),
    st.integers(0, 70),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
)
def test_tail_equals_the_end_of_a_full_read(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[dict[str, object]],
    count: int,
    torn: bytes,
) -> None:
    log = tmp_path_factory.mktemp("tail") / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + torn)
    full = jsonl.read_from(log)
    got = jsonl.tail(log, count)
    assert got.records == (full.records[-count:] if count else [])
    assert got.end == full.end == os.path.getsize(log) - len(torn)


def test_stale_lock_file_does_not_block(project: Project) -> None:
    # A lock file left behind (its holder killed) holds no flock: the next command proceeds.
    (project.root / ".mlops.lock").write_text("")
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/a"))
    assert project.registry.get_champion("gnn") is not None


def test_example_registry_is_a_valid_project(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "registry.example.yaml"
    (tmp_path / "registry.yaml").write_bytes(example.read_bytes())
    project = Project.open(tmp_path)
    assert project.registry.require_champion("gnn").version == "v2.1.0"
    assert project.registry.require_champion("rag").version == "1.3.0"
    assert project.registry.rollback("gnn").version == "v2.0.0"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.integers(-(2**53), 2**53)), max_size=40),
    st.integers(1, 64),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
)
def test_chunked_reads_equal_one_read(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[dict[str, object]],
    block: int,
    torn: bytes,
) -> None:
    log = tmp_path_factory.mktemp("chunks") / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + torn)
    chunks = list(jsonl.read_chunks(log, block=block))
    assert [r for c in chunks for r in c.records] == jsonl.read_from(log).records == records
    assert chunks[-1].end == os.path.getsize(log) - len(torn)
    assert chunks[-1].torn_bytes == len(torn)
    assert sum(c.lines for c in chunks) == len(records)


def test_atomic_write_removes_temp_files_of_dead_writers(tmp_path: Path) -> None:
    target = tmp_path / "mlops.prom"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stale = tmp_path / f".mlops.prom.{dead.pid}.tmp"
        busy = tmp_path / f".mlops.prom.{live.pid}.tmp"
        stale.write_text("half")
        busy.write_text("being written")
        files_mod.atomic_write(target, b"new\n")
        assert target.read_bytes() == b"new\n"
        assert not stale.exists() and busy.exists()  # a live writer's file is left alone
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("count", [10, 11])
def test_an_unknown_version_names_at_most_the_ten_newest(count: int) -> None:
    from mlops_cli.errors import NotFoundError
    from mlops_cli.state import ModelType, VersionRecord

    record = VersionRecord("/m", {}, 0.0, "2026-01-01T00:00:00Z", "", {}, None, None, False)
    model = ModelType("m", versions={f"1.{i}.0": record for i in range(count)})
    with pytest.raises(NotFoundError) as found:
        model.canonical("9.9.9")
    newest = ", ".join(f"1.{i}.0" for i in range(count - 10, count))
    said = newest if count == 10 else f"11 versions, the newest {newest}; `mlops list m`"
    assert str(found.value) == f"unknown version '9.9.9' of m (registered: {said})"
