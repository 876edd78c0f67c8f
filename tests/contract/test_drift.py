"""Drift through the detector, on each store: a reference and production samples as a service
and a pipeline send them, checks scored against hand calculations and scipy, the check history
and its 7-day average, hooks that fire once per entry into a level."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from mlops_cli import ModelVersion, NotFoundError, Project, StateError, ValidationError
from mlops_cli.drift import DriftDetector

from .conftest import STAMP, T0, Clock, dump, reopen, samples_jsonl

WEIGHTS = (0.4, 0.3, 0.3)  # statistical, performance, distribution (the defaults)


def by_hand(ref: np.ndarray, win: np.ndarray) -> dict[str, float]:
    """DESIGN section 6's components and score, from the arrays (KS from scipy)."""
    ks = scipy.stats.ks_2samp(ref[:, 0], win[:, 0])
    conf_r, conf_p = ref[:, 1].mean(), win[:, 1].mean()
    performance = min(max((conf_r - conf_p) / conf_r / 0.2, 0.0), 1.0)
    sd_r, sd_p = ref[:, 0].std(ddof=1), win[:, 0].std(ddof=1)
    shift = abs(win[:, 0].mean() - ref[:, 0].mean()) / sd_r
    distribution = min(max(shift, abs(math.log(sd_p / sd_r)) / math.log(2)), 1.0)
    score = WEIGHTS[0] * ks.statistic + WEIGHTS[1] * performance + WEIGHTS[2] * distribution
    return {
        "statistical": float(ks.statistic),
        "performance": float(performance),
        "distribution": float(distribution),
        "score": float(score),
        "ks_pvalue": float(ks.pvalue),
    }


def level(score: float) -> str:
    return "ok" if score <= 0.1 else "monitor" if score <= 0.3 else "retrain" if score <= 0.5 \
        else "critical"


@pytest.fixture
def detector(project: Project) -> DriftDetector:
    return project.drift_detector("gnn", "1.0.0")


def drifting(detector: DriftDetector) -> DriftDetector:
    """A reference and a window shifted by two standard deviations with confidence fallen:
    critical."""
    detector.set_reference(samples_jsonl(1000, seed=21)[0])
    detector.record_batch(samples_jsonl(1000, seed=22, mean=2.0, conf=0.3)[0])
    return detector


def test_a_check_scores_the_window_from_the_tail_as_by_hand(
    project: Project, detector: DriftDetector
) -> None:
    ref_data, ref = samples_jsonl(3000, seed=1)
    detector.set_reference(ref_data)
    detector.record_batch(samples_jsonl(5000, seed=2, mean=3.0)[0])  # older: out of the window
    new_data, new = samples_jsonl(1500, seed=3, mean=0.3, conf=0.45)
    detector.record_batch(new_data)
    for i in range(500):  # and single samples, as a service sends them
        detector.add_production_sample(float(i) / 500, 0.5)
    single = np.column_stack([np.arange(500) / 500, np.full(500, 0.5)])
    window = np.vstack([new, single])
    project.set_setting("drift.window_size", "2000")
    report = detector.check()
    expected = by_hand(ref, window)
    assert (report.n_reference, report.n_window, report.status) == (3000, 2000, "active")
    for key in ("statistical", "performance", "distribution"):
        assert report.components[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12)
    assert report.current_drift_score == pytest.approx(expected["score"], rel=1e-9)
    assert report.ks_pvalue == pytest.approx(expected["ks_pvalue"], rel=1e-6)
    assert report.level == level(expected["score"])
    narrow = detector.check(window=500)  # the last 500: the single samples alone
    assert narrow.current_drift_score == pytest.approx(by_hand(ref, single)["score"], rel=1e-9)


def test_the_window_is_read_by_another_store_after_close(project: Project) -> None:
    writer = reopen(project).drift_detector("gnn", "1.0.0")
    for i in range(300):
        writer.add_production_sample(i / 300, 0.9)
    writer.store.close()  # a service that exits: its samples are all stored
    window = project.store.samples("drift/gnn/1.0.0/production", last=100)
    assert np.array_equal(window.prediction, np.arange(200, 300) / 300)


def test_insufficient_data_is_recorded_by_a_check_and_not_by_a_report(
    detector: DriftDetector,
) -> None:
    detector.set_reference(samples_jsonl(500, seed=4)[0])
    detector.record_batch(samples_jsonl(99, seed=5)[0])  # min_samples is 100
    report = detector.get_drift_report()
    assert (report.status, report.level, report.current_drift_score) == (
        "insufficient_data", "insufficient_data", 0.0,
    )
    assert report.alert_triggered is False and detector.history() == []
    score = detector.detect_drift()
    assert type(score) is float and score == 0.0
    assert [r["status"] for r in detector.history()] == ["insufficient_data"]


def test_a_report_is_current_and_records_nothing(
    project: Project, detector: DriftDetector, tmp_path: Path
) -> None:
    fired = tmp_path / "fired"
    project.set_setting("drift.hooks.monitor", f"touch {fired}")
    project.set_setting("drift.window_size", "1000")
    ref_data, ref = samples_jsonl(1000, seed=6)
    detector.set_reference(ref_data)
    detector.record_batch(samples_jsonl(1000, seed=7)[0])
    first = detector.get_drift_report()
    new_data, new = samples_jsonl(1000, seed=8, mean=2.0)
    detector.record_batch(new_data)
    before = dump(project)
    second = detector.get_drift_report()
    assert second.current_drift_score == pytest.approx(by_hand(ref, new)["score"], rel=1e-9)
    assert second.current_drift_score > first.current_drift_score
    assert second.hooks == [] and not fired.exists()
    assert dump(project) == before


def test_the_history_and_the_7_day_average(project: Project, clock: Clock) -> None:
    project.set_setting("drift.window_size", "500")
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(1000, seed=9)[0])
    scores = []
    for day in range(10):
        clock.now = T0 + timedelta(days=day)
        detector.record_batch(samples_jsonl(500, seed=10 + day, mean=day * 0.2)[0])
        scores.append(detector.check().current_drift_score)
    # day 9: the checks of days 2..9 are within 7 days (day 2's is exactly 7 days old)
    for view in (detector, reopen(project, clock).drift_detector("gnn", "1.0.0")):
        assert view.get_drift_report().avg_drift_7d == pytest.approx(np.mean(scores[2:]))
        assert [r["score"] for r in view.history(days=7)] == pytest.approx(scores[2:])
        assert len(view.history()) == 10
        assert view.last_check()["score"] == pytest.approx(scores[-1])  # type: ignore[index]


def test_the_reference_cap_refuses_a_batch_whole_and_ignores_samples_past_it(
    project: Project, detector: DriftDetector
) -> None:
    project.set_setting("drift.reference_size", "150")
    reference = "drift/gnn/1.0.0/reference"
    detector.set_reference(samples_jsonl(100, seed=11)[0])
    before = dump(project)
    with pytest.raises(ValidationError, match=r"holds 100 of 150 samples.*adding 60"):
        detector.set_reference(samples_jsonl(60, seed=12)[0])
    assert dump(project) == before
    for _ in range(50):
        detector.add_reference_sample(0.5, 0.9)
    with pytest.warns(UserWarning, match="full") as caught:
        for _ in range(30):
            detector.add_reference_sample(0.7, 0.9)
    assert len(caught) == 1 and project.store.count(reference) == 150
    assert detector.set_reference(samples_jsonl(120, seed=13)[0], replace=True) == 120
    detector.add_reference_sample(0.25, 0.9)
    assert project.store.count(reference) == 121
    assert project.store.samples(reference, last=1).prediction.tolist() == [0.25]


def test_bad_samples_change_nothing(project: Project, detector: DriftDetector) -> None:
    detector.record_batch(samples_jsonl(10, seed=14)[0])
    before = dump(project)
    for pred, conf, words in (
        (math.nan, 0.5, "finite"),
        (math.inf, 0.5, "finite"),
        (0.1, 2.0, "confidence"),
        (0.1, -0.5, "confidence"),
    ):
        with pytest.raises(ValidationError, match=words):
            detector.add_production_sample(pred, conf)
        with pytest.raises(ValidationError, match=words):
            detector.add_reference_sample(pred, conf)
    with pytest.raises(NotFoundError):
        project.drift_detector("gnn", "9.9.9").add_production_sample(0.1, 0.5)
    bad = samples_jsonl(50, seed=15)[0] + b'{"prediction": 1.0, "confidence": 7}\n'
    with pytest.raises(ValidationError, match="line 51"):
        detector.record_batch(bad)
    with pytest.raises(ValidationError, match="line 51"):
        detector.set_reference(bad)
    with pytest.raises(ValidationError, match="between 1 and"):
        detector.check(window=0)
    assert dump(project) == before


def test_hooks_fire_once_per_entry_into_a_level(
    project: Project, clock: Clock, tmp_path: Path
) -> None:
    log = tmp_path / "fired.txt"
    project.set_setting("drift.window_size", "1000")
    for name in ("monitor", "retrain", "critical"):
        project.set_setting(f"drift.hooks.{name}", f"echo {name} >> {log}")
    project.set_setting("drift.hook_cooldown_s", "3600")
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(1000, seed=30)[0])
    seed = iter(range(31, 100))

    def check_at(mean: float, conf: float = 0.5) -> list[str]:
        detector.record_batch(samples_jsonl(1000, seed=next(seed), mean=mean, conf=conf)[0])
        clock.now += timedelta(minutes=10)
        return [h.level for h in detector.check().hooks]

    assert check_at(2.0, 0.3) == ["monitor", "retrain", "critical"]  # entered all three
    assert check_at(2.0, 0.3) == []  # stays: nothing
    assert detector.check().hooks == []  # no new samples: nothing
    assert check_at(0.0) == []  # ok: left every level
    assert check_at(2.0, 0.3) == ["monitor", "retrain", "critical"]  # re-entered
    assert log.read_text().split() == ["monitor", "retrain", "critical"] * 2
    assert len(detector.history()) == 5


def test_entering_a_level_is_audited_once_per_entry_and_sent_out(
    project: Project, clock: Clock
) -> None:
    from ..webhook_receiver import receiver

    project.set_setting("drift.window_size", "1000")
    detector = project.drift_detector("gnn", "1.0.0")
    detector.set_reference(samples_jsonl(1000, seed=30)[0])
    seed = iter(range(31, 100))

    def check_at(mean: float, conf: float = 0.5) -> None:
        detector.record_batch(samples_jsonl(1000, seed=next(seed), mean=mean, conf=conf)[0])
        clock.now += timedelta(minutes=10)
        detector.check()

    def entries() -> list[tuple[str, list[str]]]:
        return [
            (e["level"], e["entered"])
            for e in project.registry.history("gnn")
            if e.kind == "drift_level_entered"
        ]

    with receiver() as got:
        project.webhooks.add(got.url, "drift_level_entered")
        check_at(2.0, 0.3)
        assert entries() == [("critical", ["monitor", "retrain", "critical"])]
        check_at(2.0, 0.3)  # stays: nothing
        reopen(project).drift_detector("gnn", "1.0.0").check()  # another checker: nothing
        check_at(0.0)  # ok: left every level, which is not an entry
        assert len(entries()) == 1
        check_at(2.0, 0.3)  # re-entered
        assert len(entries()) == 2
    assert [(r.doc["event"], r.doc["seq"], r.doc["data"]["level"]) for r in got.accepted] == [
        ("drift_level_entered", 1, "critical"), ("drift_level_entered", 2, "critical")
    ]


def test_with_no_cooldown_a_hook_fires_at_every_check_in_its_level(
    project: Project, tmp_path: Path
) -> None:
    log = tmp_path / "fired.txt"
    project.set_setting("drift.hooks.critical", f"echo critical >> {log}")
    project.set_setting("drift.hook_cooldown_s", "0")
    detector = drifting(project.drift_detector("gnn", "1.0.0"))
    for _ in range(3):
        assert [h.level for h in detector.check().hooks] == ["critical"]
    assert log.read_text().split() == ["critical"] * 3


def test_a_failing_hook_is_reported_and_the_check_recorded(
    project: Project, detector: DriftDetector
) -> None:
    project.set_setting("drift.hooks.retrain", "echo broken >&2; exit 4")
    report = drifting(detector).check()
    assert [h.to_dict() for h in report.hooks] == [
        {"level": "retrain", "ok": False, "exit_code": 4, "timed_out": False, "output": "broken\n"}
    ]
    assert [r["level"] for r in reopen(project).drift_detector("gnn", "1.0.0").history()] == [
        "critical"
    ]


CHECKER = """
import sys
from mlops_cli import Project
detector = Project.open(sys.argv[1]).drift_detector("gnn", "1.0.0")
for _ in range(5):
    detector.check()
"""


def test_a_hook_fires_once_across_concurrent_checkers(
    project: Project, detector: DriftDetector, tmp_path: Path
) -> None:
    log = tmp_path / "fired.txt"
    project.set_setting("drift.hooks.critical", f"echo $$ >> {log}")
    drifting(detector)
    procs = [
        subprocess.Popen([sys.executable, "-c", CHECKER, project.store.location])
        for _ in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    history = detector.history()
    assert len(history) == 20 and {r["level"] for r in history} == {"critical"}
    assert len(log.read_text().split()) == 1


def test_a_record_that_is_not_a_check_is_refused_or_skipped(
    project: Project, detector: DriftDetector, tmp_path: Path
) -> None:
    drifting(detector).check()
    marker = tmp_path / "hook-ran"
    project.set_setting("drift.hooks.monitor", f"touch {marker}")
    # not a check: a time, but no status and no score
    project.store.append(detector.checks, {"ts": STAMP, "x": 1})
    before = dump(project)
    for call in (detector.check, detector.get_drift_report, lambda: detector.history(7)):
        with pytest.raises(StateError, match="--skip-invalid"):
            call()
    assert dump(project) == before and not marker.exists()
    report = detector.check(skip_invalid=True)
    assert report.status == "active" and len(detector.history(skip_invalid=True)) == 2
    assert report.avg_drift_7d == pytest.approx(report.current_drift_score, rel=1e-9)


def test_check_all_covers_the_versions_that_serve_or_are_monitored(project: Project) -> None:
    for version in ("1.2.0", "1.3.0"):
        project.registry.register_version(ModelVersion("gnn", version, model_path="m.pt"))
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        drifting(project.drift_detector("gnn", version))
    assert [(r.model_version, r.level) for r in project.drift.check_all()] == [
        ("1.0.0", "critical")
    ]
    project.drift.set_monitored("gnn", "1.2.0")
    project.registry.deprecate("gnn", "1.3.0")
    checked = [r.model_version for r in reopen(project).drift.check_all()]
    assert checked == ["1.0.0", "1.2.0"]
    last = project.registry.history(limit=3)
    assert [e.kind for e in last] == ["monitored", "deprecated", "drift_level_entered"]
    assert last[-1]["version"] == "1.2.0"  # its first check; 1.0.0 was critical already
