"""kill -9 at random instants: state always loads, logs hold whole records, nothing acknowledged
is lost, the next command works without repair, and a retried batch counts exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_cli import ModelVersion, Project

from .helpers import (
    MLOPS,
    ab_project,
    kill_at,
    mlops,
    requests_jsonl,
    samples_jsonl,
    scale,
    whole_lines,
)

TRIALS = scale(10, 40)  # per kind; five kinds
RNG = random.Random(20261126)


def kill_after(cmd: list[str], delay: float) -> int:
    """Start cmd, SIGKILL it after `delay` seconds (unless it finished); return its code."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        return proc.wait()


def assert_project_sound(root: Path) -> Project:
    project = Project.open(root)  # loads and validates
    for log in root.rglob("*.jsonl"):
        whole_lines(log)  # every complete line parses
    return project


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_during_batch_record_then_retry_counts_once(tmp_path: Path, trial: int) -> None:
    project = ab_project(tmp_path / "p")
    big = tmp_path / "big.jsonl"
    lines = scale(60_000, 200_000)
    big.write_bytes(requests_jsonl(lines, seed=trial))
    kind = trial % 2  # alternate A/B batches and drift batches
    if kind == 0:
        cmd = [MLOPS, "-C", str(project.root), "ab", "record", "t", "--file", str(big)]
        log = project.ab_log("t")
    else:
        big.write_bytes(samples_jsonl(lines, seed=trial))
        cmd = [
            MLOPS,
            "-C",
            str(project.root),
            "drift",
            "record",
            "gnn",
            "1.0.0",
            "--file",
            str(big),
        ]
        log = project.drift_log("gnn", "1.0.0", "production")
    code = kill_after(cmd, RNG.uniform(0.05, 0.9))
    assert_project_sound(project.root)
    partial = len(whole_lines(log))
    assert partial == lines if code == 0 else 0 <= partial <= lines
    retry = subprocess.run(cmd, capture_output=True)
    assert retry.returncode == 0, retry.stderr
    assert len(whole_lines(log)) == lines  # exactly one batch, never one and a half
    assert log.read_bytes().endswith(b"\n")


PROMOTER = """
import sys
from mlops_cli import Project
project = Project.open(sys.argv[1])
for i in range(10_000):
    project.registry.promote_to_champion("gnn", ("1.1.0", "1.0.0")[i % 2])
    print(i, flush=True)
"""


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_during_promote(tmp_path: Path, trial: int) -> None:
    project = Project.init(tmp_path / "p")
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    proc = subprocess.Popen(
        [sys.executable, "-c", PROMOTER, str(project.root)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(RNG.uniform(0.2, 1.0))
    proc.send_signal(signal.SIGKILL)
    acked = len(proc.communicate()[0].splitlines())
    project = assert_project_sound(project.root)
    state = project.state().to_doc()["models"]["gnn"]
    serving = [v for v, r in state["versions"].items() if r["traffic_percentage"] == 100]
    assert serving == [state["champion"]]
    promoted = [e for e in project.registry.history() if e["event"] == "promoted"]
    assert len(promoted) >= acked + 1  # +1: the first version's promotion at registration
    other = "1.0.0" if state["champion"] == "1.1.0" else "1.1.0"
    project.registry.promote_to_champion("gnn", other)  # the next command just works


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_during_ab_finalize(tmp_path: Path, trial: int) -> None:
    project = ab_project(tmp_path / "p")
    kill_after(
        [MLOPS, "-C", str(project.root), "ab", "finalize", "t", "rollback"], RNG.uniform(0.0, 0.5)
    )
    project = assert_project_sound(project.root)
    test = project.ab.get_test("t")
    traffic = {v.version: v.traffic_percentage for v in project.registry.list_versions("gnn")}
    if test["status"] == "running":
        assert traffic == {"1.0.0": 50.0, "1.1.0": 50.0, "1.2.0": 0.0}
        mlops(project.root, "ab", "finalize", "t", "rollback")
        test = Project.open(project.root).ab.get_test("t")
    assert test["status"] == "rolled_back"
    traffic = {
        v.version: v.traffic_percentage
        for v in Project.open(project.root).registry.list_versions("gnn")
    }
    assert traffic == {"1.0.0": 100.0, "1.1.0": 0.0, "1.2.0": 0.0}


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_during_drift_check(tmp_path: Path, trial: int) -> None:
    project = ab_project(tmp_path / "p")
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(5000, seed=1))
    detector.record_batch(samples_jsonl(20_000, seed=2))
    detector.check()
    kill_after(
        [MLOPS, "-C", str(project.root), "drift", "check", "gnn", "1.0.0"], RNG.uniform(0.0, 1.0)
    )
    assert_project_sound(project.root)
    checks_before = len(whole_lines(project.drift_log("gnn", "1.0.0", "checks")))
    assert checks_before in (1, 2)
    mlops(project.root, "drift", "check", "gnn", "1.0.0")
    rows = whole_lines(project.drift_log("gnn", "1.0.0", "checks"))
    assert len(rows) == checks_before + 1 and project.drift_log("gnn", "1.0.0", "checks").read_bytes().endswith(b"\n")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_during_textfile_export(tmp_path: Path, trial: int) -> None:
    project = ab_project(tmp_path / "p")
    out_dir = tmp_path / "collector"
    out_dir.mkdir()
    target = out_dir / "mlops.prom"
    target.write_bytes(b"# old export\n")
    new = mlops(project.root, "metrics", "export").stdout
    kill_after(
        [MLOPS, "-C", str(project.root), "metrics", "export", "--textfile", str(target)],
        RNG.uniform(0.0, 0.6),
    )
    assert target.read_bytes() in (b"# old export\n", new)  # never a partial file
    mlops(project.root, "metrics", "export", "--textfile", str(target))
    assert target.read_bytes() == new
    assert [p.name for p in out_dir.iterdir()] == ["mlops.prom"]  # stale temp files cleaned


def test_a_torn_batch_is_completed_by_the_retry_in_process(tmp_path: Path) -> None:
    """The mechanism without timing luck: cut a batch mid-line as a crash would."""
    project = ab_project(tmp_path / "p")
    data = requests_jsonl(1000, seed=3)
    project.ab.record_batch("t", data)
    log = project.ab_log("t")
    kill_at(log, log.stat().st_size * 2 // 5)  # the kill: 40% written, last line torn
    project.ab.record_result("t", "control", 1.0, 0.5)  # another writer meanwhile
    result = project.ab.record_batch("t", data)
    assert result.already_recorded + result.recorded == 1000 and result.recorded > 0
    rows = whole_lines(log)
    assert len(rows) == 1001
    again = project.ab.record_batch("t", data)
    assert (again.recorded, again.already_recorded) == (0, 1000)
    assert os.path.getsize(log) == len(
        b"".join(line + b"\n" for line in log.read_bytes().splitlines())
    )


def test_a_retry_interrupted_in_turn_is_completed_by_the_next(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    data = requests_jsonl(1000, seed=4)
    log = project.ab_log("t")
    project.ab.record_batch("t", data)
    kill_at(log, os.path.getsize(log) // 3)  # first attempt killed
    project.ab.record_result("t", "control", 1.0, 0.5)
    size = os.path.getsize(log)
    project.ab.record_batch("t", data)  # the retry...
    kill_at(log, size + (os.path.getsize(log) - size) // 2, others=1)  # ...killed as well
    project.ab.record_result("t", "treatment", 1.0, 0.5)
    project.ab.record_batch("t", data)  # the third attempt completes it
    assert len(whole_lines(log)) == 1002
    assert project.ab.record_batch("t", data).recorded == 0
    assert project.ab.evaluate_test("t").requests == 1002
