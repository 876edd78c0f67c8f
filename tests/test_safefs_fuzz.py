"""Hostile project directories, fuzzed: a link (symbolic or hard), FIFO, directory or file
planted at any step of any path the tool writes; every write primitive either writes inside
the project or fails with a StateError, and a canary directory outside stays byte-for-byte
unchanged."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_cli import jsonl, safefs
from mlops_cli.errors import StateError
from tests.test_safefs import snapshot

WRITE_PATHS = [
    "registry.yaml",
    "events.jsonl",
    "logs/ab/t.jsonl",
    "logs/ab/.t.jsonl.batches.jsonl",
    "logs/metrics/g/1.0.0.jsonl",
    "logs/drift/g/1.0.0/reference.jsonl",
    "logs/drift/g/1.0.0/production.jsonl",
    "logs/drift/g/1.0.0/checks.jsonl",
    "archive/tests/t.yaml",
]
PLANTS = [
    "file_link",
    "dir_link",
    "dangling_link",
    "hard_link",
    "fifo",
    "directory",
    "file",
    "none",
]
OPS = ["append", "append_batch", "locked_log", "atomic_replace", "open_in", "open_read"]


def _plant(root: Path, canary: Path, rel: str, depth: int, kind: str) -> None:
    parts = rel.split("/")
    at = root.joinpath(*parts[: min(depth, len(parts) - 1) + 1])
    at.parent.mkdir(parents=True, exist_ok=True)
    if at.exists() or at.is_symlink():
        return
    if kind == "file_link":
        at.symlink_to(canary / "token.txt")
    elif kind == "dir_link":
        at.symlink_to(canary / "outdir")
    elif kind == "dangling_link":
        at.symlink_to(canary / "outdir" / "new")
    elif kind == "hard_link":  # a regular file, sharing its data with one outside
        os.link(canary / "token.txt", at)
    elif kind == "fifo":
        os.mkfifo(at)
    elif kind == "directory":
        at.mkdir()
    elif kind == "file":
        at.write_bytes(b'{"a": 1}\n{"torn')


def _run(op: str, root: Path, rel: str) -> Callable[[], None]:
    path = root / rel

    def run() -> None:
        if op == "append":
            writer = jsonl.LogWriter()
            try:
                writer.append(path, b'{"x":1}\n', 1.0, root=root)
            finally:
                writer.forget(path)
        elif op == "append_batch":
            writer = jsonl.LogWriter()
            try:
                writer.append_batch(path, "b", b'{"x":1}\n', "s", 1.0, root=root)
            finally:
                writer.forget(path)
        elif op == "locked_log":
            with jsonl.locked_log(path, 1.0, root=root) as fd:
                os.ftruncate(fd, 0)  # the batch cut-back and reference --replace do this
        elif op == "atomic_replace":
            safefs.atomic_replace(root, rel, b"new: 1\n")
        elif op == "open_in":
            os.close(safefs.open_in(root, rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        elif op == "open_read":
            with suppress(FileNotFoundError):
                os.close(safefs.open_read(root, rel))

    return run


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def fail(signum: int, frame: object) -> None:
        raise AssertionError("a write primitive blocked (FIFO?)")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rel=st.sampled_from(WRITE_PATHS),
    depth=st.integers(0, 4),
    kind=st.sampled_from(PLANTS),
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=4),
)
def test_no_write_leaves_the_project(rel: str, depth: int, kind: str, ops: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        canary = base / "canary"
        (canary / "outdir").mkdir(parents=True)
        (canary / "token.txt").write_bytes(b"secret-token-without-newline")
        (canary / "outdir" / "keep.txt").write_bytes(b"keep\n")
        root = base / "proj"
        root.mkdir()
        _plant(root, canary, rel, depth, kind)
        before = snapshot(canary)
        with _alarm(10):
            for op in ops:
                try:
                    _run(op, root, rel)()
                except StateError as exc:
                    # A clean error names a path inside the project, relative to it.
                    assert str(exc).split(" (in the project) ")[0] in rel
                else:
                    if op != "open_read":
                        real = (root / rel).resolve()
                        assert real.is_relative_to(root.resolve()) and real.is_file()
        assert snapshot(canary) == before


def test_a_hard_link_at_every_written_path_changes_nothing_outside(tmp_path: Path) -> None:
    """Every written path x every write primitive, with the file itself a hard link to a file
    outside whose last line has no newline (an append would first cut it as a torn tail)."""
    for i, rel in enumerate(WRITE_PATHS):
        for op in OPS:
            base = tmp_path / f"{i}-{op}"
            canary = base / "canary"
            canary.mkdir(parents=True)
            (canary / "token.txt").write_bytes(b'{"a": 1}\nsecret-token-without-newline')
            root = base / "proj"
            (root / rel).parent.mkdir(parents=True)
            os.link(canary / "token.txt", root / rel)
            before = snapshot(canary)
            try:
                _run(op, root, rel)()
            except StateError as exc:
                assert str(exc).startswith(f"{rel} (in the project) has 2 hard links"), exc
            else:
                assert op == "open_read", (rel, op)  # reading changes nothing
            assert snapshot(canary) == before, (rel, op)
