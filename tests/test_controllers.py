"""Read-only endpoints for delivery controllers, contract-tested against the request and
response shapes Argo Rollouts' web metric and Flagger's webhooks document (copied, with the
doc version, in tests/data/controllers/)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.ab_testing import safe_to_continue
from mlops_cli.decision import Evaluation
from mlops_cli.ui.server import make_server

DATA = Path(__file__).parent / "data" / "controllers"
FLAGGER = json.loads((DATA / "flagger_webhook.json").read_text())
ARGO = json.loads((DATA / "argo_web_metric.json").read_text())
TOKEN = "s3cret-token"
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _evaluation(decision: str, status: str = "running", cause: str | None = None,
                mismatch: bool = False) -> Evaluation:
    return Evaluation("t", decision, "", [], "sequential", 0.05, 0, 0.0,
                      {"srm": {"mismatch": mismatch, "p_value": 1e-6 if mismatch else 0.5}},
                      status=status, rollback_cause=cause)


@pytest.mark.parametrize(
    ("evaluation", "safe"),
    [
        (_evaluation("continue"), True),
        (_evaluation("promote"), True),
        (_evaluation("promote", status="promoted"), True),
        (_evaluation("rollback", cause="harm"), False),
        (_evaluation("rollback", cause="futility"), False),
        (_evaluation("continue", status="rolled_back"), False),
        (_evaluation("continue", status="aborted"), False),
        (_evaluation("continue", mismatch=True), False),
    ],
)
def test_safe_to_continue(evaluation: Evaluation, safe: bool) -> None:
    assert safe_to_continue(evaluation)[0] is safe


class Clock:
    now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Project]]:
    root = tmp_path / "p"
    project = Project.init(root, clock=Clock())
    for v in ("v1.0.0", "v2.0.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="v2.0.0",
                                       treatment_traffic_pct=50, tail_latency=False))
    server = make_server(str(root), "127.0.0.1", 0, token=TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", project
    finally:
        server.shutdown()
        server.server_close()


def call(url: str, method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def harm(project: Project) -> None:
    """Far worse errors in the treatment, over a day: a harm rollback."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4000):
        user = f"u{i % 800}"
        arm = project.ab.assign_variant("gnn", user).name
        rows.append({"variant": arm, "inference_time_ms": 100.0, "confidence": 0.8,
                     "error": bool(rng.random() < (0.4 if arm == "treatment" else 0.02)),
                     "user_id": user})
    project.ab.record_batch("t", b"".join(json.dumps(r).encode() + b"\n" for r in rows))


def test_argo_web_metric_reads_safe_to_continue(served: tuple[str, Project]) -> None:
    """As Argo's web provider calls it: GET with the Authorization header, a JSON body whose
    `jsonPath` {$.safe_to_continue} is the boolean its successCondition compares."""
    base, project = served
    web = ARGO["metric"]["provider"]["web"]
    url = web["url"].replace("http://mlops-ui:8321", base).replace("{{ args.test }}", "t")
    header = web["headers"][0]
    auth = {header["key"]: header["value"].replace("{{ args.api-token }}", TOKEN)}
    assert ARGO["metric"]["successCondition"] == "result == true"
    assert web["jsonPath"] == "{$.safe_to_continue}"
    status, doc = call(url, headers=auth)
    assert status == 200 and doc["safe_to_continue"] is True and doc["decision"] == "continue"
    assert call(url)[0] == 401  # remote callers need the token
    harm(project)
    status, doc = call(url, headers=auth)
    assert status == 200  # the metric endpoint answers; the boolean fails the condition
    assert (doc["safe_to_continue"], doc["decision"], doc["rollback_cause"]) == (
        False, "rollback", "harm")


def test_flagger_webhook_gets_200_to_continue_and_non_2xx_to_halt(
    served: tuple[str, Project]
) -> None:
    """As Flagger calls a webhook: POST of its documented payload; 200-202 advances, any
    non-2xx halts. The token goes in the URL (`?token=`), as a webhook sets no header."""
    base, project = served
    url = f"{base}/api/controller/t/gate?token={TOKEN}"
    payload = FLAGGER["request"]["body"]
    status, doc = call(url, "POST", payload, {"Content-Type": "application/json"})
    assert status in FLAGGER["response"]["advance"] and status == 200
    assert doc["safe_to_continue"] is True
    harm(project)
    status, doc = call(url, "POST", payload, {"Content-Type": "application/json"})
    assert not 200 <= status < 300 and status == 409
    assert doc["safe_to_continue"] is False and "rollback" in doc["why"]
    assert call(f"{base}/api/controller/t/gate?token={TOKEN}")[0] == 409  # GET as well
    assert project.ab.get_test("t").running  # read only: nothing was applied
    assert call(f"{base}/api/controller/t/gate", "POST", payload)[0] == 401
    assert call(f"{base}/api/controller/nope/gate?token={TOKEN}", "POST", payload)[0] == 404
    assert call(url, "POST", [1, 2]) == (400, {"error": {
        "type": "ValidationError", "message": "a webhook's body must be a JSON object"}})
    bad = urllib.request.Request(url, data=b"canary=x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=60)
    assert refused.value.code == 400
    said = json.loads(refused.value.read())["error"]["message"]
    assert said.startswith("a webhook's body must be a JSON object, not: ")
    status, doc = call(f"{base}/api/controller/t?token={TOKEN}", "POST", payload)
    assert status == 405 and "only at /api/controller/<test>/gate" in doc["error"]["message"]
    assert "--allow-actions" not in doc["error"]["message"]  # no flag would make it answer


def test_a_ramp_shows_its_step_to_the_controller(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p", clock=Clock())
    for v in ("v1.0.0", "v2.0.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    project.ab.start_test(ABTestConfig("r", "gnn", treatment_version="v2.0.0", ramp="5,50"))
    doc = project.ab.controller_verdict("r")
    assert doc["ramp"]["step"] == 1 and doc["treatment_traffic_pct"] == 5.0
    assert doc["safe_to_continue"] is True
