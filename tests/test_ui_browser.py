"""The dashboard and the HTML report in a real browser: Debian's chromium driven by Playwright.

Skipped (with the reason) when chromium or Playwright is missing, except under CI=true, where a
missing browser fails the run. Never `playwright install`: the browser is the system's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlops_cli import Project
from mlops_cli.ui import data

from .conftest import MLOPS_BIN
from .test_ui import DEMO_TEST, RUNNING_TEST, build_demo, cli_json, cli_text

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's picture, drawn anew only when asked (MLOPS_UPDATE_SCREENSHOT=1): a test run
# leaves the working tree as it was.
SCREENSHOT = Path(__file__).parent.parent / "docs" / "dashboard.png"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("uib") / "demo")


@pytest.fixture
def demo(demo_master: Path, tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(demo_master, root, symlinks=True)
    return root


class Dashboard:
    """`mlops ui` run through the real entry point on a free port."""

    def __init__(self, root: Path, *options: str) -> None:
        env = {**os.environ, "MLOPS_ACTOR": "tester"}
        self.proc = subprocess.Popen(
            [str(MLOPS_BIN), "-C", str(root), "ui", "--port", "0", *options],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert " at http://" in line, line
        self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        self.host = urlsplit(self.url).netloc

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


@pytest.fixture
def dashboard(demo: Path) -> Iterator[Any]:
    started: list[Dashboard] = []

    def start(*options: str) -> Dashboard:
        started.append(Dashboard(demo, *options))
        return started[-1]

    yield start
    for d in started:
        d.close()


class Page:
    """A browser page that counts (and blocks) every request to another host."""

    def __init__(self, browser: Any, allowed_host: str | None) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.requests = 0

        def check(route: Any) -> None:
            self.requests += 1
            url = urlsplit(route.request.url)
            local = url.scheme in ("data", "file", "about") or url.netloc == allowed_host
            if local and not (url.scheme == "file" and allowed_host is not None):
                route.continue_()
            else:
                self.foreign.append(route.request.url)
                route.abort()

        self.context.route("**/*", check)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def open(self, url: str) -> float:
        """Load the page; the seconds from navigation to load event plus every chart drawn."""
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=120_000)  # (hangs only)
        self.page.wait_for_load_state("load")
        ms = self.page.evaluate(
            """() => Math.max(window.__mlops.readyAt,
                 performance.getEntriesByType('navigation')[0].loadEventEnd)"""
        )
        return float(ms) / 1000

    def blank_canvases(self) -> list[str]:
        """Chart canvases with no drawn pixel (every pixel equal to the first)."""
        result: list[str] = self.page.evaluate(
            """() => Array.from(document.querySelectorAll('.chart canvas')).filter(c => {
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 for (let i = 4; i < d.length; i += 4)
                   if (d[i] !== d[0] || d[i+1] !== d[1] || d[i+2] !== d[2] || d[i+3] !== d[3])
                     return false;
                 return true;
               }).map(c => c.closest('.chart').id || c.closest('.chart').dataset.metric)"""
        )
        return result

    def chart_count(self) -> int:
        return int(self.page.evaluate("() => document.querySelectorAll('.chart canvas').length"))

    def unnamed_controls(self) -> list[str]:
        """Buttons, links and form fields with no accessible name."""
        result: list[str] = self.page.evaluate(
            """() => Array.from(document.querySelectorAll('a, button, select, input'))
                 .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim()
                                || (e.labels && e.labels.length)))
                 .map(e => e.outerHTML.slice(0, 80))"""
        )
        return result

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    pages: list[Page] = []

    def make(allowed_host: str | None) -> Page:
        pages.append(Page(browser, allowed_host))
        return pages[-1]

    yield make
    for p in pages:
        p.close()


def fmt_signed(x: float | None) -> str:
    return "unbounded" if x is None else f"{x:+.4f}"


def test_every_page_draws_its_charts_from_this_server_only(
    dashboard: Any, open_page: Any, demo: Path, tmp_path: Path
) -> None:
    """Every page loads, draws every chart and names every control, asking nothing of any
    other host. The time each takes is printed (make bench measures speed, not tests)."""
    ui = dashboard()
    page = open_page(ui.host)
    timings = {}
    for path in ("/", "/model/gnn", f"/test/{DEMO_TEST}", "/drift/gnn/v2.2.0", "/events"):
        timings[path] = page.open(ui.url + path)
        assert page.blank_canvases() == [], path
        assert page.unnamed_controls() == [], path
        if path.startswith("/test/"):
            update = os.environ.get("MLOPS_UPDATE_SCREENSHOT") == "1"
            page.page.screenshot(path=str(SCREENSHOT if update else tmp_path / "test.png"))
    print("\npage load + charts drawn (headless chromium):")
    for path, seconds in timings.items():
        print(f"  {path:28s} {seconds * 1000:7.0f} ms")
    assert page.requests > 0 and page.foreign == []
    assert page.errors == []


def test_overview_lists_every_model_type_with_its_champion(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard()
    page = open_page(ui.host)
    page.open(ui.url + "/")
    rows = page.page.locator("tr[data-model-type]")
    shown = {
        rows.nth(i).get_attribute("data-model-type"): rows.nth(i).locator(".champion").inner_text()
        for i in range(rows.count())
    }
    expected = {v["model_type"] for v in cli_json(demo, "list")}
    assert shown == {t: cli_text(demo, "champion", t) for t in sorted(expected)}
    ranker = page.page.locator("tr[data-model-type=ranker]")
    assert RUNNING_TEST in ranker.inner_text() and "continue" in ranker.inner_text()


def test_ab_page_shows_the_decision_and_intervals_of_ab_evaluate(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard()
    page = open_page(ui.host)
    for name in (DEMO_TEST, RUNNING_TEST):
        page.open(f"{ui.url}/test/{name}")
        cli = cli_json(demo, "ab", "evaluate", name)
        assert page.page.locator("#decision").inner_text() == cli["decision"]
        shown_reasons = page.page.locator("ul.reasons li").all_inner_texts()
        assert shown_reasons == cli["reasons"]
        for key in ("confidence_diff", "error_rate_diff", "inference_time_ms_diff"):
            row = page.page.locator(f"[data-metric={key}]")
            diff = cli["metrics"][key]
            low, high = diff["ci"]
            assert row.locator(".interval-text").inner_text() == (
                f"{fmt_signed(diff['estimate'])} [{fmt_signed(low)}, {fmt_signed(high)}]"
            )
            assert float(row.get_attribute("data-estimate")) == diff["estimate"]
            assert float(row.get_attribute("data-low")) == low
            assert float(row.get_attribute("data-high")) == high
        assert (
            page.page.locator("#srm").get_attribute("data-mismatch")
            == str(cli["metrics"]["srm"]["mismatch"]).lower()
        )
        assert page.blank_canvases() == []
        assert page.chart_count() == 4  # three intervals and the narrowing chart


def test_drift_page_latest_score_equals_drift_report(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard()
    page = open_page(ui.host)
    page.open(ui.url + "/drift/gnn/v2.2.0")
    report = cli_json(demo, "drift", "report", "gnn", "v2.2.0")
    score = page.page.locator("#drift-score")
    assert float(score.get_attribute("data-score")) == report["current_drift_score"]
    assert score.inner_text() == f"{report['current_drift_score']:.4f}"
    for name, value in report["components"].items():
        row = page.page.locator(f"tr[data-component={name}]")
        assert f"{value:.4f}" in row.inner_text()
    fired = [k for k, v in report["alarms"].items() if v["alarm"]]
    assert fired  # the demo's window drifts until an alert
    assert page.page.locator("#drift-alarms").inner_text() == "alarm: " + ", ".join(fired)
    assert page.chart_count() == 3 and page.blank_canvases() == []


def test_a_rollback_done_with_the_keyboard_changes_the_champion(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard("--allow-actions")
    page = open_page(ui.host)
    page.open(ui.url + "/model/gnn")
    events_before = len(Project.open(demo).registry.history("gnn"))
    # Tab from the top of the page until the rollback button has the focus.
    reached = []
    for _ in range(60):
        page.page.keyboard.press("Tab")
        label = page.page.evaluate("() => document.activeElement.textContent")
        reached.append(label)
        if label == "Roll back gnn":
            break
    assert reached[-1] == "Roll back gnn", reached
    page.page.keyboard.press("Enter")
    dialog = page.page.locator("dialog#confirm")
    assert "Make v2.1.0 champion again in place of v2.2.0" in dialog.inner_text()
    page.page.keyboard.type("rolled back from the browser test")
    page.page.keyboard.press("Tab")  # Cancel
    page.page.keyboard.press("Tab")  # Roll back gnn (confirm)
    assert page.page.evaluate("() => document.activeElement.id") == "confirm-ok"
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("#status:has-text('done')")
    assert page.page.locator("#champion").inner_text() == "v2.1.0"
    assert cli_text(demo, "champion", "gnn") == "v2.1.0"
    history = Project.open(demo).registry.history("gnn")
    assert len(history) == events_before + 1
    assert history[-1]["event"] == "rolled_back" and history[-1]["actor"] == "ui:tester"
    assert history[-1]["reason"] == "rolled back from the browser test"
    # Every other action on the page is reachable by Tab too.
    buttons = page.page.locator("main button").all_inner_texts()
    seen = set()
    page.page.locator("body").focus()
    for _ in range(80):
        page.page.keyboard.press("Tab")
        seen.add(page.page.evaluate("() => document.activeElement.textContent"))
    assert set(buttons) <= seen


def test_without_actions_the_page_offers_none_and_a_post_is_refused(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard()
    page = open_page(ui.host)
    page.open(ui.url + "/model/gnn")
    assert page.page.locator("main button").count() == 0
    status = page.page.evaluate(
        """async () => (await fetch('/api/action/rollback', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({model_type: 'gnn'})})).status"""
    )
    assert status == 403
    assert cli_text(demo, "champion", "gnn") == "v2.2.0"


def test_events_page_filters_by_model_type_and_kind(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard()
    page = open_page(ui.host)
    page.open(ui.url + "/events")
    page.page.select_option("#model_type", "ranker")
    page.page.select_option("#kind", "registered")
    page.page.get_by_role("button", name="Filter").press("Enter")
    page.page.wait_for_url("**/events?model_type=ranker&kind=registered")
    page.page.wait_for_selector("body[data-ready='1']")
    kinds = page.page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds == ["registered", "registered"]


def test_the_report_from_a_file_shows_the_same_decision(
    open_page: Any, demo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "report", "--html", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    page = open_page(None)
    load = page.open(out.as_uri() + f"#/test/{DEMO_TEST}")
    cli = cli_json(demo, "ab", "evaluate", DEMO_TEST)
    assert page.page.locator("#decision").inner_text() == cli["decision"]
    assert page.blank_canvases() == []
    page.page.evaluate("() => { location.hash = '#/drift/gnn/v2.2.0'; }")
    page.page.wait_for_selector("#drift-score")
    page.page.wait_for_selector("body[data-ready='1']")
    report = cli_json(demo, "drift", "report", "gnn", "v2.2.0")
    assert (
        float(page.page.locator("#drift-score").get_attribute("data-score"))
        == report["current_drift_score"]
    )
    assert page.blank_canvases() == []
    print(f"\nreport {out.stat().st_size / 1024:.0f} KB, A/B page drawn in {load * 1000:.0f} ms")
    # Only the file itself was loaded: nothing else, from anywhere.
    assert page.foreign == [] and page.requests == 1
    assert page.errors == []


def test_a_malformed_log_line_is_left_out_and_the_page_says_so(
    dashboard: Any, open_page: Any, demo: Path, tmp_path: Path
) -> None:
    """A view, live or from the report file: the page loads with the line left out and a
    note naming the log and the count under its title."""
    log = demo / "logs" / "ab" / f"{RUNNING_TEST}.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([lines[0], b"{not json\n", *lines[1:]]))
    expected = cli_json(demo, "ab", "evaluate", RUNNING_TEST, "--skip-invalid")
    ui = dashboard()
    page = open_page(ui.host)
    page.open(ui.url + f"/test/{RUNNING_TEST}")
    note = page.page.locator("#skipped-note").inner_text()
    assert f"1 in logs/ab/{RUNNING_TEST}.jsonl" in note
    assert page.page.locator("#decision").inner_text() == expected["decision"]
    page.open(ui.url + "/")
    assert f"1 in logs/ab/{RUNNING_TEST}.jsonl" in page.page.locator("#skipped-note").inner_text()
    page.open(ui.url + "/events")
    assert page.page.locator("#skipped-note").count() == 0  # a page that read no such log
    out = tmp_path / "report.html"
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "report", "--html", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    report = open_page(None)
    report.open(out.as_uri() + f"#/test/{RUNNING_TEST}")
    assert f"1 in logs/ab/{RUNNING_TEST}.jsonl" in report.page.locator("#skipped-note").inner_text()
    assert page.errors == [] and report.errors == []


def test_a_refused_action_shows_the_cli_error_in_the_dialog(
    dashboard: Any, open_page: Any, demo: Path
) -> None:
    ui = dashboard("--allow-actions")
    page = open_page(ui.host)
    page.open(f"{ui.url}/test/{RUNNING_TEST}")
    page.page.get_by_role("button", name="Finalize: promote 1.1.0").press("Enter")
    assert "make ranker 1.1.0 the champion" in page.page.locator("#confirm-text").inner_text()
    page.page.locator("#confirm-ok").press("Enter")
    alert = page.page.locator("dialog#confirm [role=alert]")
    alert.wait_for()
    page.page.wait_for_function(
        "() => document.querySelector('dialog#confirm [role=alert]').textContent !== ''"
    )
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "ab", "finalize", RUNNING_TEST, "promote"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    # the CLI's refusal, its advice worded for the page (which has no --force flag)
    assert "pass --force to promote anyway" in run.stderr
    assert alert.inner_text() == run.stderr.strip().replace(
        "pass --force to promote anyway", data.FINALIZE_ON_PAGE["pass force=True to promote anyway"]
    )
    assert cli_text(demo, "champion", "ranker") == "1.0.0"
    page.page.keyboard.press("Escape")
    assert page.page.locator("dialog#confirm").count() == 0


def test_the_audit_log_pages_to_older_events_and_back(
    dashboard: Any, open_page: Any, demo: Path, tmp_path: Path
) -> None:
    every = [
        (e["event"], e.get("version") or "\u2013")
        for e in reversed(Project.open(demo).registry.history())
    ]
    assert len(every) > 6
    ui = dashboard()
    page = open_page(ui.host)

    def shown() -> list[tuple[str, str]]:
        rows = page.page.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.kind, r.cells[3].textContent])"
        )
        return [(kind, version) for kind, version in rows]

    def follow(link: str) -> None:
        page.page.click(link)
        page.page.wait_for_selector("body[data-ready='1']", timeout=120_000)  # (hangs only)

    page.open(ui.url + "/events?limit=3")
    assert shown() == every[:3]
    assert page.page.locator("#newest-events").count() == 0
    follow("#older-events")
    assert "before=" in page.page.url and shown() == every[3:6]
    follow("#newest-events")
    assert shown() == every[:3]
    page.open(ui.url + "/model/gnn")
    assert page.page.locator("#model-events tbody tr").count() == min(
        data.MODEL_EVENTS, sum(1 for e in Project.open(demo).registry.history("gnn"))
    )
    out = tmp_path / "report.html"
    run = subprocess.run(
        [str(MLOPS_BIN), "-C", str(demo), "report", "--html", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    report = open_page(None)
    report.open(out.as_uri() + "#/events")
    count = report.page.locator("#event-count").inner_text()
    assert "keeps the newest 1000 events of the audit log" in count
    assert report.page.locator("#older-events").count() == 0
    assert page.errors == [] and report.errors == []
