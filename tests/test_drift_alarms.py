"""Drift component alarms: each rule's boundary, the effects and p-values against scipy, and
what an alarm does to a check (level, alert, JSON, export)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import scipy.stats

from mlops_cli import ModelVersion, Project, ValidationError
from mlops_cli.drift import (
    ALARM_FLOORS,
    Components,
    alarms,
    components,
    fired,
    level_with_alarms,
)
from mlops_cli.ks import ecdf_distances, merge_sorted

from .conftest import Run

ALPHA = 0.001
QUIET = Components(
    statistical=0.0,
    performance=0.0,
    distribution=0.0,
    ks_pvalue=1.0,
    wasserstein=0.0,
    confidence_fall=0.0,
    confidence_pvalue=1.0,
    spread_log_ratio=0.0,
    spread_pvalue=1.0,
)
FIELDS = {  # component: (effect field, p-value field)
    "predictions": ("wasserstein", "ks_pvalue"),
    "confidence": ("confidence_fall", "confidence_pvalue"),
    "spread": ("spread_log_ratio", "spread_pvalue"),
}


def test_floors_are_the_documented_ones() -> None:
    assert {"predictions": 0.1, "confidence": 0.03, "spread": math.log(1.25)} == ALARM_FLOORS


@pytest.mark.parametrize("name", list(FIELDS))
def test_effect_at_the_floor_fires_just_below_does_not(name: str) -> None:
    effect_field, p_field = FIELDS[name]
    floor = ALARM_FLOORS[name]
    at = replace(QUIET, **{effect_field: floor, p_field: ALPHA / 2})
    below = replace(QUIET, **{effect_field: math.nextafter(floor, 0), p_field: ALPHA / 2})
    assert alarms(at, ALPHA)[name]["alarm"] is True
    assert alarms(below, ALPHA)[name]["alarm"] is False
    assert fired(alarms(at, ALPHA)) == [name]


@pytest.mark.parametrize("name", list(FIELDS))
def test_p_value_at_alpha_does_not_fire_just_below_does(name: str) -> None:
    effect_field, p_field = FIELDS[name]
    big = ALARM_FLOORS[name] * 3
    at = replace(QUIET, **{effect_field: big, p_field: ALPHA})
    below = replace(QUIET, **{effect_field: big, p_field: math.nextafter(ALPHA, 0)})
    assert alarms(at, ALPHA)[name]["alarm"] is False
    assert alarms(below, ALPHA)[name]["alarm"] is True


def test_a_confidence_rise_never_fires() -> None:
    rise = replace(QUIET, confidence_fall=-0.5, confidence_pvalue=0.0)
    assert fired(alarms(rise, ALPHA)) == []


def test_pinned_keys_with_and_without_figures() -> None:
    for figures in (alarms(QUIET, ALPHA), alarms(None, ALPHA)):
        assert set(figures) == {"predictions", "confidence", "spread"}
        for name, entry in figures.items():
            assert set(entry) == {"alarm", "effect", "p_value", "floor"}
            assert entry["floor"] == ALARM_FLOORS[name]
    assert alarms(None, ALPHA)["spread"] == {
        "alarm": False,
        "effect": None,
        "p_value": None,
        "floor": math.log(1.25),
    }


@pytest.mark.parametrize(
    ("level", "raised"),
    [("ok", "retrain"), ("monitor", "retrain"), ("retrain", "retrain"), ("critical", "critical")],
)
def test_an_alarm_raises_the_level_to_at_least_retrain(level: str, raised: str) -> None:
    fires = alarms(replace(QUIET, confidence_fall=0.05, confidence_pvalue=1e-9), ALPHA)
    assert level_with_alarms(level, fires) == raised
    assert level_with_alarms(level, alarms(QUIET, ALPHA)) == level


def test_effects_and_p_values_against_scipy() -> None:
    rng = np.random.default_rng(5)
    ref, win = rng.lognormal(0, 1, 3000), rng.lognormal(0.1, 1.2, 700)
    ref_conf, win_conf = rng.beta(8, 2, 3000), rng.beta(7.8, 2.2, 700)
    c = components(ref, ref_conf, win, win_conf)
    w1 = scipy.stats.wasserstein_distance(ref, win) / np.std(ref, ddof=1)
    assert c.wasserstein == pytest.approx(w1, rel=1e-9)
    fall = (ref_conf.mean() - win_conf.mean()) / ref_conf.mean()
    assert c.confidence_fall == pytest.approx(fall, rel=1e-12)
    # Welch's statistic is the z of the large-sample test; one-sided for a fall.
    t = scipy.stats.ttest_ind(ref_conf, win_conf, equal_var=False).statistic
    assert c.confidence_pvalue == pytest.approx(scipy.stats.norm.sf(t), rel=1e-9)
    ratio = abs(math.log(np.std(win, ddof=1) / np.std(ref, ddof=1)))
    assert c.spread_log_ratio == pytest.approx(ratio, rel=1e-12)
    centre = np.median(np.concatenate((ref, win)))
    dev_r, dev_w = np.abs(ref - centre), np.abs(win - centre)
    want = scipy.stats.mannwhitneyu(dev_r, dev_w, use_continuity=False, method="asymptotic")
    assert c.spread_pvalue == pytest.approx(want.pvalue, rel=1e-9)


def test_spread_p_value_with_ties_against_scipy() -> None:
    rng = np.random.default_rng(8)
    ref, win = np.round(rng.normal(0, 1, 1001), 1), np.round(rng.normal(0, 1.3, 400), 1)
    c = components(ref, np.ones(1001), win, np.ones(400))
    centre = np.median(np.concatenate((ref, win)))
    dev_r, dev_w = np.abs(ref - centre), np.abs(win - centre)
    want = scipy.stats.mannwhitneyu(dev_r, dev_w, use_continuity=False, method="asymptotic")
    assert c.spread_pvalue == pytest.approx(want.pvalue, rel=1e-9)


@pytest.mark.parametrize(("m", "n"), [(1, 2), (5, 3), (1000, 333), (2000, 2000)])
def test_ecdf_distances_match_scipy(m: int, n: int) -> None:
    rng = np.random.default_rng(m + n)
    a, b = np.sort(np.round(rng.normal(size=m), 1)), np.sort(rng.normal(0.2, 1, n))
    d, area = ecdf_distances(a, b)
    assert d == float(scipy.stats.ks_2samp(a, b, method="asymp").statistic)
    assert area == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("m", "n"), [(1, 1), (3, 700), (700, 3), (1000, 1000), (5000, 40)])
def test_ecdf_distances_with_ties_on_both_sides_match_scipy(m: int, n: int) -> None:
    """D is read only where a run of equal values ends, whichever sample is the smaller."""
    rng = np.random.default_rng(m * 7 + n)
    a, b = np.sort(rng.integers(-4, 5, m)).astype(float), np.sort(rng.integers(-3, 6, n) * 1.0)
    d, area = ecdf_distances(a, b)
    assert d == float(scipy.stats.ks_2samp(a, b, method="asymp").statistic)
    assert area == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("m", "n"), [(1, 9), (9, 1), (400, 50), (50, 400)])
def test_merge_sorted_is_a_stable_sort_of_the_two(m: int, n: int) -> None:
    rng = np.random.default_rng(m + 3 * n)
    a, b = np.sort(rng.integers(0, 20, m) / 4), np.sort(rng.integers(0, 20, n) / 4)
    merged, from_a = merge_sorted(a, b)
    order = np.argsort(np.concatenate((a, b)), kind="stable")
    assert merged.tolist() == np.concatenate((a, b))[order].tolist()
    assert from_a.tolist() == (order < m).tolist()


def lines(pred: np.ndarray, conf: np.ndarray) -> bytes:
    return "".join(
        f'{{"prediction": {p!r}, "confidence": {c!r}}}\n'
        for p, c in zip(pred.tolist(), conf.tolist(), strict=True)
    ).encode()


def collapsed(project: Project) -> None:
    """A version whose window keeps the predictions and loses 10% of its confidence."""
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m"))
    detector = project.drift_detector("gnn", "v1.0.0")
    rng = np.random.default_rng(3)
    detector.set_reference(lines(rng.normal(size=2000), rng.beta(8, 2, 2000)))
    detector.record_batch(lines(rng.normal(size=2000), rng.beta(8, 2, 2000) * 0.9))


def test_check_names_the_alarm_and_gates_on_it(project: Project, cli: Callable[..., Run]) -> None:
    collapsed(project)
    out = cli("drift", "check", "gnn", "v1.0.0", "--fail-on", "retrain")
    assert out.exit_code == 3
    assert "ALERT" in out.stdout and "confidence alarm: effect 0.1" in out.stdout
    assert "predictions alarm" not in out.stdout and "spread alarm" not in out.stdout
    doc = cli("drift", "report", "gnn", "v1.0.0", "--json").json()
    assert [k for k, v in doc["alarms"].items() if v["alarm"]] == ["confidence"]


def test_a_confidence_collapse_alone_alerts(project: Project) -> None:
    """Predictions unchanged and confidence 10% lower: the score stays below 0.3 (P is at most
    0.3 of it), yet the confidence alarm raises the level and sets the alert."""
    collapsed(project)
    detector = project.drift_detector("gnn", "v1.0.0")
    report = detector.check()
    assert report.current_drift_score <= 0.3
    assert report.level == "retrain" and report.alert_triggered
    assert fired(report.alarms) == ["confidence"]
    # the advice says the alarm raised it: the score is not above the retrain threshold
    assert "a drift alarm fired" in report.recommendation
    assert "drift is above the retrain threshold" not in report.recommendation
    doc = report.to_dict()
    assert doc["alarms"]["confidence"]["alarm"] is True
    assert doc["alarms"]["confidence"]["effect"] == pytest.approx(0.1, abs=0.01)
    assert detector.last_check()["alarms"] == doc["alarms"]  # recorded as reported
    # A stricter alpha than the p-value silences it; the score's level comes back.
    project.set_setting("drift.alarm_alpha", str(doc["alarms"]["confidence"]["p_value"]))
    quiet = detector.get_drift_report()
    assert not quiet.alert_triggered and fired(quiet.alarms) == []


@pytest.mark.parametrize("value", ["0", "0.6", "-0.1", "x"])
def test_alarm_alpha_is_checked(project: Project, value: str) -> None:
    with pytest.raises(ValidationError, match="alarm_alpha"):
        project.set_setting("drift.alarm_alpha", value)
    assert project.settings.drift["alarm_alpha"] == 0.001
