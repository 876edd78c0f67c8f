"""The dashboard over HTTP and the HTML report: answers, refusals, headers, agreement with the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.errors import ValidationError
from mlops_cli.ui import data
from mlops_cli.ui.server import check_bind, make_server, url_of

from .conftest import MLOPS_BIN

DEMO_TEST = "gnn_v2.2_test"
RUNNING_TEST = "ranker_canary"


def build_demo(root: Path) -> Path:
    """`mlops demo` (gnn: a finished test, drift) plus a `ranker` with a running A/B test."""
    run = subprocess.run(
        [str(MLOPS_BIN), "demo", str(root)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    said = re.search(r"Open the dashboard: \S*mlops -C (\S+) ui --open", run.stdout)
    assert said and said.group(1) == str(root), run.stdout[-400:]
    project = Project.open(root)
    for version in ("1.0.0", "1.1.0"):
        path = root / "models" / f"ranker_{version}.bin"
        path.write_bytes(f"ranker {version}".encode())
        project.registry.register_version(
            ModelVersion(model_type="ranker", version=version, model_path=str(path))
        )
    project.ab.start_test(
        ABTestConfig(
            name=RUNNING_TEST,
            model_type="ranker",
            control_version="1.0.0",
            treatment_version="1.1.0",
            treatment_traffic_pct=50,
            min_requests=100,
        )
    )
    lines = [
        {
            "variant": "treatment" if i % 2 else "control",
            "inference_time_ms": 20.0 + (i % 7),
            "confidence": 0.7 + (i % 5) / 50,
            "error": i % 31 == 0,
        }
        for i in range(60)
    ]
    project.ab.record_batch(RUNNING_TEST, b"\n".join(orjson.dumps(r) for r in lines))
    return root


@pytest.fixture(scope="module")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("ui") / "demo")


@pytest.fixture
def demo(demo_master: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo project (tests may change it)."""
    root = tmp_path / "demo"
    shutil.copytree(demo_master, root, symlinks=True)
    return root


class Served:
    def __init__(self, root: Path, **options: Any) -> None:
        self.server = make_server(str(root), "127.0.0.1", 0, **options)
        self.url = url_of(self.server).rstrip("/")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def request(
        self,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        payload = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=payload, headers=headers or {}, method=method
        )
        if payload is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def session_token(self) -> str:
        _, _, page = self.request("/")
        found = re.search(rb'name="mlops-session" content="([^"]*)"', page)
        assert found
        return found.group(1).decode()


@pytest.fixture
def serve(demo: Path) -> Iterator[Any]:
    servers: list[Served] = []

    def start(**options: Any) -> Served:
        served = Served(demo, **options)
        servers.append(served)
        return served

    yield start
    for served in servers:
        served.close()


def cli_json(root: Path, *args: str) -> Any:
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(root), *args, "--json"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def cli_text(root: Path, *args: str) -> str:
    run = subprocess.run([str(MLOPS_BIN), "-C", str(root), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


# -- headers and refusals --------------------------------------------------------------------


def test_every_response_has_a_csp_that_allows_only_the_server(serve: Any) -> None:
    ui = serve()
    for path in ("/", "/model/gnn", "/api/overview", "/static/app.js", "/model/nope", "/x/y"):
        status, headers, _ = ui.request(path)
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp, path
        assert "http" not in csp and "*" not in csp and "unsafe" not in csp, (path, csp)
        assert status in (200, 404), (path, status)


@pytest.mark.parametrize(
    "path",
    [
        "/model/nope",
        "/test/nope",
        "/drift/gnn/v9.9.9",
        "/drift/nope/v1.0.0",
        "/model/..%2F..%2Fetc",
        "/static/../registry.yaml",
        "/static/%2e%2e/%2e%2e/registry.yaml",
        "/nothing-here",
    ],
)
def test_an_unknown_name_in_an_address_is_a_404_page_not_a_traceback(serve: Any, path: str) -> None:
    status, headers, body = serve().request(path)
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"Traceback" not in body and b'File "' not in body
    assert b"404 Not Found" in body


def test_an_unknown_name_in_the_api_is_a_404_json_error(serve: Any) -> None:
    status, _, body = serve().request("/api/test/nope")
    assert status == 404
    assert json.loads(body) == {
        "error": {
            "type": "NotFoundError",
            "message": f"unknown A/B test 'nope' (running: {RUNNING_TEST}; `mlops ab list` "
            "shows every test)",
        }
    }


def test_post_without_allow_actions_is_403_and_changes_nothing(serve: Any, demo: Path) -> None:
    ui = serve()
    before = (demo / "events.jsonl").read_bytes(), (demo / "registry.yaml").read_bytes()
    status, _, body = ui.request("/api/action/rollback", {"model_type": "gnn"}, method="POST")
    assert status == 403
    assert json.loads(body)["error"]["type"] == "Forbidden"
    after = (demo / "events.jsonl").read_bytes(), (demo / "registry.yaml").read_bytes()
    assert after == before
    assert ui.session_token() == ""  # a read-only page carries no session token


def test_an_action_needs_the_page_session_token(serve: Any, demo: Path) -> None:
    ui = serve(allow_actions=True)
    status, _, _ = ui.request("/api/action/rollback", {"model_type": "gnn"}, method="POST")
    assert status == 403
    status, _, _ = ui.request(
        "/api/action/rollback",
        {"model_type": "gnn"},
        headers={"X-Mlops-Session": "guessed"},
        method="POST",
    )
    assert status == 403
    assert cli_text(demo, "champion", "gnn") == "v2.2.0"


def test_an_action_makes_the_library_change_audited_with_the_dashboard_actor(
    serve: Any, demo: Path
) -> None:
    ui = serve(allow_actions=True)
    token = ui.session_token()
    status, _, body = ui.request(
        "/api/action/rollback",
        {"model_type": "gnn", "reason": "drift alert"},
        headers={"X-Mlops-Session": token},
        method="POST",
    )
    assert status == 200, body
    assert json.loads(body)["result"]["version"] == "v2.1.0"
    assert cli_text(demo, "champion", "gnn") == "v2.1.0"
    last = Project.open(demo).registry.history("gnn")[-1]
    assert last["event"] == "rolled_back" and last["version"] == "v2.1.0"
    assert last["actor"] == "ui:tester" and last["reason"] == "drift alert"


def test_an_action_refused_by_the_library_answers_its_message(serve: Any, demo: Path) -> None:
    ui = serve(allow_actions=True)
    headers = {"X-Mlops-Session": ui.session_token()}
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "deprecate", "gnn", "v2.2.0"],
        capture_output=True,
        text=True,
    )
    status, _, body = ui.request(
        "/api/action/deprecate",
        {"model_type": "gnn", "version": "v2.2.0"},
        headers=headers,
        method="POST",
    )
    assert status == 409
    assert run.stderr == f"error: {json.loads(body)['error']['message']}\n"
    status, _, body = ui.request(
        "/api/action/finalize",
        {"test": RUNNING_TEST, "decision": "promote"},
        headers=headers,
        method="POST",
    )
    assert status == 409 and "says continue, not promote" in json.loads(body)["error"]["message"]
    status, _, _ = ui.request("/api/action/explode", {"x": 1}, headers=headers, method="POST")
    assert status == 404


def test_a_non_loopback_address_needs_a_token(demo: Path) -> None:
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "ui", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: refusing to serve on 0.0.0.0 without --token")
    assert len(run.stderr.splitlines()) == 1
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, None)
    check_bind("0.0.0.0", "s3cret")


@pytest.mark.parametrize("token", ["", " ", "two words", "tab\there", "nl\n"])
def test_a_blank_or_spaced_token_is_refused(demo: Path, token: str) -> None:
    """A token of spaces would be 'given' yet guard nothing a client could reliably send."""
    with pytest.raises(ValidationError, match="--token must be non-empty"):
        check_bind("0.0.0.0", token)
    with pytest.raises(ValidationError, match="--token must be non-empty"):
        check_bind("127.0.0.1", token)
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "ui", "--port", "0", "--token", token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: --token must be non-empty")


def test_on_loopback_a_foreign_host_header_is_refused(serve: Any, demo: Path) -> None:
    """A site whose name was rebound to 127.0.0.1 gets nothing (DNS rebinding)."""
    ui = serve(allow_actions=True)
    status, _, body = ui.request("/api/overview", headers={"Host": "evil.example:80"})
    assert status == 403 and b"evil.example" in body
    status, _, _ = ui.request(
        "/api/action/rollback",
        {"model_type": "gnn"},
        headers={"Host": "evil.example", "X-Mlops-Session": ui.session_token()},
        method="POST",
    )
    assert status == 403 and cli_text(demo, "champion", "gnn") == "v2.2.0"
    for host in ("localhost:1234", "127.0.0.1", "[::1]:80"):
        assert ui.request("/api/overview", headers={"Host": host})[0] == 200, host


def test_a_port_in_use_is_a_clean_error(serve: Any, demo: Path) -> None:
    ui = serve()
    port = ui.server.server_address[1]
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "ui", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.startswith(f"error: cannot serve on 127.0.0.1:{port}: ")
    assert len(run.stderr.splitlines()) == 1


def test_with_a_token_every_request_must_present_it(serve: Any) -> None:
    ui = serve(token="s3cret")
    assert ui.request("/api/overview")[0] == 401
    assert ui.request("/")[0] == 401
    status, headers, _ = ui.request("/?token=s3cret")
    assert status == 200 and "mlops_token=s3cret" in headers["Set-Cookie"]
    assert ui.request("/api/overview", headers={"Cookie": "mlops_token=s3cret"})[0] == 200
    assert ui.request("/api/overview", headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert ui.request("/api/overview", headers={"Authorization": "Bearer wrong"})[0] == 401


# -- what the endpoints say --------------------------------------------------------------------


def test_overview_lists_every_model_type_with_champion_test_and_drift(serve: Any) -> None:
    doc = json.loads(serve().request("/api/overview")[2])
    by_type = {m["model_type"]: m for m in doc["model_types"]}
    assert sorted(by_type) == ["gnn", "ranker"]
    assert by_type["gnn"]["champion"] == "v2.2.0" and by_type["gnn"]["test"] is None
    assert by_type["gnn"]["traffic"] == [{"version": "v2.2.0", "percentage": 100.0}]
    assert by_type["gnn"]["drift"]["level"] in ("retrain", "critical")
    ranker = by_type["ranker"]
    assert ranker["champion"] == "1.0.0" and ranker["drift"]["level"] is None
    assert ranker["drift"]["stale"] is True  # never checked
    assert ranker["test"]["name"] == RUNNING_TEST and ranker["test"]["decision"] == "continue"
    assert {t["percentage"] for t in ranker["traffic"]} == {50.0}


def test_a_drift_badge_is_stale_once_samples_arrive_after_its_check(demo: Path) -> None:
    def gnn_badge() -> dict[str, Any]:
        doc = data.overview(demo)
        (gnn,) = [m for m in doc["model_types"] if m["model_type"] == "gnn"]
        return dict(gnn["drift"])

    detector = Project.open(demo).drift_detector("gnn", "v2.2.0")
    detector.check()
    assert gnn_badge()["stale"] is False  # checked just now, after the last sample
    detector.add_production_sample(0.1, 0.9)
    assert gnn_badge()["stale"] is True


def test_the_test_endpoint_agrees_with_ab_evaluate(serve: Any, demo: Path) -> None:
    doc = json.loads(serve().request(f"/api/test/{DEMO_TEST}")[2])
    cli = cli_json(demo, "ab", "evaluate", DEMO_TEST)
    evaluation = doc["evaluation"]
    for key in ("decision", "recommendation", "reasons", "method", "alpha", "requests", "metrics"):
        assert evaluation[key] == cli[key], key


def test_the_narrowing_curve_ends_at_the_full_evaluation(demo: Path) -> None:
    doc = data.ab_test(demo, DEMO_TEST)
    points = doc["narrowing"]
    metrics = doc["evaluation"]["metrics"]
    assert len(points) == data.NARROWING_POINTS
    assert points[-1]["requests"] == doc["evaluation"]["requests"]
    for key in ("confidence_diff", "error_rate_diff", "inference_time_ms_diff"):
        assert points[-1][key]["estimate"] == pytest.approx(metrics[key]["estimate"], rel=1e-9)
        assert points[-1][key]["ci"] == pytest.approx(metrics[key]["ci"], rel=1e-9)
    widths = [p["confidence_diff"]["ci"][1] - p["confidence_diff"]["ci"][0] for p in points]
    assert widths[-1] < widths[0] / 2  # more requests, a narrower interval


def test_the_drift_endpoint_agrees_with_drift_report(serve: Any, demo: Path) -> None:
    recorded = Project.open(demo).drift_detector("gnn", "v2.2.0").history()
    doc = json.loads(serve().request("/api/drift/gnn/v2.2.0")[2])
    cli = cli_json(demo, "drift", "report", "gnn", "v2.2.0")
    # both compute the current figures read-only (checked_at is when each computed them)
    for key in ("current_drift_score", "level", "components", "alarms", "n_window"):
        assert doc["report"][key] == cli[key], key
    checks = Project.open(demo).drift_detector("gnn", "v2.2.0").history()
    assert checks == recorded  # reads record no check
    assert [h["score"] for h in doc["history"]] == [c["score"] for c in checks]
    for name in ("prediction", "confidence"):
        hist = doc["histograms"][name]
        assert len(hist["edges"]) == data.HISTOGRAM_BINS + 1
        assert sum(hist["reference"]) == pytest.approx(1, abs=1e-4)
        assert sum(hist["window"]) == pytest.approx(1, abs=1e-4)
        assert hist["n_reference"] == 5000 and hist["n_window"] == cli["n_window"]


def test_model_endpoint_has_versions_in_semver_order_and_the_champion_timeline(
    serve: Any,
) -> None:
    doc = json.loads(serve().request("/api/model/gnn")[2])
    assert [v["version"] for v in doc["versions"]] == ["v2.1.0", "v2.2.0"]
    assert all(len(v["sha256"]) == 64 for v in doc["versions"])
    assert [(s["version"], s["kind"]) for s in doc["timeline"]] == [
        ("v2.1.0", "promoted"),
        ("v2.2.0", "ab_finalized"),
    ]
    assert doc["timeline"][0]["until"] == doc["timeline"][1]["since"]
    assert doc["timeline"][1]["until"] is None


def test_events_filter_by_model_type_and_kind(serve: Any) -> None:
    ui = serve()
    every = json.loads(ui.request("/api/events")[2])
    assert {"promoted", "ab_finalized", "ab_started"} <= set(every["kinds"])
    only = json.loads(ui.request("/api/events?model_type=ranker&kind=registered")[2])
    assert [(e["model_type"], e["event"], e["version"]) for e in only["events"]] == [
        ("ranker", "registered", "1.1.0"),
        ("ranker", "registered", "1.0.0"),
    ]
    assert ui.request("/api/events?model_type=nope")[0] == 404


def test_the_server_keeps_serving_while_another_process_writes(serve: Any, demo: Path) -> None:
    ui = serve()
    writer = subprocess.Popen(
        [str(MLOPS_BIN), "-C", str(demo), "ab", "record", RUNNING_TEST, "--file", "-"],
        stdin=subprocess.PIPE,
    )
    assert writer.stdin is not None
    line = b'{"variant": "control", "inference_time_ms": 20, "confidence": 0.7}\n'
    writer.stdin.write(line * 20000)
    writer.stdin.close()
    answered = 0
    while writer.poll() is None or answered < 5:
        status, _, body = ui.request(f"/api/test/{RUNNING_TEST}")
        assert status == 200, body
        answered += 1
    assert writer.wait() == 0
    assert json.loads(ui.request(f"/api/test/{RUNNING_TEST}")[2])["evaluation"]["requests"] == (
        60 + 20000
    )


# -- the HTML report ---------------------------------------------------------------------------


def test_the_report_is_one_self_contained_file_under_300_kb(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "report", "--html", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    size = len(page.encode())
    print(f"\nreport of the demo project: {size / 1024:.0f} KB")
    assert size < 300 * 1024
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp and "default-src 'none'" in csp.group(1) and "unsafe" not in csp.group(1)
    # Nothing to fetch: no src or href that is not a fragment or data: URL.
    for attr in re.findall(r'\b(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("#", "data:")), attr
    docs = json.loads(
        re.search(
            r'<script type="application/json" id="mlops-data">(.*?)</script>', page, re.S
        ).group(1)  # type: ignore[union-attr]
    )
    assert docs[f"/test/{DEMO_TEST}"]["evaluation"]["decision"] == "promote"
    assert {"/overview", "/model/gnn", "/model/ranker", "/drift/gnn/v2.2.0", "/events"} <= set(docs)


def test_report_for_one_model_type_and_unknown_names(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "report", "--html", str(out), "--model", "ranker"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    docs = data.bundle(demo, "ranker")
    assert set(docs) == {"/overview", "/model/ranker", f"/test/{RUNNING_TEST}", "/events"}
    assert [m["model_type"] for m in docs["/overview"]["model_types"]] == ["ranker"]
    bad = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "report", "--html", str(out), "--test", "nope"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: unknown A/B test 'nope'")


def test_a_script_end_tag_in_the_data_cannot_end_the_inline_script() -> None:
    from mlops_cli.report import render_html

    page = render_html({"/overview": {"x": "</script><script>alert(1)</script>"}})
    assert "</script><script>alert(1)" not in page


def test_json_has_no_infinities(demo: Path) -> None:
    """The documents are strict JSON: an unbounded interval end is null, not Infinity."""
    for doc in data.bundle(demo).values():
        json.dumps(doc, allow_nan=False)


def test_the_model_page_names_the_aliases(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m.pt"))
    project.registry.register_version(ModelVersion("gnn", "1.1.0", model_path="m.pt"))
    project.registry.set_alias("gnn", "shadow", "1.1.0")
    project.registry.set_alias("gnn", "canary", "1.1.0")
    assert data.model(str(project.root), "gnn")["aliases"] == {"canary": "1.1.0", "shadow": "1.1.0"}
