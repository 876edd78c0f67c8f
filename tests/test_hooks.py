"""hooks.run_hook: an overall deadline whatever children do, bounded and decoded output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import hooks

from .conftest import finishes

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """A file the hook writes its left-behind child's pid to; the child is killed after."""
    path = tmp_path / "child.pid"
    yield path
    if path.exists():
        for pid in path.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def test_timeout_holds_with_a_setsid_child_keeping_the_output(pidfile: Path) -> None:
    """Issue 12 case 6: `setsid sleep 20 &` with a 3 s timeout took 21 s. Here the child would
    keep the output open for 600 s: returning at all (within finishes' deadline) is the
    deadline holding."""
    outcome = finishes(
        lambda: hooks.run_hook(
            f"setsid sleep 600 & echo $! > {pidfile}; echo waiting; sleep 600", ENV, timeout_s=1.0
        )
    )
    assert outcome.timed_out and not outcome.ok and outcome.returncode is None
    assert outcome.command_ran
    assert "waiting" in outcome.output


def test_timeout_kills_the_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    outcome = finishes(
        lambda: hooks.run_hook("trap '' TERM; sleep 600 & sleep 600; wait", ENV, timeout_s=0.5)
    )
    assert outcome.timed_out and outcome.returncode is None


def test_background_job_is_not_a_timeout(pidfile: Path) -> None:
    """The job outlives the timeout by far: a runner that waited for it would time out."""
    outcome = hooks.run_hook(f"sleep 600 & echo $! > {pidfile}; echo started", ENV, timeout_s=30)
    assert outcome.ok and not outcome.timed_out and outcome.returncode == 0
    assert outcome.output == "started\n"


def test_non_utf8_output_is_replaced_not_fatal() -> None:
    outcome = hooks.run_hook(r"printf '\377\376bad \342\202 ok\n'", ENV, timeout_s=5)
    assert outcome.ok
    assert outcome.output.endswith("bad \ufffd ok\n")
    assert outcome.output.startswith("\ufffd")


def test_exit_code_failure_is_reported_with_stderr() -> None:
    outcome = hooks.run_hook("echo out; echo boom >&2; exit 7", ENV, timeout_s=5)
    assert outcome.returncode == 7 and not outcome.ok and not outcome.timed_out
    assert outcome.output == "out\nboom\n"


def test_environment_is_passed() -> None:
    outcome = hooks.run_hook(
        'echo "$MLOPS_DRIFT_LEVEL"', {**ENV, "MLOPS_DRIFT_LEVEL": "critical"}, timeout_s=5
    )
    assert outcome.output == "critical\n"


def test_output_tail_is_bounded_in_memory_for_300_mb() -> None:
    """Issue 12 case 6: 300 MB of output cost 918 MB of memory to keep 2,000 characters."""
    tracemalloc.start()
    try:
        outcome = hooks.run_hook(
            "head -c 300000000 /dev/zero | tr '\\0' x; printf 'END'", ENV, timeout_s=60
        )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.ok
    assert len(outcome.output) == hooks.OUTPUT_TAIL_CHARS
    assert outcome.output.endswith("xxxEND")
    assert peak < 1_000_000  # bytes allocated by Python during the run


def test_command_that_cannot_start(tmp_path: Path) -> None:
    outcome = hooks.run_hook("true", ENV, timeout_s=5, cwd=tmp_path / "missing")
    assert not outcome.command_ran and not outcome.ok
    assert "could not start" in outcome.output


def test_to_dict_leaves_the_command_out() -> None:
    secret = "TOKEN-4f1c9e"
    outcome = hooks.run_hook(f"curl_like --token {secret} >/dev/null 2>&1; exit 3", ENV, 5)
    record = outcome.to_dict()
    assert set(record) == {"ok", "command_ran", "returncode", "timed_out", "duration_s", "output"}
    assert secret not in json.dumps(record)
    assert record["returncode"] == 3 and outcome["ok"] is False


# -- through a drift check (drift.run_hook is now this runner in the old tuple shape) --------


def _drifting_project(tmp_path: Path) -> Any:
    import numpy as np

    from mlops_cli import ModelVersion, Project
    from tests.test_drift import jsonl_of, samples

    project = Project.init(tmp_path / "p")
    project.registry.register_version(ModelVersion("gnn", "v2.2.0", model_path="/m"))
    d = project.drift_detector("gnn", "v2.2.0")
    rng = np.random.default_rng(21)
    d.set_reference(jsonl_of(*samples(rng, 1000)))
    d.record_batch(jsonl_of(*samples(rng, 1000, mean=2.0, conf=0.6)))
    return project


def test_drift_check_hook_deadline_holds_with_setsid_child(tmp_path: Path, pidfile: Path) -> None:
    from mlops_cli.drift import gate
    from mlops_cli.errors import HookError

    project = _drifting_project(tmp_path)
    project.set_setting(
        "drift.hooks.retrain", f"setsid sleep 600 & echo $! > {pidfile}; sleep 600"
    )
    project.set_setting("drift.hook_timeout_s", "1")
    report = finishes(project.drift_detector("gnn", "v2.2.0").check)
    assert [(h["level"], h["timed_out"]) for h in report["hooks"]] == [("retrain", True)]
    with pytest.raises(HookError, match="timed out"):  # the check's exit code: 1
        gate([report], None)


def test_drift_check_hook_with_non_utf8_output(tmp_path: Path) -> None:
    project = _drifting_project(tmp_path)
    project.set_setting("drift.hooks.retrain", r"printf 'retrained \377\n'")
    report = project.drift_detector("gnn", "v2.2.0").check()
    assert [h["output"] for h in report["hooks"]] == ["retrained \ufffd\n"]
