"""What the pages show where a figure could mislead, in Debian's chromium (see
test_ui_browser.py for how the browser is found and driven)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import Project
from mlops_cli.ui import data

from .conftest import MLOPS_BIN
from .test_ui import DEMO_TEST, RUNNING_TEST
from .test_ui_browser import browser, dashboard, demo, demo_master, open_page
from .test_ui_truth import BUILD, HIDDEN, small_project

pytestmark = pytest.mark.browser
NONE = "\u2013"  # the pages' "no value" (an en dash)
__all__ = ["browser", "dashboard", "demo", "demo_master", "open_page"]  # (fixtures)


def write_report(root: Path, out: Path) -> None:
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(root), "report", "--html", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def visible_text(page: Any) -> str:
    return str(page.page.evaluate("() => document.body.innerText"))


def test_hidden_characters_are_shown_escaped_live_and_in_the_report(
    dashboard: Any, open_page: Any, demo: Path, tmp_path: Path
) -> None:
    hidden = "".join(chr(c) for c in HIDDEN)
    Project.open(demo).registry.promote_to_champion("gnn", "v2.1.0", reason=f"fix{hidden}end")
    shown = "fix" + "".join(f"\\u{c:04x}" for c in HIDDEN) + "end"
    ui = dashboard()
    page = open_page(ui.host)
    for path in ("/events", "/model/gnn"):
        page.open(ui.url + path)
        text = visible_text(page)
        assert shown in text, path
        assert not set(hidden) & set(text), path
    out = tmp_path / "report.html"
    write_report(demo, out)
    report = open_page(None)
    report.open(out.as_uri() + "#/events")
    assert shown in visible_text(report)
    assert not set(hidden) & set(out.read_text(encoding="utf-8"))
    assert page.errors == [] and report.errors == []


def test_the_report_has_the_drift_page_of_a_version_with_build_metadata(
    open_page: Any, tmp_path: Path
) -> None:
    from datetime import datetime, timezone

    root = tmp_path / "p"
    small_project(root, datetime.now(timezone.utc))
    out = tmp_path / "report.html"
    write_report(root, out)
    page = open_page(None)
    page.open(out.as_uri() + "#/model/m")
    link = page.page.locator(f"tr[data-version='{BUILD}'] a.badge")
    link.click()
    page.page.wait_for_selector("#drift-score")
    report = data.drift(root, "m", BUILD)["report"]
    score = page.page.locator("#drift-score").get_attribute("data-score")
    assert float(score) == report["current_drift_score"]
    assert page.errors == []


def users_per_arm(log: Path) -> dict[str, int]:
    """Distinct user ids per variant, counted from the log itself."""
    seen: dict[str, set[str]] = {"control": set(), "treatment": set()}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        seen[row["variant"]].add(row["user_id"])
    return {arm: len(users) for arm, users in seen.items()}


def test_the_split_check_shows_the_share_in_the_unit_it_tested(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard()
    page = open_page(ui.host)
    page.open(f"{ui.url}/test/{DEMO_TEST}")
    users = users_per_arm(demo / "logs" / "ab" / f"{DEMO_TEST}.jsonl")
    total = users["control"] + users["treatment"]
    srm = page.page.locator("#srm")
    assert srm.get_attribute("data-unit") == "users"
    text = srm.inner_text()
    assert f"observed {100 * users['treatment'] / total:.2f}% of {total} users" in text
    assert "test over users, p = " in text
    # records without user ids: the share of requests, and no test
    page.open(f"{ui.url}/test/{RUNNING_TEST}")
    text = page.page.locator("#srm").inner_text()
    assert "observed 50.00% of 60 requests" in text  # the fixture's 30 and 30
    assert "not tested" in text and "p = " not in text
    assert page.errors == []


def test_the_drift_page_labels_the_last_recorded_check_and_when_it_was_drawn(
    dashboard: Any, open_page: Any, tmp_path: Path
) -> None:
    from datetime import datetime, timedelta, timezone

    checked = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=40)
    root = tmp_path / "p"
    small_project(root, checked)
    from .test_ui_browser import Dashboard

    ui = Dashboard(root)
    try:
        page = open_page(ui.host)
        page.open(f"{ui.url}/drift/m/{BUILD.replace('+', '%2B')}")
        last = page.page.locator("#last-check")
        assert last.get_attribute("data-ts") == checked.isoformat().replace("+00:00", "Z")
        assert last.inner_text() == checked.strftime("%Y-%m-%d %H:%M:%S UTC") + " stale"
        card = page.page.locator("#last-check").locator("xpath=..").inner_text()
        assert "Last recorded check" in card and "when this page was drawn" in card
        drawn = page.page.locator("#computed-at").get_attribute("data-ts")
        assert drawn is not None and drawn > last.get_attribute("data-ts")  # ISO: sorts by time
    finally:
        ui.close()


def test_a_refused_finalize_offers_promote_anyway_with_a_reason(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard("--allow-actions")
    page = open_page(ui.host)
    page.open(f"{ui.url}/test/{RUNNING_TEST}")
    page.page.get_by_role("button", name="Finalize: promote 1.1.0").click()
    page.page.locator("#confirm-ok").click()
    alert = page.page.locator("dialog#confirm [role=alert]")
    page.page.locator("#confirm-force").wait_for()
    assert "--force" not in alert.inner_text()
    assert 'use "Promote anyway" below, with a reason' in alert.inner_text()
    page.page.locator("#confirm-force").click()  # no reason yet: refused on the page
    assert "needs a reason" in alert.inner_text()
    assert cli_champion(demo) == "1.0.0"
    page.page.locator("#confirm-reason").fill("checked the canary by hand")
    page.page.locator("#confirm-force").click()
    page.page.wait_for_selector("dialog#confirm", state="detached")
    assert cli_champion(demo) == "1.1.0"
    event = Project.open(demo).registry.history("ranker")[-1]
    assert (event["event"], event["forced"], event["actor"]) == ("ab_finalized", True, "ui:tester")
    assert event["reason"] == "checked the canary by hand"
    assert [e for e in page.errors if "status of 409" not in e] == []  # (the refusal's answer)


def cli_champion(root: Path) -> str:
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(root), "champion", "ranker"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_right_after_the_demo_the_overview_does_not_mark_drift_stale(
    open_page: Any, demo_master: Path
) -> None:
    """The project `mlops demo` leaves, as it is (a copy is another file, so another
    position: the check would no longer describe it)."""
    from .test_ui_browser import Dashboard

    ui = Dashboard(demo_master)
    try:
        page = open_page(ui.host)
        page.open(ui.url + "/")
        row = page.page.locator("tr[data-model-type=gnn]")
        assert "retrain" in row.inner_text() and "stale" not in row.inner_text()
    finally:
        ui.close()


def test_no_requests_show_a_dash_not_a_zero(dashboard: Any, open_page: Any, demo: Path) -> None:
    """ranker's versions served no request outside its test (no metrics recorded); the arm of
    a new test without requests has no mean and no difference."""
    from mlops_cli import ABTestConfig, ModelVersion

    project = Project.open(demo)
    for version in ("1.0.0", "1.1.0"):
        project.registry.register_version(
            ModelVersion(model_type="solo", version=version, model_path=f"solo-{version}.bin")
        )
    project.ab.start_test(ABTestConfig("solo_t", "solo", treatment_version="1.1.0"))
    for _ in range(30):
        project.ab.record_result("solo_t", "control", 10.0, 0.87, False)
    ui = dashboard()
    page = open_page(ui.host)
    page.open(ui.url + "/model/ranker")
    cells = page.page.locator("tr[data-version='1.0.0'] td.num").all_inner_texts()
    # traffic, bytes, requests, error rate, avg confidence, avg ms
    assert cells[-4:] == ["0", NONE, NONE, NONE]
    page.open(ui.url + "/test/solo_t")
    arm = page.page.locator("tr[data-arm=treatment] td.num").all_inner_texts()
    assert arm == ["0", NONE, NONE, NONE]
    row = page.page.locator("[data-metric=confidence_diff]")
    assert row.locator(".interval-text").inner_text() == NONE + " (an arm has no requests)"
    assert "-0.87" not in visible_text(page)
    assert page.blank_canvases() == []
    assert page.errors == []
