"""Read-only views survive a malformed log line: they leave it out, count it and say so;
decisions (`ab evaluate`, `drift check`) keep refusing it unless --skip-invalid."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.errors import StateError
from mlops_cli.ui import data

from .conftest import Run, assert_one_error_line

Cli = Callable[..., Run]
BAD = b"{not json\n"
DRIFT = Path("logs") / "drift" / "gnn" / "v1.0.0"


def samples(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return b"".join(
        orjson.dumps({"prediction": float(p), "confidence": 0.8}) + b"\n"
        for p in rng.normal(0, 1, n)
    )


def plant(path: Path, after_line: int) -> None:
    """A malformed line after line `after_line` (a hand edit, a bad copy)."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:after_line], BAD, *lines[after_line:]]))


@pytest.fixture
def broken(project: Project) -> Project:
    """A running test with 3 control and 2 treatment requests, a version with 200 reference
    and 200 window samples and two checks; one malformed line in each of the four logs."""
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m"))
    project.registry.register_version(ModelVersion("gnn", "v1.1.0", model_path="/m"))
    project.ab.start_test(ABTestConfig("t1", "gnn", treatment_version="v1.1.0"))
    for variant in ("control", "treatment", "control", "treatment", "control"):
        project.ab.record_result("t1", variant, 20.0, 0.7, False, "u-" + variant)
    detector = project.drift_detector("gnn", "v1.0.0")
    detector.set_reference(samples(200, 1))
    detector.record_batch(samples(200, 2))
    detector.check()
    detector.check()
    plant(project.root / "logs" / "ab" / "t1.jsonl", 2)
    for name in ("reference", "production", "checks"):
        plant(project.root / DRIFT / f"{name}.jsonl", 1)
    return project


def logs_of(project: Project) -> dict[str, bytes]:
    return {
        str(p.relative_to(project.root)): p.read_bytes()
        for p in project.root.rglob("*.jsonl")
        if not p.name.startswith(".")
    }


def test_ab_status_and_list_leave_the_line_out_and_say_so(broken: Project, cli: Cli) -> None:
    before = logs_of(broken)
    status = cli("ab", "status", "t1", "--json")
    assert status.exit_code == 0, status.stderr
    assert status.json()["requests"] == {"control": 3, "treatment": 2}
    assert status.json()["skipped_lines"] == 1
    listed = cli("ab", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [(t["requests"], t["skipped_lines"]) for t in listed.json()] == [
        ({"control": 3, "treatment": 2}, 1)
    ]
    for args in (("ab", "status", "t1"), ("ab", "list")):
        run = cli(*args)
        assert run.exit_code == 0
        assert "1 malformed line(s) of logs/ab/t1.jsonl left out" in run.stderr
        assert "--skip-invalid" in run.stderr
    assert logs_of(broken) == before


def test_decisions_keep_refusing_the_line(broken: Project, cli: Cli) -> None:
    before = logs_of(broken)
    assert_one_error_line(cli("ab", "evaluate", "t1"), "t1.jsonl", "line 3", "--skip-invalid")
    assert_one_error_line(
        cli("drift", "check", "gnn", "v1.0.0"), "reference.jsonl", "line 2", "--skip-invalid"
    )
    assert logs_of(broken) == before
    evaluated = cli("ab", "evaluate", "t1", "--skip-invalid", "--json")
    assert evaluated.exit_code == 0 and evaluated.json()["skipped_lines"] == 1
    # the reference, the window and the week's checks: one malformed line each
    for command in ("report", "check"):
        run = cli("drift", command, "gnn", "v1.0.0", "--skip-invalid", "--json")
        assert run.exit_code == 0 and run.json()["skipped_lines"] == 3, (command, run.stdout)


def test_dashboard_documents_leave_the_lines_out_and_list_them(broken: Project) -> None:
    ab = {"stream": "ab/t1", "log": "logs/ab/t1.jsonl", "lines": 1}
    checks = {
        "stream": "drift/gnn/v1.0.0/checks",
        "log": "logs/drift/gnn/v1.0.0/checks.jsonl",
        "lines": 1,
    }
    overview = data.overview(broken.root)
    assert overview["tests"][0]["requests"] == {"control": 3, "treatment": 2}
    assert overview["skipped"] == [ab]  # the badge reads the last check only: readable
    test = data.ab_test(broken.root, "t1")
    assert test["evaluation"]["requests"] == 5 and test["skipped"] == [ab]
    drift = data.drift(broken.root, "gnn", "v1.0.0")
    assert len(drift["history"]) == 2
    assert drift["histograms"]["prediction"]["n_reference"] == 200
    assert drift["histograms"]["prediction"]["n_window"] == 200
    assert drift["skipped"] == [
        checks,
        {
            "stream": "drift/gnn/v1.0.0/production",
            "log": "logs/drift/gnn/v1.0.0/production.jsonl",
            "lines": 1,
        },
        {
            "stream": "drift/gnn/v1.0.0/reference",
            "log": "logs/drift/gnn/v1.0.0/reference.jsonl",
            "lines": 1,
        },
    ]
    assert data.model(broken.root, "gnn")["skipped"] == []


def test_the_latest_check_is_read_past_malformed_lines(broken: Project) -> None:
    detector = broken.drift_detector("gnn", "v1.0.0")
    last = detector.last_check()
    with (broken.root / DRIFT / "checks.jsonl").open("ab") as f:
        f.write(BAD + b'{"ts": "2026-01-01T00:00:00Z", "note": "not a check"}\n')
    with pytest.raises(StateError, match="not checks"):
        detector.latest_checks(1)
    latest = detector.latest_checks(1, skip_invalid=True)
    # read back 1, then 4 lines: the two malformed lines and the record that is not a check
    assert list(latest) == [last] and latest.skipped == 3
    overview = data.overview(broken.root)
    badge = overview["model_types"][0]["drift"]
    assert badge["checked_at"] == last["ts"]
    assert {
        "stream": "drift/gnn/v1.0.0/checks",
        "log": "logs/drift/gnn/v1.0.0/checks.jsonl",
        "lines": 3,
    } in overview["skipped"]


def test_html_report_is_written_and_names_each_log(
    broken: Project, cli: Cli, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    run = cli("report", "--html", str(out))
    assert run.exit_code == 0, run.stderr
    notes = re.findall(r"note: (\d+) malformed line\(s\) of (\S+) left out", run.stderr)
    assert sorted(notes) == [
        ("1", "logs/ab/t1.jsonl"),
        ("1", "logs/drift/gnn/v1.0.0/checks.jsonl"),
        ("1", "logs/drift/gnn/v1.0.0/production.jsonl"),
        ("1", "logs/drift/gnn/v1.0.0/reference.jsonl"),
    ]
    page = out.read_text()
    assert '"skipped":[{"stream":"ab/t1"' in page  # the page shows it (app.js skippedNote)


def test_a_malformed_audit_event_is_left_out_of_the_pages(
    broken: Project, cli: Cli, tmp_path: Path
) -> None:
    """The audit log's second line garbled in place (its bytes, not its length, changed: the
    registry records where the committed events end)."""
    events = broken.root / "events.jsonl"
    lines = events.read_bytes().splitlines(keepends=True)
    lines[1] = b"{" + b"x" * (len(lines[1]) - 2) + b"\n"
    events.write_bytes(b"".join(lines))
    entry = {"stream": "events", "log": "events.jsonl", "lines": 1}
    page = data.events(broken.root)
    assert len(page["events"]) == len(lines) - 1 and page["skipped"] == [entry]
    assert entry in data.model(broken.root, "gnn")["skipped"]
    run = cli("report", "--html", str(tmp_path / "report.html"))
    assert run.exit_code == 0, run.stderr
    assert "note: 1 malformed line(s) of events.jsonl left out" in run.stderr
