"""Input features through the CLI: batches carry them, `drift check` / `report` show the
features table, --json gives each feature's alarms; bad features are one error line and change
nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_cli import Project

from .conftest import Run, assert_one_error_line, snapshot

Cli = Callable[..., Run]


def batch(path: Path, n: int, seed: int, shift: float = 0.0) -> str:
    rng = np.random.default_rng(seed)
    lines = [
        orjson.dumps(
            {
                "prediction": float(rng.normal()),
                "confidence": 0.8,
                "features": {
                    "amount": float(rng.normal(100 * (1 + shift), 10)),
                    "channel": str(rng.choice(["web", "app"])),
                },
            }
        )
        for _ in range(n)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def drifted(cli: Cli, tmp_path: Path) -> None:
    cli("register", "gnn", "v1.0.0", "--path", "/m")
    assert cli("drift", "reference", "gnn", "v1.0.0", "--file",
               batch(tmp_path / "r.jsonl", 1000, 1)).exit_code == 0
    assert cli("drift", "record", "gnn", "v1.0.0", "--file",
               batch(tmp_path / "w.jsonl", 1000, 2, shift=0.1)).exit_code == 0


def test_check_shows_the_features_table_most_drifted_first(cli: Cli, tmp_path: Path) -> None:
    drifted(cli, tmp_path)
    run = cli("drift", "check", "gnn", "v1.0.0")
    assert run.exit_code == 0, run.stderr
    out = run.stdout
    assert "input features of gnn v1.0.0: 1 of 2 drifted" in out
    assert out.index("│ amount") < out.index("│ channel")
    assert "Input features drifted: amount" in out
    assert "the score covers prediction and confidence" in out


def test_json_gives_each_feature_its_alarms(cli: Cli, tmp_path: Path) -> None:
    drifted(cli, tmp_path)
    doc: dict[str, Any] = cli("drift", "report", "gnn", "v1.0.0", "--json").json()
    amount = doc["features"]["amount"]
    assert set(amount["drift"]) == {"alarm", "effect", "p_value", "floor", "test"}
    assert set(amount["missing"]) == set(amount["type_change"]) == {
        "alarm", "effect", "p_value", "floor"
    }
    assert amount["drift"]["alarm"] is True and amount["drift"]["floor"] == 0.1
    assert doc["drifted_features"] == ["amount"] and doc["drifted_feature_share"] == 0.5
    assert doc["level"] == "retrain" and doc["alert_triggered"] is True


def test_bad_features_in_a_batch_are_one_error_and_change_nothing(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    drifted(cli, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prediction": 1, "confidence": 0.5, "features": {"x": [1]}}\n')
    before = snapshot(project.root)
    run = cli("drift", "record", "gnn", "v1.0.0", "--file", str(bad))
    assert_one_error_line(run, "line 1", "feature 'x' must be a number, a string")
    assert snapshot(project.root) == before


def test_a_hand_edited_features_object_far_into_the_window_is_named_by_its_line(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    # A window of several read blocks (FEATURE_BLOCK): the bad line lies past the first, and
    # only its features object is broken, so the outputs' reader passes it and the features'
    # reader must name it, counted from the top of the log.
    from mlops_cli.store.files import FEATURE_BLOCK

    cli("register", "gnn", "v1.0.0", "--path", "/m")
    assert cli("drift", "reference", "gnn", "v1.0.0", "--file",
               batch(tmp_path / "r.jsonl", 1000, 1)).exit_code == 0
    n = 3 * FEATURE_BLOCK // 100  # lines of about 100 bytes
    assert cli("drift", "record", "gnn", "v1.0.0", "--file",
               batch(tmp_path / "w.jsonl", n, 2)).exit_code == 0
    # the window starts at line 51: the bad line's number is counted from the log's top
    assert cli("config", "set", "drift.window_size", str(n - 50)).exit_code == 0
    log = project.root / "logs" / "drift" / "gnn" / "v1.0.0" / "production.jsonl"
    lines = log.read_bytes().split(b"\n")
    bad = 2 * n // 3
    assert b'"features":{"amount":' in lines[bad - 1] and sum(map(len, lines[:bad])) > FEATURE_BLOCK
    lines[bad - 1] = lines[bad - 1].replace(b'{"amount":', b'{"amount":,')
    log.write_bytes(b"\n".join(lines))
    before = snapshot(project.root)
    run = cli("drift", "check", "gnn", "v1.0.0")
    assert_one_error_line(run, f"production.jsonl: line {bad} is not a JSON object")
    assert snapshot(project.root) == before
    doc: dict[str, Any] = cli("drift", "check", "gnn", "v1.0.0", "--skip-invalid", "--json").json()
    assert doc["features"]["amount"]["n_window"] == n - 51


@pytest.mark.parametrize("kind", ["production", "reference"])
def test_a_hand_edited_feature_value_no_sample_holds_is_one_error_or_missing(
    cli: Cli, project: Project, tmp_path: Path, kind: str
) -> None:
    """A list or an object as a feature's value in a stored log (batches refuse them): one
    error naming the feature and changing nothing, or with --skip-invalid a missing value."""
    drifted(cli, tmp_path)
    log = project.root / "logs" / "drift" / "gnn" / "v1.0.0" / f"{kind}.jsonl"
    lines = log.read_bytes().split(b"\n")
    lines[10] = lines[10].replace(b'"channel":"app"', b'"channel":["app"]').replace(
        b'"channel":"web"', b'"channel":{"web":1}'
    )
    assert b'"channel":[' in lines[10] or b'"channel":{' in lines[10]
    log.write_bytes(b"\n".join(lines))
    (log.parent / f"{log.stem}.profile.json").unlink(missing_ok=True)  # profiled again
    for command in ("check", "report"):
        before = snapshot(project.root)
        run = cli("drift", command, "gnn", "v1.0.0")
        assert_one_error_line(run, "input feature 'channel' holds a", "--skip-invalid")
        assert snapshot(project.root) == before
    doc: dict[str, Any] = cli("drift", "check", "gnn", "v1.0.0", "--skip-invalid", "--json").json()
    quality = doc["features"]["channel"]["quality"]
    key = "missing_share" if kind == "production" else "missing_share_reference"
    assert quality[key] == 1 / 1000  # the one edited value, counted missing
    assert doc["n_window"] == 1000


def test_export_has_capped_feature_series_and_the_drifted_share(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_cli.prometheus import exposition

    drifted(cli, tmp_path)
    cli("promote", "gnn", "v1.0.0")  # a champion is watched
    assert cli("drift", "check", "gnn", "v1.0.0").exit_code == 0

    def got() -> dict[tuple[str, str], float]:
        out = {}
        for family in text_string_to_metric_families(exposition(project).decode()):
            for s in family.samples:
                if s.name.startswith("model_feature"):
                    out[(s.name, s.labels.get("feature", ""))] = s.value
        return out

    assert got() == {
        ("model_feature_drift_score", "amount"): pytest.approx(
            project.drift_detector("gnn", "v1.0.0").get_drift_report().features["amount"]["score"]
        ),
        ("model_feature_drift_score", "channel"): pytest.approx(
            project.drift_detector("gnn", "v1.0.0").get_drift_report().features["channel"]["score"]
        ),
        ("model_feature_drift_alarm", "amount"): 1.0,
        ("model_feature_drift_alarm", "channel"): 0.0,
        ("model_feature_drifted_share", ""): 0.5,
    }
    project.set_setting("drift.max_feature_series", "1")  # the first by name
    assert sorted(k for k in got() if k[0] == "model_feature_drift_alarm") == [
        ("model_feature_drift_alarm", "amount")
    ]
    project.set_setting("drift.max_feature_series", "0")
    assert list(got()) == [("model_feature_drifted_share", "")]


def test_promtool_accepts_the_feature_series(cli: Cli, project: Project, tmp_path: Path) -> None:
    import subprocess

    from mlops_cli.prometheus import exposition

    from .test_prometheus import need

    promtool = need("promtool")
    drifted(cli, tmp_path)
    cli("promote", "gnn", "v1.0.0")
    cli("drift", "check", "gnn", "v1.0.0")
    data = exposition(project)
    assert b'model_feature_drift_alarm{feature="amount"' in data
    check = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
