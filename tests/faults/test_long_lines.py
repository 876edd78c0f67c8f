"""Over-long lines and strings through the real entry point: a clean error in bounded memory.

A 300 MB line (`make stress`; 8 MB in `make test`) sent to a batch, or planted by hand in a
log, is one bad line: refused naming it, or skipped with --skip-invalid, read in one pass
without being held. Peak memory is the child process's own ru_maxrss.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .. import pg_server as fixtures
from ..conftest import snapshot
from .helpers import MLOPS, ab_project, requests_jsonl, samples_jsonl, scale

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url

LINE_MB = scale(8, 300)
RSS_MAX_MB = 200  # generous: the command itself runs in about 60-90 MB

# Runs a command as its own child and prints the child's exit code, peak RSS (kB) and output.
_MEASURE = """
import json, resource, subprocess, sys
stdin = open(sys.argv[1], "rb") if sys.argv[1] != "-" else subprocess.DEVNULL
run = subprocess.run(sys.argv[2:], stdin=stdin, capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": run.returncode, "rss_kb": peak, "out": run.stdout, "err": run.stderr}))
"""


def measured(root: Path | str, *args: str, stdin: Path | None = None) -> dict[str, object]:
    """Run mlops in a fresh child: exit code, peak RSS in MB, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(stdin or "-"), MLOPS, "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=900,  # only catches a hang: a 300 MB line takes seconds
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    result["rss_mb"] = int(result.pop("rss_kb")) / 1024  # type: ignore[call-overload]
    return result


def long_request(megabytes: int) -> bytes:
    """A request line that is valid JSON, made long by its user_id."""
    pad = b"u" * (megabytes << 20)
    return (
        b'{"variant":"control","inference_time_ms":5,"confidence":0.9,"user_id":"' + pad + b'"}\n'
    )


def test_a_batch_with_a_huge_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    project.ab.record_batch("t", requests_jsonl(50, seed=1))
    source = tmp_path / "batch.jsonl"
    with open(source, "wb") as f:
        f.write(requests_jsonl(3, seed=2))
        f.write(long_request(LINE_MB))
        f.write(requests_jsonl(3, seed=3))
    before = snapshot(project.root)
    for args, stdin, named in (
        (["ab", "record", "t", "--file", str(source)], None, f"{source}: "),  # the file named
        (["ab", "record", "t", "--file", "-", "--batch-id", "b1"], source, ""),
    ):
        run = measured(project.root, *args, stdin=stdin)
        assert run["code"] == 1, run
        assert str(run["err"]).splitlines() == [
            f"error: {named}1 bad line(s), nothing recorded: line 4: longer than 1 MiB "
            "(1,048,576 bytes)"
        ]
        assert float(run["rss_mb"]) < RSS_MAX_MB, run["rss_mb"]  # type: ignore[arg-type]
        assert snapshot(project.root) == before


@pytest.mark.postgres
def test_a_batch_with_a_huge_line_is_refused_in_bounded_memory_on_postgresql(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL store reads a batch through the same bounded line reader: the same
    error, the same memory bound, nothing recorded."""
    monkeypatch.setenv("MLOPS_SPOOL_DIR", str(tmp_path / "spool"))
    project = ab_project(pg_url)  # type: ignore[arg-type]
    project.ab.record_batch("t", requests_jsonl(50, seed=1))
    source = tmp_path / "batch.jsonl"
    with open(source, "wb") as f:
        f.write(requests_jsonl(3, seed=2))
        f.write(long_request(LINE_MB))
        f.write(requests_jsonl(3, seed=3))
    for args, stdin, named in (
        (["ab", "record", "t", "--file", str(source)], None, f"{source}: "),  # the file named
        (["ab", "record", "t", "--file", "-", "--batch-id", "b1"], source, ""),
    ):
        run = measured(pg_url, *args, stdin=stdin)
        assert run["code"] == 1, run
        assert str(run["err"]).splitlines() == [
            f"error: {named}1 bad line(s), nothing recorded: line 4: longer than 1 MiB "
            "(1,048,576 bytes)"
        ]
        assert float(run["rss_mb"]) < RSS_MAX_MB, run["rss_mb"]  # type: ignore[arg-type]
    assert project.store.count("ab/t") == 50
    project.store.close()


def test_a_huge_line_planted_in_a_log_is_a_malformed_line(tmp_path: Path) -> None:
    """Written by hand: a decision names file and line; --skip-invalid skips and counts it,
    in bounded memory; the next evaluation reads the same log again at the same cost."""
    project = ab_project(tmp_path / "p")
    project.ab.record_batch("t", requests_jsonl(40, seed=1))
    log = project.ab_log("t")
    with open(log, "ab") as f:
        f.write(long_request(LINE_MB))
        f.write(requests_jsonl(40, seed=2))
    before = snapshot(project.root)
    run = measured(project.root, "ab", "evaluate", "t")
    assert run["code"] == 1, run
    assert str(run["err"]).splitlines() == [
        f"error: {log}: line 41 is longer than 1 MiB (1,048,576 bytes); fix or remove it, or "
        "skip such lines with --skip-invalid (ab evaluate, drift check, drift report)"
    ]
    assert float(run["rss_mb"]) < RSS_MAX_MB, run["rss_mb"]  # type: ignore[arg-type]
    for _ in range(2):
        run = measured(project.root, "ab", "evaluate", "t", "--skip-invalid", "--json")
        assert run["code"] == 0, run
        doc = json.loads(str(run["out"]))
        assert doc["requests"] == 80 and doc["skipped_lines"] == 1, doc
        assert float(run["rss_mb"]) < RSS_MAX_MB, run["rss_mb"]  # type: ignore[arg-type]
    # the log is untouched (a derived summary cache may have been written beside it)
    after = snapshot(project.root)
    assert after["logs/ab/t.jsonl"] == before["logs/ab/t.jsonl"]


def test_a_huge_line_planted_in_a_drift_log_is_a_malformed_line(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(200, seed=1))
    detector.record_batch(samples_jsonl(150, seed=2))
    log = project.drift_log("gnn", "1.0.0", "production")
    with open(log, "ab") as f:
        f.write(b'{"prediction":0.5,"confidence":0.5' + b" " * (LINE_MB << 20) + b"}\n")
        f.write(samples_jsonl(50, seed=3))
    run = measured(project.root, "drift", "check", "gnn", "1.0.0")
    assert run["code"] == 1, run
    assert str(run["err"]).startswith(f"error: {log}: line 151 is longer than 1 MiB"), run
    assert float(run["rss_mb"]) < RSS_MAX_MB, run["rss_mb"]  # type: ignore[arg-type]
    run = measured(project.root, "drift", "check", "gnn", "1.0.0", "--skip-invalid", "--json")
    assert run["code"] == 0, run
    assert json.loads(str(run["out"]))["skipped_lines"] == 1
    assert float(run["rss_mb"]) < RSS_MAX_MB, run["rss_mb"]  # type: ignore[arg-type]
