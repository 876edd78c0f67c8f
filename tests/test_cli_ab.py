"""A/B commands through the real entry point."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from mlops_cli import Project

from .conftest import Run, assert_one_error_line, snapshot

Cli = Callable[..., Run]


@pytest.fixture
def started(cli: Cli) -> Cli:
    for v in ("v2.1.0", "v2.2.0", "v2.3.0"):
        assert cli("register", "gnn", v, "--path", f"/m/{v}").exit_code == 0
    run = cli(
        "ab",
        "start",
        "t1",
        "--model-type",
        "gnn",
        "--treatment",
        "v2.2.0",
        "--traffic",
        "50",
        "--duration-days",
        "0",
        "--min-requests",
        "200",
    )
    assert run.exit_code == 0, run.stderr
    return cli


def batch(n: int, conf: tuple[float, float], err: tuple[float, float], seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arm = i % 2
        rows.append(
            orjson.dumps(
                {
                    "variant": ("control", "treatment")[arm],
                    "inference_time_ms": float(rng.normal(80, 5)),
                    "confidence": float(np.clip(rng.normal(conf[arm], 0.05), 0, 1)),
                    "error": bool(rng.random() < err[arm]),
                }
            ).decode()
        )
    return "\n".join(rows) + "\n"


def test_start_from_config_file_with_flags_winning(cli: Cli, tmp_path: Path) -> None:
    for v in ("v2.1.0", "v2.2.0"):
        cli("register", "gnn", v, "--path", "/m")
    cfg = tmp_path / "ab.yaml"
    cfg.write_text(
        "model_type: gnn\ntreatment_version: v2.2.0\ntreatment_traffic_pct: 20\n"
        "alpha: 0.01\nmethod: fixed\n"
    )
    doc = cli("ab", "start", "t", "--config-file", str(cfg), "--traffic", "30", "--json").json()
    assert (doc["treatment_traffic_pct"], doc["alpha"], doc["method"]) == (30.0, 0.01, "fixed")
    assert doc["control_version"] == "v2.1.0"


def test_latency_margin_relative_by_default_absolute_when_given(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    for v in ("v2.1.0", "v2.2.0", "v2.3.0", "v2.4.0"):
        cli("register", "gnn", v, "--path", "/m")
    start = ("ab", "start", "--model-type", "gnn", "--json")

    def started(name: str, treatment: str, *more: str) -> dict[str, object]:
        doc = cli(*start[:2], name, *start[2:], "--treatment", treatment, *more).json()
        cli("ab", "finalize", name, "rollback")
        return dict(doc)

    doc = started("a", "v2.2.0")
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (0.1, None)
    assert doc["decision_rules"] == 2
    assert doc["harm_tolerance"] == {
        "error_rate": 0.0,
        "confidence": 0.0,
        "inference_time_ms": 0.0,
        "tail_latency": 0.0,
    }
    doc = started("b", "v2.3.0", "--max-latency-increase", "25%")
    assert doc["max_latency_increase"] == 0.25
    doc = started("c", "v2.4.0", "--max-latency-increase-ms", "20")
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (None, 20.0)
    # ab.harm_tolerance sets the tolerances of new tests; a config file's win per guardrail
    assert cli("config", "set", "ab.harm_tolerance.error_rate", "0.01").exit_code == 0
    cfg = tmp_path / "ab.yaml"
    cfg.write_text("harm_tolerance:\n  inference_time_ms: 0.05\nmax_latency_increase: 15%\n")
    doc = started("d", "v2.2.0", "--config-file", str(cfg))
    assert doc["harm_tolerance"] == {
        "error_rate": 0.01,
        "confidence": 0.0,
        "inference_time_ms": 0.05,
        "tail_latency": 0.0,
    }
    assert doc["max_latency_increase"] == 0.15
    # the default margin is a setting too; null turns the latency guardrail off
    assert cli("config", "set", "ab.defaults.max_latency_increase", "null").exit_code == 0
    doc = started("f", "v2.4.0")
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (None, None)
    assert cli("config", "set", "ab.defaults.max_latency_increase", "15%").exit_code == 0
    assert started("g", "v2.2.0")["max_latency_increase"] == 0.15
    # a project default in ms replaces the relative default, not a relative margin given
    assert cli("config", "set", "ab.defaults.max_latency_increase_ms", "30").exit_code == 0
    doc = started("h", "v2.3.0")
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (None, 30.0)
    doc = started("i", "v2.4.0", "--max-latency-increase", "5%")
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (0.05, None)
    cfg.write_text("harm_tolerance:\n  latency: 0.05\n")
    before = snapshot(project.root)
    run = cli(*start[:2], "e", *start[2:4], "--treatment", "v2.3.0", "--config-file", str(cfg))
    assert_one_error_line(run, "harm_tolerance: unknown key 'harm_tolerance.latency'")
    assert snapshot(project.root) == before


def test_evaluate_json_contract_and_promote(started: Cli, project: Project, tmp_path: Path) -> None:
    f = tmp_path / "b.jsonl"
    f.write_text(batch(2000, conf=(0.80, 0.85), err=(0.01, 0.01)))
    recorded = started("ab", "record", "t1", "--file", str(f), "--json").json()
    assert (recorded["recorded"], recorded["already_recorded"]) == (2000, 0)
    again = started("ab", "record", "t1", "--file", str(f), "--json").json()
    assert (again["recorded"], again["already_recorded"]) == (0, 2000)
    assert again["batch_id"] == recorded["batch_id"]
    doc = started("ab", "evaluate", "t1", "--json").json()
    assert set(doc) >= {
        "test",
        "decision",
        "recommendation",
        "reasons",
        "method",
        "alpha",
        "requests",
        "days_elapsed",
        "metrics",
    }
    assert set(doc["metrics"]) == {
        "control",
        "treatment",
        "error_rate_diff",
        "confidence_diff",
        "inference_time_ms_diff",
        "srm",
        "guardrails",
    }
    for arm in ("control", "treatment"):
        assert set(doc["metrics"][arm]) == {
            "version",
            "requests",
            "error_rate",
            "avg_confidence",
            "avg_inference_time_ms",
            "users",
        }
    for diff in ("error_rate_diff", "confidence_diff", "inference_time_ms_diff"):
        assert set(doc["metrics"][diff]) == {"estimate", "ci", "p_value"}
        assert len(doc["metrics"][diff]["ci"]) == 2
    assert {"p_value", "mismatch"} <= set(doc["metrics"]["srm"])
    assert doc["decision"] == "promote" and doc["requests"] == 2000
    assert doc["metrics"]["treatment"]["requests"] == 1000
    fin = started("ab", "finalize", "t1", "promote", "--json")
    assert fin.exit_code == 0 and fin.json()["status"] == "promoted"
    assert started("champion", "gnn").stdout.strip() == "v2.2.0"


def test_fail_on_rollback_exits_3_and_apply_finalizes(started: Cli, project: Project) -> None:
    started("ab", "record", "t1", "--file", "-", input=batch(1000, (0.8, 0.8), (0.01, 0.3)))
    run = started("ab", "evaluate", "t1", "--fail-on", "rollback", "--json")
    assert run.exit_code == 3 and run.json()["decision"] == "rollback"
    assert project.ab.get_test("t1")["status"] == "running"
    ok = started("ab", "evaluate", "t1", "--fail-on", "continue")
    assert ok.exit_code == 0 and "ROLLBACK" in ok.stdout
    applied = started("ab", "evaluate", "t1", "--apply", "--json").json()
    assert applied["applied"] is True and project.ab.get_test("t1")["status"] == "rolled_back"


def test_fail_on_continue(started: Cli) -> None:
    started(
        "ab",
        "record",
        "t1",
        "--variant",
        "control",
        "--inference-time-ms",
        "5",
        "--confidence",
        "0.5",
        "--user-id",
        "u1",
    )
    run = started("ab", "evaluate", "t1", "--fail-on", "rollback,continue")
    assert run.exit_code == 3 and "CONTINUE" in run.stdout
    assert run.stderr.startswith("error: decision continue")


def into_a_closed_pipe(*args: str) -> tuple[int, str]:
    """Run `mlops ARGS | true` where `true` left before a byte was written (every write
    fails with EPIPE): the exit code and stderr."""
    import os
    import subprocess

    from .conftest import MLOPS_BIN

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [str(MLOPS_BIN), *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    return done.returncode, done.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_gate_sets_the_exit_code_when_the_reader_of_stdout_is_gone(
    started: Cli, project: Project, json_flag: list[str]
) -> None:
    """`mlops ab evaluate --fail-on continue | true`: the output goes nowhere, but the
    decision still trips the gate (exit 3, its error line), not 0 or 1 with nothing said;
    with no gate, a reader leaving is not an error."""
    root = str(project.root)
    assert into_a_closed_pipe(
        "-C", root, "ab", "evaluate", "t1", "--fail-on", "continue", *json_flag
    ) == (3, "error: decision continue of t1 (--fail-on continue)\n")
    assert into_a_closed_pipe("-C", root, "ab", "status", "t1", *json_flag) == (0, "")


def test_output_that_cannot_be_written_is_one_error_line_and_a_closed_stdout_is_none(
    started: Cli, project: Project
) -> None:
    """`> /dev/full`: the output is lost, said in one line, exit 1 (not "a bug in mlops");
    stdout closed (`>&-`): the command runs and its gate decides the exit code."""
    import os
    import subprocess

    from .conftest import MLOPS_BIN

    root = str(project.root)
    with open("/dev/full", "w") as full:
        done = subprocess.run([str(MLOPS_BIN), "-C", root, "ab", "list"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (
        1, "error: cannot write the output: No space left on device\n")
    closed = subprocess.run(
        [str(MLOPS_BIN), "-C", root, "ab", "evaluate", "t1", "--fail-on", "continue"],
        stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 3
    assert closed.stderr == "error: decision continue of t1 (--fail-on continue)\n"


def test_step_summary_is_written(
    started: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    started("ab", "evaluate", "t1")
    assert "### A/B test `t1`: **continue**" in summary.read_text()


def test_assign_list_status(started: Cli) -> None:
    doc = started("ab", "assign", "gnn", "user123", "--json").json()
    assert set(doc) == {"name", "version", "model"} and doc["model"]["version"] == doc["version"]
    assert [t["name"] for t in started("ab", "list", "--json").json()] == ["t1"]
    status = started("ab", "status", "t1", "--json").json()
    assert status["status"] == "running" and status["requests"] == {"control": 0, "treatment": 0}
    text = started("ab", "status", "t1").stdout  # mappings as on the command line, no reprs
    assert re.search(r"│ requests +│ control=0, treatment=0 +│", text)
    assert re.search(r"│ harm_tolerance +│ error_rate=0\.0, confidence=0\.0, ", text)
    assert "{" not in text and "'" not in text


RAG_START = ["ab", "start", "t2", "--model-type", "rag", "--treatment", "1.2.0"]
BAD = [
    (
        [
            "ab",
            "record",
            "t1",
            "--variant",
            "control",
            "--inference-time-ms",
            "5",
            "--confidence",
            "1.2",
        ],
        ["confidence"],
    ),
    (
        [
            "ab",
            "record",
            "t1",
            "--variant",
            "control",
            "--inference-time-ms",
            "-1",
            "--confidence",
            "0.5",
        ],
        ["--inference-time-ms must be"],
    ),
    (
        [
            "ab",
            "record",
            "nope",
            "--variant",
            "control",
            "--inference-time-ms",
            "1",
            "--confidence",
            "0.5",
        ],
        ["unknown A/B test"],
    ),
    (
        [
            "ab",
            "record",
            "done",
            "--variant",
            "control",
            "--inference-time-ms",
            "1",
            "--confidence",
            "0.5",
        ],
        ["finalized"],
    ),
    (["ab", "start", "t2", "--model-type", "gnn", "--treatment", "v2.3.0"], ["already running"]),
    (
        ["ab", "start", "t2", "--model-type", "rag", "--treatment", "1.1.0"],
        ["treatment and control are the same"],
    ),
    (
        ["ab", "start", "t2", "--model-type", "rag", "--treatment", "1.2.0", "--traffic", "0"],
        ["--traffic must be"],
    ),
    (
        ["ab", "start", "t2", "--model-type", "rag", "--treatment", "1.2.0", "--traffic", "100"],
        ["--traffic must be"],
    ),
    (
        ["ab", "start", "t2", "--model-type", "rag", "--treatment", "1.2.0", "--traffic", "150"],
        ["--traffic must be"],
    ),
    (["ab", "start", "t2", "--model-type", "rag", "--treatment", "9.0.0"], ["unknown version"]),
    (["ab", "start", "t2", "--model-type", "rag", "--treatment", "1.0.0"], ["deprecated"]),
    (["ab", "finalize", "t1", "promote"], ["not promote", "pass --force to promote"]),
    (
        [*RAG_START, "--max-latency-increase", "10"],
        ["--max-latency-increase must be a share between 0 and 1", "'10'"],
    ),
    (
        [*RAG_START, "--max-latency-increase", "ten%"],
        ["--max-latency-increase must be a share such as 10% or 0.1"],
    ),
    (
        [*RAG_START, "--max-latency-increase", "10%", "--max-latency-increase-ms", "20"],
        ["give one latency margin", "not both"],
    ),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a[1:4]) for a, _ in BAD])
def test_bad_ab_input(started: Cli, project: Project, args: list[str], words: list[str]) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        started("register", "rag", v, "--path", "/r")
    started("promote", "rag", "1.1.0")
    started("deprecate", "rag", "1.0.0")
    started("ab", "start", "done", "--model-type", "rag", "--treatment", "1.2.0")
    started("ab", "finalize", "done", "rollback")
    before = snapshot(project.root)
    assert_one_error_line(started(*args), *words)
    assert snapshot(project.root) == before


USAGE = [
    (["ab", "finalize", "t1", "maybe"], "Invalid value for 'decision': 'maybe' is not one of"),
    (["ab", "evaluate", "t1", "--fail-on", "sometimes"], "'sometimes' is not one of harm,"),
    (["ab", "evaluate", "t1", "--fail-on", "harmful"], "Invalid value for '--fail-on'"),
    (["ab", "evaluate", "t1", "--fail-on", "rollback,harmful"], "'harmful' is not one of"),
    (["ab", "start", "t2", "--model-type", "gnn", "--method", "bayes"], "'bayes' is not one of"),
    (
        ["ab", "record", "t1", "--variant", "b", "--inference-time-ms", "5", "--confidence", "1"],
        "Invalid value for '--variant': 'b' is not one of control, treatment",
    ),
    (["ab", "start", "t2", "--model-type", "gnn", "--traffic", "ten"], "'ten' is not a valid"),
    (["ab", "evaluate", "t1", "--no-such-flag"], "No such option: --no-such-flag"),
]


@pytest.mark.parametrize(("args", "words"), USAGE, ids=[" ".join(a[1:5]) for a, _ in USAGE])
def test_values_outside_an_options_set_are_usage_errors(
    started: Cli, project: Project, args: list[str], words: str
) -> None:
    """Exit 2, as for a value of the wrong type (Typer's own): a value outside the option's
    documented set is a usage error, not a domain refusal (exit 1)."""
    before = snapshot(project.root)
    run = started(*args)
    assert run.exit_code == 2, (run.exit_code, run.stderr)
    assert words in run.stderr and run.stderr.startswith("Usage: mlops ab "), run.stderr
    assert snapshot(project.root) == before


def test_a_traffic_from_a_config_file_is_named_as_its_key(started: Cli, tmp_path: Path) -> None:
    cfg = tmp_path / "ab.yaml"
    cfg.write_text("treatment_traffic_pct: 150\n")
    args = ("ab", "start", "t2", "--model-type", "gnn", "--treatment", "v2.3.0")
    assert_one_error_line(started(*args, "--config-file", str(cfg)), "treatment_traffic_pct must")
    assert_one_error_line(started(*args, "--traffic", "150"), "--traffic must be < 100")
    # 100 is out by the same bound the message states (a test needs a control arm)
    assert_one_error_line(started(*args, "--traffic", "100"), "--traffic must be < 100, not 100")


def test_piped_messages_are_not_wrapped(started: Cli) -> None:
    """A CI log gets each message on one line, however long (rich wraps at 80 columns when
    it writes to anything but a terminal)."""
    name = "checkout_ranking_graph_model_candidate_for_the_winter_season"
    for v in ("1.0.0", "1.1.0"):
        started("register", "rag", v, "--path", "/r")
    started("ab", "start", name, "--model-type", "rag", "--treatment", "1.1.0")
    doc = started("ab", "evaluate", name, "--json").json()
    run = started("ab", "evaluate", name)
    first = run.stdout.splitlines()[0]
    assert len(first) > 100 and first == f"CONTINUE {name}: {doc['recommendation']}"


@pytest.mark.parametrize(
    ("line7", "words"),
    [
        ('{"variant": "control", "inference_time_ms": 5}', ["line 7", "missing 'confidence'"]),
        (
            '{"variant": "control", "inference_time_ms": 5, "confidence": 0.5',
            ["line 7", "not valid JSON"],
        ),
        ('{"variant": "b", "inference_time_ms": 5, "confidence": 0.5}', ["line 7", "variant"]),
    ],
)
def test_bad_batch_line_records_nothing(
    started: Cli, project: Project, tmp_path: Path, line7: str, words: list[str]
) -> None:
    lines = batch(10, (0.8, 0.8), (0.0, 0.0)).splitlines()
    lines[6] = line7
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    before = snapshot(project.root)
    assert_one_error_line(
        started("ab", "record", "t1", "--file", str(f)), f"{f}: ", "nothing recorded", *words
    )
    assert snapshot(project.root) == before


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (b"not json", ["line 6", "not a JSON object"]),
        (b'{"variant": "control", "inference_time_ms": 5}', ["line 6", "not a valid record"]),
        (b'{"variant": "b", "inference_time_ms": 5, "confidence": 0.5}', ["line 6", "not a valid"]),
        # hand edits the writers refuse: a user id that is a list, values out of bounds
        (
            b'{"variant": "control", "inference_time_ms": 5, "confidence": 0.5, "user_id": [1]}',
            ["line 6", "not a valid record"],
        ),
        (b'{"variant": "control", "inference_time_ms": 5, "confidence": 1.5}', ["line 6", "bounds"]),
        (b'{"variant": "control", "inference_time_ms": -1, "confidence": 0.5}', ["line 6", "bounds"]),
    ],
)
def test_malformed_log_line_is_named_or_skipped_and_counted(
    started: Cli, project: Project, bad: bytes, words: list[str]
) -> None:
    log = project.ab_log("t1")
    started("ab", "record", "t1", "--file", "-", input=batch(5, (0.8, 0.8), (0.0, 0.0)))
    with open(log, "ab") as f:  # a hand-edited or foreign line in the middle
        f.write(bad + b"\n")
    started("ab", "record", "t1", "--file", "-", input=batch(4, (0.8, 0.8), (0.0, 0.0), seed=1))
    before = snapshot(project.root)
    assert_one_error_line(started("ab", "evaluate", "t1"), "t1.jsonl", *words, "--skip-invalid")
    assert snapshot(project.root) == before
    doc = started("ab", "evaluate", "t1", "--skip-invalid", "--json").json()
    assert doc["requests"] == 9 and doc["skipped_lines"] == 1


def test_torn_tail_is_reported_and_left_out(started: Cli, project: Project) -> None:
    started("ab", "record", "t1", "--file", "-", input=batch(6, (0.8, 0.8), (0.0, 0.0)))
    with open(project.ab_log("t1"), "ab") as f:
        f.write(b'{"variant": "control", "inference_')  # a write cut short by a crash
    run = started("ab", "evaluate", "t1")
    assert (
        run.exit_code == 0 and "note: the last line of logs/ab/t1.jsonl is incomplete" in run.stderr
    )
    doc = started("ab", "evaluate", "t1", "--json").json()
    assert doc["requests"] == 6 and doc["torn_bytes"] == len(b'{"variant": "control", "inference_')


def test_a_latency_flag_replaces_the_config_files_other_latency_margin(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    for v in ("v2.1.0", "v2.2.0", "v2.3.0"):
        cli("register", "gnn", v, "--path", "/m")
    cfg = tmp_path / "ab.yaml"
    cfg.write_text("max_latency_increase_ms: 5\n")
    base = ("ab", "start", "x", "--model-type", "gnn", "--treatment", "v2.2.0", "--json")
    doc = cli(*base, "--config-file", str(cfg), "--max-latency-increase", "20%").json()
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (0.2, None)
    cli("ab", "finalize", "x", "rollback")
    cfg.write_text("max_latency_increase: 20%\n")
    base = ("ab", "start", "y", "--model-type", "gnn", "--treatment", "v2.3.0", "--json")
    doc = cli(*base, "--config-file", str(cfg), "--max-latency-increase-ms", "5").json()
    assert (doc["max_latency_increase"], doc["max_latency_increase_ms"]) == (None, 5.0)


def test_a_tail_margin_with_the_tail_guardrail_off_is_refused(cli: Cli, project: Project) -> None:
    cli("register", "gnn", "v2.1.0", "--path", "/m")
    cli("register", "gnn", "v2.2.0", "--path", "/m")
    before = (project.root / "registry.yaml").read_bytes()
    found = cli(
        "ab",
        "start",
        "t",
        "--model-type",
        "gnn",
        "--treatment",
        "v2.2.0",
        "--no-tail-latency",
        "--max-tail-latency-increase",
        "0.02",
    )
    assert found.exit_code == 1
    assert found.stderr.startswith("error: --max-tail-latency-increase is a margin of the tail")
    assert (project.root / "registry.yaml").read_bytes() == before
