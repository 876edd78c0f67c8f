"""Input features on the drift page: the library's figures, most drifted first, and a
feature's reference vs window distribution, in the dashboard and the HTML report."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_cli import ModelVersion, Project
from mlops_cli.ui import data

from .conftest import MLOPS_BIN
from .test_ui_browser import Dashboard, browser, open_page

__all__ = ["browser", "open_page"]


def featured(root: Path) -> Path:
    """gnn v1.0.0 with a reference and a window in which `amount` shifted and `channel` gained
    a category; `age` stays."""
    project = Project.init(root)
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m"))
    detector = project.drift_detector("gnn", "v1.0.0")

    def rows(n: int, seed: int, drift: bool) -> bytes:
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            channel = "kiosk" if drift and i % 4 == 0 else str(rng.choice(["web", "app"]))
            features = {
                "age": float(rng.normal(40, 10)),
                "amount": float(rng.normal(100 + (30 if drift else 0), 10)),
                "channel": channel,
            }
            out.append(
                orjson.dumps({"prediction": float(rng.normal()), "confidence": 0.8,
                              "features": features})
            )
        return b"\n".join(out) + b"\n"

    detector.set_reference(rows(1000, 1, False))
    detector.record_batch(rows(1000, 2, True))
    detector.check()
    return root


def test_the_drift_endpoint_orders_features_by_drift_and_holds_their_histograms(
    tmp_path: Path,
) -> None:
    root = featured(tmp_path / "p")
    doc = data.drift(root, "gnn", "v1.0.0")
    report = Project.open(root).drift_detector("gnn", "v1.0.0").get_drift_report()
    assert doc["report"]["drifted_features"] == report.drifted_features == ["amount", "channel"]
    amount, channel = report.features["amount"], report.features["channel"]
    first = "amount" if amount["score"] >= channel["score"] else "channel"
    assert doc["feature_order"] == [first, "channel" if first == "amount" else "amount", "age"]
    hist = doc["feature_histograms"]
    assert set(hist["channel"]["categories"]) == {"app", "web", "kiosk", "other"}
    assert hist["channel"]["window"][hist["channel"]["categories"].index("kiosk")] == 0.25
    assert sum(hist["amount"]["reference"]) == pytest.approx(1.0)
    orjson.dumps(doc)  # what the server sends: plain JSON types only


@pytest.mark.browser
def test_the_drift_page_shows_the_features_and_switches_the_histogram(
    open_page: Any, tmp_path: Path
) -> None:
    root = featured(tmp_path / "p")
    ui = Dashboard(root)
    try:
        page = open_page(ui.host)
        page.open(ui.url + "/drift/gnn/v1.0.0")
        order = data.drift(root, "gnn", "v1.0.0")["feature_order"]
        rows = page.page.locator("tr[data-feature]")
        assert [rows.nth(i).get_attribute("data-feature") for i in range(3)] == order
        assert page.page.locator("tr[data-feature=age]").get_attribute("data-alarm") == "false"
        assert "2 of 3 features drifted: amount, channel" in page.page.locator(
            "#features-summary"
        ).inner_text()
        chart = page.page.locator("#feature-chart")
        assert chart.get_attribute("data-feature") == order[0]
        page.page.select_option("#feature-select", "channel")
        assert chart.get_attribute("data-feature") == "channel"
        assert "kiosk" in chart.inner_text()  # a categorical feature as a table of shares
        page.page.select_option("#feature-select", "age")
        assert chart.locator("canvas").count() == 1 and page.blank_canvases() == []
        assert page.errors == [] and page.foreign == []
    finally:
        ui.close()


@pytest.mark.browser
def test_the_html_report_has_the_features_of_a_drift_page(
    open_page: Any, tmp_path: Path
) -> None:
    root = featured(tmp_path / "p")
    out = tmp_path / "report.html"
    subprocess.run([str(MLOPS_BIN), "-C", str(root), "report", "--html", str(out)], check=True,
                   capture_output=True)
    page = open_page(None)
    page.open(out.as_uri() + "#/drift/gnn/v1.0.0")
    assert page.page.locator("tr[data-feature]").count() == 3
    page.page.select_option("#feature-select", "channel")
    assert "kiosk" in page.page.locator("#feature-chart").inner_text()
    assert page.errors == []
