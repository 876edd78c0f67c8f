"""Full disks, fuzzed arguments and batches, hostile names, held locks, racing commands."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlops_cli import ModelVersion, Project, ValidationError
from mlops_cli.cli import app

from ..conftest import HANG_S, snapshot
from .helpers import MLOPS, ab_project, mlops, requests_jsonl, scale

# -- a full disk -----------------------------------------------------------------------------


def limited(max_bytes: int) -> None:
    """In the child: files may not grow past max_bytes (EFBIG instead of a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def test_full_disk_on_batch_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    project.ab.record_batch("t", requests_jsonl(100, seed=1))
    before = snapshot(project.root)
    big = tmp_path / "big.jsonl"
    big.write_bytes(requests_jsonl(20_000, seed=2))
    run = subprocess.run(
        [MLOPS, "-C", str(project.root), "ab", "record", "t", "--file", str(big)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: limited(200_000),
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: could not append to") and "too large" in run.stderr
    after = snapshot(project.root)
    journal = ".t.jsonl.batches.jsonl"
    assert {k: v for k, v in after.items() if not k.endswith(journal)} == {
        k: v for k, v in before.items() if not k.endswith(journal)
    }
    # the retry, with room again, records the batch exactly once
    mlops(project.root, "ab", "record", "t", "--file", str(big))
    assert Project.open(project.root).ab.evaluate_test("t").requests == 20_100


def test_full_disk_on_registry_write_keeps_the_old_registry(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    for i in range(30):
        project.registry.register_version(ModelVersion("gnn", f"1.{i}.0", model_path="/m"))
    before = snapshot(project.root)
    size = project.registry_path.stat().st_size
    run = subprocess.run(
        [
            MLOPS,
            "-C",
            str(project.root),
            "register",
            "gnn",
            "9.0.0",
            "--path",
            "/m",
            "--description",
            "x" * 4000,  # (within the 4,096-byte bound on a description)
        ],
        capture_output=True,
        text=True,
        preexec_fn=lambda: limited(size + 1000),
    )
    assert run.returncode == 1 and run.stderr.startswith("error: could not write")
    assert snapshot(project.root) == before


# -- fuzzing ---------------------------------------------------------------------------------

WORDS = [
    "init",
    "register",
    "list",
    "show",
    "champion",
    "promote",
    "rollback",
    "deprecate",
    "verify",
    "history",
    "metrics",
    "update",
    "export",
    "ab",
    "start",
    "assign",
    "record",
    "evaluate",
    "finalize",
    "status",
    "drift",
    "reference",
    "check",
    "report",
    "config",
    "get",
    "set",
    "gnn",
    "t",
    "1.0.0",
    "1.1.0",
    "v9",
    "--json",
    "--force",
    "--file",
    "-",
    "--variant",
    "control",
    "treatment",
    "--confidence",
    "--inference-time-ms",
    "--prediction",
    "--traffic",
    "--treatment",
    "--model-type",
    "--fail-on",
    "--apply",
    "--all",
    "--window",
    "--limit",
    "promote",
    "rollback",
    "critical",
    "0.5",
    "-1",
    "nan",
    "1e309",
    "../x",
    "",
    "drift.window_size",
    "--path",
    "/m",
    "--config",
    "a=b",
    "--tag",
    "--replace",
    "--textfile",
    "--push-url",
    "--batch-id",
]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "p"
    project = ab_project(root)
    project.ab.record_batch("t", requests_jsonl(300, seed=5))
    return root


@settings(
    max_examples=scale(150, 1500),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    args=st.lists(st.sampled_from(WORDS) | st.text(max_size=12), max_size=8),
    stdin=st.binary(max_size=200),
)
def test_fuzzed_arguments_never_crash(fuzz_root: Path, args: list[str], stdin: bytes) -> None:
    if "--textfile" in args or "--push-url" in args or "demo" in args:
        return  # these write outside the project or reach the network
    before = snapshot(fuzz_root)
    result = CliRunner().invoke(app, ["-C", str(fuzz_root), *args], input=stdin)
    assert result.exit_code in (0, 1, 2), (args, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output and "bug in mlops" not in result.output
    if result.exit_code != 0:
        assert snapshot(fuzz_root) == before, args


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "variant": st.sampled_from(["control", "treatment", "b", ""]) | JSON_VALUES,
        "inference_time_ms": st.floats() | st.integers() | JSON_VALUES,
        "confidence": st.floats() | JSON_VALUES,
        "error": JSON_VALUES,
        "user_id": JSON_VALUES,
        "ts": JSON_VALUES,
        "extra": JSON_VALUES,
    },
)


@settings(
    max_examples=scale(150, 1500),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(records=st.lists(RECORDS, min_size=1, max_size=6), junk=st.binary(max_size=40))
def test_fuzzed_batches_are_all_or_nothing(
    fuzz_root: Path, records: list[dict[str, object]], junk: bytes
) -> None:
    import json

    lines = [json.dumps(r, allow_nan=True).encode() for r in records]
    lines.insert(len(lines) // 2, junk) if junk.strip() else None
    data = b"\n".join(lines) + b"\n"
    before = snapshot(fuzz_root)
    result = CliRunner().invoke(
        app, ["-C", str(fuzz_root), "ab", "record", "t", "--file", "-", "--json"], input=data
    )
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code == 1:
        assert snapshot(fuzz_root) == before
        assert '"error"' in result.stdout


# -- hostile names ---------------------------------------------------------------------------

HOSTILE = [
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\x00b",
    "gnn\n",
    "gnn ",
    "\u0261nn",
    "g\u043f",  # Cyrillic pe
    "\uff47\uff4e\uff4e",  # fullwidth gnn
    "1\u0661.0.0",  # an Arabic-Indic digit: a digit to Unicode \\d, not to SemVer
    "a" * 65,
    "x" * 10_000,
    ".",
    "..",
    "-rf",
    "",
]


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(n)[:20] for n in HOSTILE])
def test_hostile_names_are_refused_before_any_path(tmp_path: Path, name: str) -> None:
    project = ab_project(tmp_path / "p")
    before = snapshot(tmp_path)
    with pytest.raises(ValidationError):
        project.registry.register_version(ModelVersion(name, "1.0.0", model_path="/m"))
    with pytest.raises(ValidationError):
        project.drift_detector(name, "1.0.0")
    with pytest.raises(ValidationError):
        project.drift_detector("gnn", name)
    with pytest.raises(ValidationError):
        project.ab_log(name)
    with pytest.raises(ValidationError):
        project.metrics_log("gnn", name)
    assert snapshot(tmp_path) == before
    if "\x00" not in name:
        run = subprocess.run(
            [
                MLOPS,
                "-C",
                str(project.root),
                "drift",
                "record",
                "--prediction",
                "1",
                "--confidence",
                "0.5",
                "--",
                name,
                "1.0.0",
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 1 and run.stderr.startswith("error: invalid model type")
        assert snapshot(tmp_path) == before


# -- locks -----------------------------------------------------------------------------------

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("which", ["project", "log"])
def test_a_held_lock_times_out_with_its_name_and_a_killed_holder_frees_it(
    tmp_path: Path, which: str
) -> None:
    project = ab_project(tmp_path / "p")
    project.set_setting("lock_timeout_s", "0.5")
    project.ab.record_result("t", "control", 1.0, 0.5)
    target = (project.root / ".mlops.lock") if which == "project" else project.ab_log("t")
    args = (
        ["promote", "gnn", "1.2.0", "--force"]
        if which == "project"
        else [
            "ab",
            "record",
            "t",
            "--variant",
            "control",
            "--inference-time-ms",
            "1",
            "--confidence",
            "0.5",
        ]
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    # Refused while the holder lives (it holds the lock 600 s): the lock wait timed out.
    run = mlops(project.root, *args, check=False, timeout=HANG_S)
    assert run.returncode == 1 and holder.poll() is None
    message = run.stderr.decode()
    assert message.startswith("error: could not") and str(target) in message
    assert "lock_timeout_s" in message
    holder.send_signal(signal.SIGKILL)  # a killed holder leaves no lock behind
    holder.wait()
    mlops(project.root, *args)


def test_lock_timeout_inside_one_process(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "p")
    project.set_setting("lock_timeout_s", "0.2")
    project.ab_log("t").parent.mkdir(parents=True)
    fd = os.open(project.ab_log("t"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    errors: list[Exception] = []

    def writer() -> None:
        try:
            Project.open(project.root).ab.record_result("t", "control", 1.0, 0.5)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(10)
    os.close(fd)
    assert errors and "could not lock" in str(errors[0])


# -- racing promote and ab start -------------------------------------------------------------


@pytest.mark.parametrize("round_", range(scale(8, 40)))
def test_promote_racing_ab_start_never_tests_a_stale_control(tmp_path: Path, round_: int) -> None:
    project = Project.init(tmp_path / "p")
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    root = str(project.root)
    procs = [
        subprocess.Popen(
            [MLOPS, "-C", root, "promote", "gnn", "1.2.0"], stderr=subprocess.PIPE, text=True
        ),
        subprocess.Popen(
            [MLOPS, "-C", root, "ab", "start", "t", "--model-type", "gnn", "--treatment", "1.1.0"],
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    if round_ % 2:
        procs.reverse()
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    project = Project.open(root)
    state = project.state().to_doc()
    champion = state["models"]["gnn"]["champion"]
    for code, err in results:
        assert code == 0 or (code == 1 and err.startswith("error: ") and "running" in err)
    assert sum(code == 0 for code, _ in results) >= 1
    test = state["ab_tests"].get("t")
    if test is not None and test["status"] == "running":
        assert test["control_version"] == champion  # never a test against a stale champion
