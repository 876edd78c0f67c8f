"""Prometheus export: exact series values, promtool, and a real Pushgateway + Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_cli import ABTestConfig, ModelVersion, Project, ValidationError
from mlops_cli.prometheus import exposition, push, write_textfile

from .conftest import MLOPS_BIN

ALERTS = Path(__file__).parent.parent / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "dashboard.json"


def need(binary: str) -> str:
    """The binary's path; a skip locally when it is missing, a failure under CI=true."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is not installed; .ci/run installs it")
        pytest.skip(
            f"{binary} is not installed (apt-get install prometheus prometheus-pushgateway)"
        )
    return path


def samples(rng: np.random.Generator, n: int, mean: float, conf: float) -> bytes:
    return b"".join(
        orjson.dumps({"prediction": float(p), "confidence": float(c)}) + b"\n"
        for p, c in zip(
            rng.normal(mean, 1, n), np.clip(rng.normal(conf, 0.05, n), 0, 1), strict=True
        )
    )


@pytest.fixture
def populated(project: Project) -> Project:
    reg = project.registry
    for model_type, version in (("gnn", "v2.1.0"), ("gnn", "v2.2.0"), ("rag", "1.0.0")):
        reg.register_version(ModelVersion(model_type, version, model_path="/m"))
    for ms, conf, err in ((100.0, 0.9, False), (300.0, 0.7, True)):
        reg.update_metrics("gnn", "v2.1.0", ms, conf, err)
    project.ab.start_test(ABTestConfig("t1", "gnn", treatment_version="v2.2.0"))
    project.ab.record_result("t1", "treatment", 50.0, 0.6, True)
    project.ab.record_result("t1", "treatment", 50.0, 0.8, False)
    project.ab.record_result("t1", "control", 50.0, 0.5, False)
    rng = np.random.default_rng(5)
    for model_type, version, mean, conf in (("gnn", "v2.1.0", 2.0, 0.6), ("rag", "1.0.0", 0, 0.8)):
        d = project.drift_detector(model_type, version)
        d.set_reference(samples(rng, 1000, 0.0, 0.8))
        d.record_batch(samples(rng, 1000, mean, conf))
        d.check()
    return project


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_values(populated: Project) -> None:
    got = series(exposition(populated).decode())
    gnn21 = (("model_type", "gnn"), ("model_version", "v2.1.0"))
    assert got[("model_requests_total", gnn21)] == 2
    assert got[("model_error_rate", gnn21)] == 0.5
    assert got[("model_avg_confidence", gnn21)] == pytest.approx(0.8)
    assert got[("model_avg_inference_time_seconds", gnn21)] == pytest.approx(0.2)
    assert got[("model_champion_info", gnn21)] == 1
    assert ("model_champion_info", (("model_type", "gnn"), ("model_version", "v2.2.0"))) not in got
    report = populated.drift_detector("gnn", "v2.1.0").get_drift_report()
    assert got[("model_drift_score", gnn21)] == pytest.approx(report["current_drift_score"])
    assert got[("model_drift_level", gnn21)] == 3  # critical
    treatment = (("test", "t1"), ("variant", "treatment"))
    assert got[("ab_test_requests_total", treatment)] == 2
    assert got[("ab_test_error_rate", treatment)] == 0.5
    assert got[("ab_test_avg_confidence", treatment)] == pytest.approx(0.7)


def test_textfile_is_written_atomically_and_checked(populated: Project, tmp_path: Path) -> None:
    collector_dir = tmp_path / "textfile"
    collector_dir.mkdir()
    target = collector_dir / "mlops.prom"
    target.write_text("old\n")
    write_textfile(populated, target)
    assert target.read_bytes() == exposition(populated)
    assert [p.name for p in collector_dir.iterdir()] == ["mlops.prom"]  # no temp file left
    with pytest.raises(ValidationError, match=r"\.prom"):
        write_textfile(populated, collector_dir / "mlops.txt")


def test_unreachable_pushgateway_is_a_clear_error(populated: Project) -> None:
    run = subprocess.run(
        [
            str(MLOPS_BIN),
            "-C",
            str(populated.root),
            "metrics",
            "export",
            "--push-url",
            f"http://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: could not push to the Pushgateway")


def test_promtool_accepts_the_export(populated: Project) -> None:
    promtool = need("promtool")
    data = subprocess.run(
        [str(MLOPS_BIN), "-C", str(populated.root), "metrics", "export"],
        capture_output=True,
        check=True,
    ).stdout
    check = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_malformed_line_is_left_out_counted_and_exported(populated: Project) -> None:
    """A view: the export skips a malformed line (in the middle of an A/B log, at the end of
    a checks log) and says so as a gauge per stream read, which promtool accepts."""
    ab_log = populated.root / "logs" / "ab" / "t1.jsonl"
    lines = ab_log.read_bytes().splitlines(keepends=True)
    ab_log.write_bytes(b"".join([lines[0], b"{not json\n", *lines[1:]]))
    checks = populated.root / "logs" / "drift" / "gnn" / "v2.1.0" / "checks.jsonl"
    with checks.open("ab") as f:
        f.write(b'{"ts": "2026-01-01T00:00:00Z", "not": "a check"}\n[1, 2]\n')
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(populated.root), "metrics", "export"],
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr
    got = series(run.stdout.decode())
    gnn21 = (("model_type", "gnn"), ("model_version", "v2.1.0"))
    assert got[("model_drift_level", gnn21)] == 3  # the last check before the two bad lines
    assert got[("ab_test_requests_total", (("test", "t1"), ("variant", "treatment")))] == 2
    assert got[("ab_test_requests_total", (("test", "t1"), ("variant", "control")))] == 1
    assert got[("mlops_skipped_lines", (("stream", "ab/t1"),))] == 1
    assert got[("mlops_skipped_lines", (("stream", "drift/gnn/v2.1.0/checks"),))] == 2
    assert got[("mlops_skipped_lines", (("stream", "drift/rag/1.0.0/checks"),))] == 0
    promtool = need("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=run.stdout, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = need("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 4 rules found" in check.stdout


def test_alert_rules_follow_the_level_and_page_on_stale_checks() -> None:
    """deploy/prometheus/alerts_test.yml: promtool's own evaluation of the rules (a score of
    0.45 at level retrain is not critical; 0.35 at level monitor does not page; a check
    36 hours old pages)."""
    promtool = need("promtool")
    run = subprocess.run(
        [promtool, "test", "rules", str(ALERTS.parent / "alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rules = ALERTS.read_text()
    assert "model_drift_score >" not in rules  # no hard-coded thresholds


def test_dashboard_queries_name_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in (
        "model_drift_score",
        "model_drift_level",
        "model_drift_last_check_timestamp_seconds",
        "model_champion_info",
        "model_requests_total",
        "model_error_rate",
        "model_avg_confidence",
        "model_avg_inference_time_seconds",
        "ab_test_requests_total",
        "ab_test_error_rate",
        "ab_test_avg_confidence",
    ):
        assert name in exprs


# -- the real thing --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[str, str]]:
    gateway_bin, prometheus_bin = need("prometheus-pushgateway"), need("prometheus")
    gw_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{gw_port}']\n"
    )
    procs = [
        subprocess.Popen(
            # Debian's pushgateway persists to /var/lib/prometheus/pushgateway.data by
            # default: shared by every test run on the machine, so give it its own file.
            [
                gateway_bin,
                f"--web.listen-address=127.0.0.1:{gw_port}",
                f"--persistence.file={tmp_path / 'pushgateway.data'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_http(f"http://127.0.0.1:{gw_port}/metrics")
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        yield f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{prom_port}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.service
def test_prometheus_sees_only_the_drifting_model(
    populated: Project, services: tuple[str, str]
) -> None:
    gateway, prom = services
    run = subprocess.run(
        [
            str(MLOPS_BIN),
            "-C",
            str(populated.root),
            "metrics",
            "export",
            "--push-url",
            gateway,
            "--job",
            "mlops-test",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    query = urllib.parse.urlencode({"query": "model_drift_score > 0.3"})
    deadline = time.monotonic() + 60
    result: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prom}/api/v1/query?{query}", timeout=5) as response:
            result = json.load(response)["data"]["result"]
        if result:
            break
        time.sleep(0.5)
    assert [
        (r["metric"]["model_type"], r["metric"]["model_version"])  # type: ignore[index]
        for r in result
    ] == [("gnn", "v2.1.0")]
    # the healthy model is scraped too, just below the alert line
    query = urllib.parse.urlencode({"query": "model_drift_score"})
    with urllib.request.urlopen(f"{prom}/api/v1/query?{query}", timeout=5) as response:
        everything = json.load(response)["data"]["result"]
    assert {r["metric"]["model_type"] for r in everything} == {"gnn", "rag"}


def test_push_function_reports_http_errors(populated: Project, services: tuple[str, str]) -> None:
    gateway, _ = services
    from mlops_cli import MlopsError

    with pytest.raises(MlopsError, match="could not push"):
        push(populated, gateway + "/nonexistent-prefix", "job")


def test_drift_alarm_gauge_says_which_component_fired(populated: Project) -> None:
    """gnn v2.1.0's window moved 2 sd and lost a quarter of its confidence; rag's did not."""
    got = series(exposition(populated).decode())
    gnn = (("model_type", "gnn"), ("model_version", "v2.1.0"))
    rag = (("model_type", "rag"), ("model_version", "1.0.0"))
    for key, want in (
        (gnn, {"predictions": 1, "confidence": 1, "spread": 0}),
        (rag, {"predictions": 0, "confidence": 0, "spread": 0}),
    ):
        for component, value in want.items():
            labels = tuple(sorted((*key, ("component", component))))
            assert got[("model_drift_alarm", labels)] == value, (key, component)
