"""No data is not zero: a version or an arm without requests has no mean (shown "-", JSON
null, not exported), and a malformed line of a metrics log is left out of the read-only views
that show serving metrics, which say so."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.prometheus import exposition
from mlops_cli.ui import data

from .conftest import Run

Cli = Callable[..., Run]
MEANS = ("avg_inference_time_ms", "avg_confidence", "error_rate")
BAD = b"{not json\n"


@pytest.fixture
def two(project: Project) -> Project:
    """gnn v1.0.0 (champion) served 2 requests (20 and 30 ms, confidence 0.9 and 0.7, one
    error); v1.1.0 served none."""
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m"))
    project.registry.register_version(ModelVersion("gnn", "v1.1.0", model_path="/m"))
    project.registry.update_metrics("gnn", "v1.0.0", 20.0, 0.9, False)
    project.registry.update_metrics("gnn", "v1.0.0", 30.0, 0.7, True)
    return project


def series(project: Project) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(project).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def gnn(version: str) -> tuple[tuple[str, str], ...]:
    return (("model_type", "gnn"), ("model_version", version))


def test_a_version_without_requests_has_no_means(two: Project, cli: Cli) -> None:
    listed = {v["version"]: v for v in cli("list", "--json").json()}
    assert listed["v1.1.0"]["requests"] == 0
    assert [listed["v1.1.0"][k] for k in MEANS] == [None, None, None]
    # (20 + 30) / 2 ms, (0.9 + 0.7) / 2, 1 error in 2
    assert [listed["v1.0.0"][k] for k in MEANS] == [25.0, pytest.approx(0.8), 0.5]
    shown = cli("show", "gnn", "v1.1.0", "--json").json()
    assert [shown[k] for k in MEANS] == [None, None, None]
    table = cli("list").stdout
    row = next(line for line in table.splitlines() if "v1.1.0" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[-4:] == ["0", "-", "-", "-"]
    assert "0.0000" not in row
    card = {
        cells[0]: cells[1]
        for line in cli("show", "gnn", "v1.1.0").stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2
    }
    assert [card[k] for k in MEANS] == ["-", "-", "-"] and card["requests"] == "0"


def test_the_model_page_has_null_means_for_a_version_without_requests(two: Project) -> None:
    versions = {v["version"]: v for v in data.model(two.root, "gnn")["versions"]}
    assert [versions["v1.1.0"][k] for k in MEANS] == [None, None, None]
    assert versions["v1.0.0"]["avg_inference_time_ms"] == 25.0


def test_the_export_has_no_means_for_a_version_without_requests(two: Project) -> None:
    got = series(two)
    assert got[("model_requests_total", gnn("v1.1.0"))] == 0
    for name in ("model_error_rate", "model_avg_confidence", "model_avg_inference_time_seconds"):
        assert (name, gnn("v1.1.0")) not in got, name
    assert got[("model_avg_confidence", gnn("v1.0.0"))] == pytest.approx(0.8)
    assert got[("model_avg_inference_time_seconds", gnn("v1.0.0"))] == pytest.approx(0.025)


def test_an_arm_without_requests_has_no_means_and_no_differences(
    two: Project, cli: Cli
) -> None:
    two.ab.start_test(ABTestConfig("t1", "gnn", treatment_version="v1.1.0"))
    for _ in range(30):
        two.ab.record_result("t1", "control", 10.0, 0.87, False)
    doc = cli("ab", "evaluate", "t1", "--json").json()
    m = doc["metrics"]
    assert m["treatment"]["requests"] == 0
    assert [m["treatment"][k] for k in MEANS] == [None, None, None]
    assert m["control"]["avg_confidence"] == pytest.approx(0.87)
    for key in ("confidence_diff", "error_rate_diff", "inference_time_ms_diff"):
        assert m[key] == {"estimate": None, "ci": [None, None], "p_value": None}, key
    for guardrail in m["guardrails"].values():
        assert guardrail["estimate"] is None and guardrail["ci"] == [None, None]
    assert doc["decision"] == "continue"
    assert "treatment arm has 0 requests, too few to compare" in doc["reasons"]
    text = cli("ab", "evaluate", "t1").stdout
    assert "-0.87" not in text
    page = data.ab_test(two.root, "t1")["evaluation"]["metrics"]
    assert page["confidence_diff"]["estimate"] is None
    got = series(two)
    treatment = (("test", "t1"), ("variant", "treatment"))
    assert got[("ab_test_requests_total", treatment)] == 0
    assert ("ab_test_avg_confidence", treatment) not in got
    assert ("ab_test_error_rate", treatment) not in got


def test_one_request_in_each_arm_is_a_difference_again(two: Project) -> None:
    """The boundary: n = 1 in each arm has means and an estimate (the interval unbounded)."""
    two.ab.start_test(ABTestConfig("t1", "gnn", treatment_version="v1.1.0"))
    two.ab.record_result("t1", "control", 10.0, 0.5, False)
    two.ab.record_result("t1", "treatment", 12.0, 0.75, False)
    m = two.ab.evaluate_test("t1").metrics
    assert m["treatment"]["avg_confidence"] == 0.75
    assert m["confidence_diff"]["estimate"] == pytest.approx(0.25)


def test_a_version_with_one_request_has_its_means(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m"))
    assert project.registry.get_version("gnn", "v1.0.0").avg_confidence is None
    project.registry.update_metrics("gnn", "v1.0.0", 12.0, 0.0, False)
    v = project.registry.get_version("gnn", "v1.0.0")
    assert (v.requests, v.avg_confidence, v.error_rate) == (1, 0.0, 0.0)  # a real zero


def test_a_malformed_metrics_line_is_left_out_of_the_views_and_said(
    two: Project, cli: Cli
) -> None:
    log = two.root / "logs" / "metrics" / "gnn" / "v1.0.0.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + BAD + lines[1])
    before = log.read_bytes()
    note = "note: 1 malformed line(s) of logs/metrics/gnn/v1.0.0.jsonl left out"
    for args in (("list",), ("list", "--json"), ("show", "gnn", "v1.0.0", "--json"), ("show", "gnn")):
        run = cli(*args)
        assert run.exit_code == 0, (args, run.stderr)
        assert note in run.stderr, args
    listed = {v["version"]: v for v in cli("list", "--json").json()}
    assert listed["v1.0.0"]["requests"] == 2 and listed["v1.0.0"]["avg_inference_time_ms"] == 25.0
    assert "malformed" not in cli("show", "gnn", "v1.1.0").stderr
    exported = cli("metrics", "export")
    assert exported.exit_code == 0, exported.stderr
    got = series(two)
    assert got[("mlops_skipped_lines", (("stream", "metrics/gnn/v1.0.0"),))] == 1
    assert got[("mlops_skipped_lines", (("stream", "metrics/gnn/v1.1.0"),))] == 0
    assert got[("model_requests_total", gnn("v1.0.0"))] == 2
    page = data.model(two.root, "gnn")
    assert {"stream": "metrics/gnn/v1.0.0", "log": "logs/metrics/gnn/v1.0.0.jsonl", "lines": 1} in (
        page["skipped"]
    )
    assert log.read_bytes() == before
