"""What the dashboard's documents say, where a figure could mislead: hidden characters, keys of
versions with build metadata, the drift page's two times, refusals worded for the page, and
the demo's last check."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from mlops_cli import Project
from mlops_cli.errors import ConflictError, ValidationError
from mlops_cli.registry import ModelVersion
from mlops_cli.ui import data

from .test_ui import DEMO_TEST, RUNNING_TEST, build_demo

BUILD = "1.1.0+build.7"
# Every bidirectional control and zero-width character the dashboard must show escaped.
HIDDEN = [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def samples(n: int, shift: float = 0.0) -> bytes:
    return b"".join(
        orjson.dumps({"prediction": shift + (i % 10) / 10, "confidence": 0.5 + (i % 7) / 20})
        + b"\n"
        for i in range(n)
    )


def small_project(root: Path, clock: datetime) -> Project:
    """`m`: 1.0.0 (champion) and 1.1.0+build.7 with a drift reference and one check at
    `clock`."""
    project = Project.init(root, clock=lambda: clock)
    for version in ("1.0.0", BUILD):
        project.registry.register_version(
            ModelVersion(model_type="m", version=version, model_path=f"m-{version}.bin")
        )
    detector = project.drift_detector("m", BUILD)
    detector.set_reference(samples(200))
    detector.record_batch(samples(200, 0.05))
    detector.check()
    return project


@pytest.fixture
def small(tmp_path: Path) -> Path:
    small_project(tmp_path / "p", datetime.now(timezone.utc))
    return tmp_path / "p"


@pytest.fixture(scope="module")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("truth") / "demo")


@pytest.fixture
def demo(demo_master: Path, tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(demo_master, root, symlinks=True)
    return root


# -- hidden characters -----------------------------------------------------------------------


@pytest.mark.parametrize("code", HIDDEN, ids=lambda c: f"U+{c:04X}")
def test_a_reason_with_a_hidden_character_is_shown_escaped(small: Path, code: int) -> None:
    Project.open(small).registry.promote_to_champion("m", BUILD, reason=f"ok{chr(code)}done")
    shown = f"ok\\u{code:04x}done"  # as `mlops history` prints it
    events = data.events(small)["events"]
    assert events[0]["reason"] == shown
    timeline = data.model(small, "m")["timeline"]
    assert timeline[-1]["why"] == f"promoted ({shown})"
    report = data.bundle(small)
    assert report["/events"]["events"][0]["reason"] == shown
    assert chr(code) not in orjson.dumps(report).decode()


def test_printable_text_and_names_pass_unchanged(small: Path) -> None:
    Project.open(small).registry.promote_to_champion("m", BUILD, reason="Zürich 検証 ✓")
    assert data.events(small)["events"][0]["reason"] == "Zürich 検証 ✓"
    assert [v["version"] for v in data.model(small, "m")["versions"]] == ["1.0.0", BUILD]


# -- build metadata --------------------------------------------------------------------------


def test_the_report_keys_a_drift_page_as_the_page_asks_for_it(small: Path) -> None:
    docs = data.bundle(small)
    # encodeURIComponent("1.1.0+build.7") is "1.1.0%2Bbuild.7"
    assert "/drift/m/1.1.0%2Bbuild.7" in docs
    assert docs["/drift/m/1.1.0%2Bbuild.7"]["model_version"] == BUILD
    assert "/drift/m/1.1.0+build.7" not in docs
    assert data.page_path("test", "a b/c") == "/test/a%20b%2Fc"
    assert data.page_path("model", "x-_.!~*'()") == "/model/x-_.!~*'()"


# -- the drift page's times ------------------------------------------------------------------


def test_the_drift_page_has_the_last_recorded_check_beside_the_time_it_was_drawn(
    tmp_path: Path,
) -> None:
    checked = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=40)
    small_project(tmp_path / "p", checked)
    doc = data.drift(tmp_path / "p", "m", BUILD)
    last = doc["last_check"]
    assert last["checked_at"] == checked.isoformat().replace("+00:00", "Z")
    assert last["stale"] is True  # 40 h > 36 h
    assert doc["stale_after_s"] == 36 * 3600
    # the report's figures are computed when the page is drawn, not recorded
    drawn = datetime.fromisoformat(doc["report"]["checked_at"].replace("Z", "+00:00"))
    assert drawn >= checked + timedelta(hours=40)
    assert [h["ts"] for h in doc["history"]] == [last["checked_at"]]


def test_a_recent_last_check_is_not_stale(small: Path) -> None:
    last = data.drift(small, "m", BUILD)["last_check"]
    assert last["stale"] is False and last["level"] is not None


# -- refusals worded for the page -------------------------------------------------------------


def test_a_refused_finalize_promote_names_the_page_equivalent_not_a_flag(demo: Path) -> None:
    with pytest.raises(ConflictError) as refused:
        data.act(demo, "finalize", {"test": RUNNING_TEST, "decision": "promote"})
    said = refused.value.for_cli()
    assert "--force" not in said and "force=True" not in said
    assert 'use "Promote anyway" below, with a reason' in said
    assert Project.open(demo).registry.require_champion("ranker").version == "1.0.0"


def test_promote_anyway_needs_a_reason_and_is_audited_as_forced(demo: Path) -> None:
    args = {"test": RUNNING_TEST, "decision": "promote", "force": True}
    for reason in (None, "", "   "):
        with pytest.raises(ValidationError, match="needs a reason"):
            data.act(demo, "finalize", {**args, "reason": reason})
    with pytest.raises(ValidationError, match="force must be true or false"):
        data.act(demo, "finalize", {**args, "force": "yes", "reason": "x"})
    assert Project.open(demo).ab.get_test(RUNNING_TEST)["status"] == "running"
    done = data.act(demo, "finalize", {**args, "reason": "canary looked fine by hand"})
    assert done["result"]["status"] == "promoted"
    project = Project.open(demo)
    assert project.registry.require_champion("ranker").version == "1.1.0"
    event = project.registry.history("ranker")[-1]
    assert event["event"] == "ab_finalized" and event["forced"] is True
    assert event["reason"] == "canary looked fine by hand"


def test_a_promote_refused_by_a_running_test_points_at_the_test_page(demo: Path) -> None:
    with pytest.raises(ConflictError) as refused:
        data.act(demo, "promote", {"model_type": "ranker", "version": "1.1.0"})
    said = refused.value.for_cli()
    assert "force" not in said
    assert f"A/B test {RUNNING_TEST} is running on ranker" in said
    assert "Finalize buttons on the test's page" in said


# -- the demo --------------------------------------------------------------------------------


def test_right_after_the_demo_its_last_drift_check_is_not_stale(demo_master: Path) -> None:
    gnn = next(m for m in data.overview(demo_master)["model_types"] if m["model_type"] == "gnn")
    assert gnn["drift"]["level"] == "retrain" and gnn["drift"]["stale"] is False
    test = data.ab_test(demo_master, DEMO_TEST)["test"]
    assert test["status"] == "promoted"
