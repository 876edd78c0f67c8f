"""Issue 12 case 1 through the real CLI: links planted in the project never carry a write out.

Each case plants a link (or FIFO) where a command writes, runs the command, and checks it
fails with one clean error naming the planted path while a canary outside stays unchanged.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops_cli.cli import app

from ..conftest import assert_one_error_line
from ..test_safefs import snapshot
from .helpers import ab_project, requests_jsonl

RECORD = ["--variant", "control", "--inference-time-ms", "5", "--confidence", "0.9"]
SAMPLES = b'{"prediction": 0.5, "confidence": 0.9}\n' * 3


def run(root: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["-C", str(root), *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    top = tmp_path / "canary"
    (top / "outdir").mkdir(parents=True)
    (top / "token.txt").write_bytes(b"secret-token-without-newline")
    return top


def _link(at: Path, to: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    if at.exists() or at.is_symlink():
        at.unlink()
    at.symlink_to(to)


def _move_out(at: Path, to: Path) -> None:
    """Move a file out of the project and leave a link to it in its place."""
    to.write_bytes(at.read_bytes())
    _link(at, to)


def _fifo(at: Path) -> None:
    at.unlink(missing_ok=True)
    os.mkfifo(at)


CASES: dict[str, tuple[str, Callable[[Path, Path], None], list[str], bytes | None]] = {
    "ab record, log linked to a file": (
        "logs/ab/t.jsonl",
        lambda root, canary: _link(root / "logs/ab/t.jsonl", canary / "token.txt"),
        ["ab", "record", "t", *RECORD],
        None,
    ),
    "ab record --file, log linked": (
        "logs/ab/t.jsonl",
        lambda root, canary: _link(root / "logs/ab/t.jsonl", canary / "token.txt"),
        ["ab", "record", "t", "--file", "-", "--batch-id", "b1"],
        requests_jsonl(20, seed=3),
    ),
    "ab record --file, batch journal linked": (
        "logs/ab/.t.jsonl.batches.jsonl",
        lambda root, canary: _link(root / "logs/ab/.t.jsonl.batches.jsonl", canary / "token.txt"),
        ["ab", "record", "t", "--file", "-", "--batch-id", "b1"],
        requests_jsonl(20, seed=3),
    ),
    "metrics update, directory linked": (
        "logs/metrics",
        lambda root, canary: _link(root / "logs/metrics", canary / "outdir"),
        ["metrics", "update", "gnn", "1.0.0", "--inference-time-ms", "5", "--confidence", "0.9"],
        None,
    ),
    "drift record, logs/drift linked": (
        "logs/drift",
        lambda root, canary: _link(root / "logs/drift", canary / "outdir"),
        ["drift", "record", "gnn", "1.0.0", "--prediction", "0.5", "--confidence", "0.9"],
        None,
    ),
    "drift reference --replace, reference linked": (
        "logs/drift/gnn/1.0.0/reference.jsonl",
        lambda root, canary: _link(
            root / "logs/drift/gnn/1.0.0/reference.jsonl", canary / "token.txt"
        ),
        ["drift", "reference", "gnn", "1.0.0", "--file", "-", "--replace"],
        SAMPLES,
    ),
    "ab record, log is a FIFO": (
        "logs/ab/t.jsonl",
        lambda root, canary: _fifo(root / "logs/ab/t.jsonl"),
        ["ab", "record", "t", *RECORD],
        None,
    ),
    "deprecate, .mlops.lock linked": (
        ".mlops.lock",
        lambda root, canary: _link(root / ".mlops.lock", canary / "token.txt"),
        ["deprecate", "gnn", "1.2.0"],
        None,
    ),
    "deprecate, .mlops.lock is a FIFO": (
        ".mlops.lock",
        lambda root, canary: _fifo(root / ".mlops.lock"),
        ["deprecate", "gnn", "1.2.0"],
        None,
    ),
    "deprecate, registry.yaml linked": (
        "registry.yaml",
        lambda root, canary: _move_out(root / "registry.yaml", canary / "registry.yaml"),
        ["deprecate", "gnn", "1.2.0"],
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_planted_link_is_a_clean_error_and_nothing_outside_changes(
    tmp_path: Path, canary: Path, case: str
) -> None:
    named, plant, args, data = CASES[case]
    root = tmp_path / "p"
    ab_project(root)
    (root / "logs" / "ab").mkdir(parents=True, exist_ok=True)
    plant(root, canary)
    before = snapshot(canary)
    code, stdout, stderr = run(root, *args, input=data)
    assert_one_error_line(_Run(code, stdout, stderr), named, "in the project")
    assert snapshot(canary) == before


class _Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def test_registry_keeps_its_mode_through_commands(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    (root / "registry.yaml").chmod(0o600)
    assert run(root, "deprecate", "gnn", "1.2.0")[0] == 0
    assert stat.S_IMODE((root / "registry.yaml").stat().st_mode) == 0o600


def test_fifos_where_logs_are_read_never_hang(tmp_path: Path) -> None:
    """A FIFO at a log, its summary cache or registry.yaml blocked every reader forever."""
    import subprocess

    from .helpers import MLOPS

    root = tmp_path / "p"
    project = ab_project(root)
    project.ab.record_batch("t", requests_jsonl(50, seed=4))
    project.ab.evaluate_test("t")  # writes the summary cache
    cache = root / "logs" / "ab" / ".t.jsonl.summary.json"
    assert cache.exists()
    _fifo(cache)
    drift_dir = root / "logs" / "drift" / "gnn" / "1.0.0"
    drift_dir.mkdir(parents=True)
    _fifo(drift_dir / "production.jsonl")
    (drift_dir / "reference.jsonl").write_bytes(SAMPLES)
    ab = subprocess.run(
        [MLOPS, "-C", str(root), "ab", "evaluate", "t"], capture_output=True, timeout=30
    )
    assert ab.returncode == 0  # the cache is derived: recomputed
    report = subprocess.run(
        [MLOPS, "-C", str(root), "drift", "report", "gnn", "1.0.0"], capture_output=True, timeout=30
    )
    assert report.returncode == 1
    assert b"logs/drift/gnn/1.0.0/production.jsonl (in the project) is a FIFO" in report.stderr
    _fifo(root / "registry.yaml")
    listed = subprocess.run([MLOPS, "-C", str(root), "list"], capture_output=True, timeout=30)
    assert listed.returncode == 1  # a clean error naming it, not a hang
    assert listed.stderr.startswith(b"error: registry.yaml (in the project) is a FIFO")


def _hard_link(at: Path, to: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.unlink(missing_ok=True)
    os.link(to, at)


# A file outside the project whose last line has no newline: appending to a hard link of it
# would first cut that "torn tail" (7,625 bytes became 392), then add to it.
BIG = b"".join(b"line %d of a file that is not the project's\n" % i for i in range(170))[:7625]

HARD_LINKS: dict[str, tuple[str, list[str], bytes | None]] = {
    "config set, events.jsonl": ("events.jsonl", ["config", "set", "lock_timeout_s", "20"], None),
    "deprecate, registry.yaml": ("registry.yaml", ["deprecate", "gnn", "1.2.0"], None),
    "deprecate, .mlops.lock": (".mlops.lock", ["deprecate", "gnn", "1.2.0"], None),
    "ab record, the test's log": ("logs/ab/t.jsonl", ["ab", "record", "t", *RECORD], None),
    "ab record --file, batch journal": (
        "logs/ab/.t.jsonl.batches.jsonl",
        ["ab", "record", "t", "--file", "-", "--batch-id", "b1"],
        requests_jsonl(20, seed=3),
    ),
    "metrics update, metrics log": (
        "logs/metrics/gnn/1.0.0.jsonl",
        ["metrics", "update", "gnn", "1.0.0", "--inference-time-ms", "5", "--confidence", "0.9"],
        None,
    ),
    "drift record, production log": (
        "logs/drift/gnn/1.0.0/production.jsonl",
        ["drift", "record", "gnn", "1.0.0", "--prediction", "0.5", "--confidence", "0.9"],
        None,
    ),
    "drift reference --replace, reference": (
        "logs/drift/gnn/1.0.0/reference.jsonl",
        ["drift", "reference", "gnn", "1.0.0", "--file", "-", "--replace"],
        SAMPLES,
    ),
    "ab finalize, the test archive": (
        "archive/ab_tests.jsonl",
        ["ab", "finalize", "t", "rollback"],
        None,
    ),
    "drift check, the checks log": (
        "logs/drift/gnn/1.0.0/checks.jsonl",
        ["drift", "check", "gnn", "1.0.0"],
        None,
    ),
}


@pytest.mark.parametrize("case", list(HARD_LINKS))
def test_a_hard_link_to_a_file_outside_is_a_clean_error_and_changes_nothing(
    tmp_path: Path, canary: Path, case: str
) -> None:
    """A hard link passes every symbolic-link check (it is a regular file): each written path
    checks the link count of what it opened."""
    named, args, data = HARD_LINKS[case]
    root = tmp_path / "p"
    project = ab_project(root)
    if named.endswith("checks.jsonl"):
        detector = project.drift_detector("gnn", "1.0.0")
        detector.set_reference(SAMPLES * 100)
        detector.record_batch(SAMPLES * 100)
    if named == "registry.yaml":
        (canary / "big.txt").write_bytes((root / named).read_bytes())
    elif named.endswith(".batches.jsonl"):  # read before it is written: valid lines, torn tail
        (canary / "big.txt").write_bytes(b'{"batch":"b0","first":0,"start":0,"stamp":"x"}\n{"to')
    elif named.endswith("checks.jsonl"):  # a real check, then a torn tail
        detector.check()
        (canary / "big.txt").write_bytes((root / named).read_bytes() + b'{"to')
    else:
        (canary / "big.txt").write_bytes(BIG)
    _hard_link(root / named, canary / "big.txt")
    before, inside = snapshot(canary), snapshot(root)
    code, stdout, stderr = run(root, *args, input=data)
    assert_one_error_line(_Run(code, stdout, stderr), named, "in the project", "hard links", "copy")
    assert snapshot(canary) == before
    assert snapshot(root) == inside


@pytest.mark.parametrize("plant", ["fifo", "symlink"])
def test_a_fifo_or_link_at_a_reference_log_never_hangs_the_views(
    tmp_path: Path, canary: Path, plant: str
) -> None:
    """Counting a stream's records opened the log with a plain open: a FIFO there hung
    `drift check --all` and `report --html` forever, and a symbolic link was followed."""
    import subprocess

    from .helpers import MLOPS

    root = tmp_path / "p"
    project = ab_project(root)
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(SAMPLES * 100)
    detector.record_batch(SAMPLES * 100)
    reference = root / "logs" / "drift" / "gnn" / "1.0.0" / "reference.jsonl"
    if plant == "fifo":
        _fifo(reference)
    else:
        _move_out(reference, canary / "reference.jsonl")
    for args in (["drift", "check", "--all"], ["report", "--html", str(tmp_path / "r.html")]):
        done = subprocess.run(
            [MLOPS, "-C", str(root), *args], capture_output=True, timeout=60, text=True
        )
        shown = "is a FIFO" if plant == "fifo" else "is a symbolic link"
        assert f"logs/drift/gnn/1.0.0/reference.jsonl (in the project) {shown}" in (
            done.stdout + done.stderr
        ), (args, done.returncode, done.stdout, done.stderr)
