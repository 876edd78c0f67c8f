"""Issue 11's registry and A/B defects, each reproduced through the CLI or the library."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from mlops_cli import ConflictError, ModelVersion, Project, ValidationError

from .conftest import Run, assert_one_error_line

Cli = Callable[..., Run]


def requests(n: int, variant_of: Callable[[int], str], confidence: float = 0.8) -> str:
    return "".join(
        orjson.dumps(
            {
                "variant": variant_of(i),
                "user_id": f"u{i}",
                "inference_time_ms": 100.0,
                "confidence": confidence,
                "error": False,
            }
        ).decode()
        + "\n"
        for i in range(n)
    )


@pytest.fixture
def two_versions(cli: Cli) -> Cli:
    assert cli("register", "gnn", "v2.1.0", "--path", "m1").exit_code == 0
    assert cli("register", "gnn", "v2.2.0", "--path", "m2").exit_code == 0
    return cli


def test_promote_force_during_a_test_ends_the_test_in_the_same_change(
    two_versions: Cli, project: Project
) -> None:
    cli = two_versions
    assert cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0").exit_code == 0
    forced = cli("promote", "gnn", "v2.2.0", "--force", "--reason", "hotfix")
    assert forced.exit_code == 0, forced.stderr
    test = cli("ab", "status", "t", "--json").json()
    assert test["status"] == "aborted" and "hotfix" in test["end_reason"]
    # routing and the registry agree: every user now gets the new champion
    for user in ("a", "b", "c", "d", "e"):
        assert cli("ab", "assign", "gnn", user, "--json").json()["version"] == "v2.2.0"
    kinds = [e["event"] for e in cli("history", "gnn", "--json").json()]
    assert kinds[-2:] == ["ab_aborted", "promoted"]
    assert_one_error_line(cli("ab", "record", "t", "--variant", "control",
                              "--inference-time-ms", "1", "--confidence", "0.5"), "finalized")


def test_init_force_refuses_to_inherit_records(two_versions: Cli, project: Project) -> None:
    cli = two_versions
    cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0")
    batch = requests(400, lambda i: "treatment" if i % 10 == 0 else "control")
    assert cli("ab", "record", "t", "--file", "-", input=batch).exit_code == 0
    before = sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*"))
    assert_one_error_line(cli("init", "--force"), "--archive-logs", "--delete-logs")
    assert sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*")) == before
    assert cli("init", "--force", "--archive-logs").exit_code == 0
    archived = list((project.root / "archive").glob("project-*/logs/ab/t.jsonl"))
    assert len(archived) == 1 and len(archived[0].read_text().splitlines()) == 400
    # a new test of the same name starts empty, and the same batch is new data
    two_versions("register", "gnn", "v2.1.0", "--path", "m1")
    two_versions("register", "gnn", "v2.2.0", "--path", "m2")
    cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0")
    assert cli("ab", "status", "t", "--json").json()["requests"] == {"control": 0, "treatment": 0}
    again = cli("ab", "record", "t", "--file", "-", "--json", input=batch).json()
    assert again["recorded"] == 400 and again["already_recorded"] == 0
    assert cli("init", "--force", "--delete-logs").exit_code == 0
    assert not (project.root / "logs").exists() and not (project.root / "events.jsonl").exists()


def test_a_leading_v_is_not_a_new_version(two_versions: Cli) -> None:
    cli = two_versions
    assert_one_error_line(cli("register", "gnn", "2.2.0", "--path", "m"), "already registered",
                          "v2.2.0")
    assert cli("show", "gnn", "2.2.0", "--json").json()["version"] == "v2.2.0"
    cli("register", "gnn", "v2.10.0", "--path", "m")
    cli("register", "gnn", "2.3.0-rc.1", "--path", "m")
    listed = [v["version"] for v in cli("list", "gnn", "--json").json()]
    assert listed == ["v2.1.0", "v2.2.0", "2.3.0-rc.1", "v2.10.0"]


def test_the_project_is_found_from_a_subdirectory(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m"))
    deep = project.root / "src" / "pipeline"
    deep.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_PROJECT_DIR"}
    run = subprocess.run([sys.executable, "-m", "mlops_cli", "champion", "gnn"], cwd=deep,
                         env=env, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, "1.0.0"), run.stderr


def test_guardrail_flags_are_kept_with_the_test(two_versions: Cli) -> None:
    started = two_versions(
        "ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0",
        "--max-confidence-drop", "0.01", "--max-latency-increase-ms", "20", "--json",
    ).json()
    assert (started["max_confidence_drop"], started["max_latency_increase_ms"]) == (0.01, 20.0)


def test_fail_on_harm_and_a_finalized_test_trips_no_gate_again(two_versions: Cli) -> None:
    cli = two_versions
    cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0",
        "--traffic", "50", "--max-confidence-drop", "0.02")
    worse = "".join(
        requests(1, lambda _: "control", 0.80).replace('"u0"', f'"c{i}"')
        + requests(1, lambda _: "treatment", 0.60).replace('"u0"', f'"t{i}"')
        for i in range(3000)
    )
    assert cli("ab", "record", "t", "--file", "-", input=worse).exit_code == 0
    doc = cli("ab", "evaluate", "t", "--json").json()
    assert (doc["decision"], doc["rollback_cause"]) == ("rollback", "harm")
    assert cli("ab", "evaluate", "t", "--fail-on", "harm").exit_code == 3
    assert cli("ab", "evaluate", "t", "--fail-on", "harm", "--apply").exit_code == 3
    # the rollback is carried out: later runs of the same pipeline step pass
    assert cli("ab", "evaluate", "t", "--fail-on", "harm").exit_code == 0
    assert cli("ab", "evaluate", "t", "--fail-on", "rollback").exit_code == 0


def test_promote_without_force_still_refuses_during_a_test(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m"))
    project.registry.register_version(ModelVersion("gnn", "1.1.0", model_path="m"))
    from mlops_cli import ABTestConfig

    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    with pytest.raises(ConflictError, match="running"):
        project.registry.promote_to_champion("gnn", "1.1.0")
    assert project.ab.get_test("t").running


def test_init_force_refusal_changes_nothing_on_disk(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m"))
    before = {p: p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file()}
    with pytest.raises(ConflictError):
        Project.init(tmp_path / "p", force=True)
    assert {p: p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file()} == before


def test_a_directory_or_fifo_is_not_a_model_file(project: Project, tmp_path: Path) -> None:
    (tmp_path / "model_dir").mkdir()
    os.mkfifo(tmp_path / "model.fifo")
    for path in ("model_dir", "model.fifo"):
        with pytest.raises(ValidationError, match="register one file"):
            project.registry.register_version(
                ModelVersion("gnn", "1.0.0", model_path=str(tmp_path / path))
            )
    assert project.state().models == {}


def test_a_version_spelled_without_its_v_records_into_the_same_samples(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "v3.2.0", model_path="m"))
    project.drift_detector("gnn", "3.2.0").add_production_sample(0.5, 0.9)
    project.registry.update_metrics("gnn", "3.2.0", 10.0, 0.9)
    assert project.store.count("drift/gnn/v3.2.0/production") == 1
    assert project.registry.get_version("gnn", "v3.2.0").requests == 1


def test_a_finalized_test_says_so_and_its_event_says_why(two_versions: Cli) -> None:
    cli = two_versions
    cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0", "--traffic", "50")
    harmful = "".join(  # every treatment request fails, no control request does
        orjson.dumps(
            {"variant": arm, "user_id": f"u{i}", "inference_time_ms": 100.0,
             "confidence": 0.8, "error": arm == "treatment"}
        ).decode() + "\n"
        for i, arm in enumerate(["control", "treatment"] * 2000)
    )
    cli("ab", "record", "t", "--file", "-", input=harmful)
    applied = cli("ab", "evaluate", "t", "--apply", "--json").json()
    assert applied["applied"] and applied["recommendation"].startswith("Applied")
    later = cli("ab", "evaluate", "t")
    assert "Nothing to do: the test was finalized (rolled_back" in later.stdout
    assert "ab finalize" not in later.stdout
    (event,) = [e for e in cli("history", "--json").json() if e["event"] == "ab_finalized"]
    assert event["reason"] == "ab evaluate --apply: rollback (harm)"
    assert_one_error_line(cli("ab", "finalize", "t", "rollback"), "already finalized")


def test_the_split_untested_without_user_ids_is_said_in_the_table(two_versions: Cli) -> None:
    cli = two_versions
    cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0")
    anonymous = "".join(
        orjson.dumps({"variant": arm, "inference_time_ms": 1.0, "confidence": 0.5}).decode() + "\n"
        for arm in ["control"] * 40 + ["treatment"] * 10
    )
    cli("ab", "record", "t", "--file", "-", input=anonymous)
    out = cli("ab", "evaluate", "t").stdout
    assert "unit request" in out and "split not tested" in out


def test_drift_check_all_names_serving_versions_it_cannot_check(two_versions: Cli) -> None:
    cli = two_versions
    cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "v2.2.0")
    samples = "".join(f'{{"prediction": {i / 100}, "confidence": 0.9}}\n' for i in range(200))
    cli("drift", "reference", "gnn", "v2.1.0", "--file", "-", input=samples)
    cli("drift", "record", "gnn", "v2.1.0", "--file", "-", "--batch-id", "p1", input=samples)
    doc = cli("drift", "check", "--all", "--json").json()
    assert [r["model_version"] for r in doc["results"]] == ["v2.1.0"]
    assert doc["without_reference"] == [{"model_type": "gnn", "model_version": "v2.2.0"}]
    assert "not checked: gnn v2.2.0" in cli("drift", "check", "--all").stdout
    window = cli("drift", "report", "gnn", "v2.1.0", "--window", "150", "--json").json()
    assert window["n_window"] == 150
