"""Drift: the score against hand calculations and scipy, calibration, history, hooks, CLI."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
import scipy.stats

from mlops_cli import (
    ABTestConfig,
    HookError,
    ModelVersion,
    Project,
    ValidationError,
)
from mlops_cli.drift import DriftDetector, combine, components, gate, level_of
from mlops_cli.errors import GateError
from mlops_cli.state import Level

from .conftest import Run, assert_one_error_line, finishes, snapshot

WEIGHTS = {"statistical": 0.4, "performance": 0.3, "distribution": 0.3}
THRESHOLDS = {"monitor": 0.1, "retrain": 0.3, "critical": 0.5}


def samples(
    rng: np.random.Generator, n: int, mean: float = 0.0, sd: float = 1.0, conf: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(mean, sd, n), np.clip(rng.normal(conf, 0.05, n), 0, 1)


def score_of(ref: tuple[np.ndarray, np.ndarray], win: tuple[np.ndarray, np.ndarray]) -> float:
    return combine(components(*ref, *win), WEIGHTS)


def test_same_distribution_is_ok_in_100_of_100_runs() -> None:
    rng = np.random.default_rng(11)
    levels = {
        level_of(score_of(samples(rng, 10_000), samples(rng, 10_000)), THRESHOLDS)
        for _ in range(100)
    }
    assert levels == {"ok"}


def test_one_sd_shift_is_retrain() -> None:
    rng = np.random.default_rng(12)
    score = score_of(samples(rng, 10_000), samples(rng, 10_000, mean=1.0))
    # by hand: D -> 2 Phi(0.5) - 1 = 0.383; Q = 1; P = 0: 0.4 * 0.383 + 0.3 = 0.453
    assert score == pytest.approx(0.4 * (2 * scipy.stats.norm.cdf(0.5) - 1) + 0.3, abs=0.01)
    assert level_of(score, THRESHOLDS) == "retrain"


def test_two_sd_shift_and_confidence_fall_is_critical() -> None:
    rng = np.random.default_rng(13)
    score = score_of(samples(rng, 10_000), samples(rng, 10_000, mean=2.0, conf=0.6))
    assert level_of(score, THRESHOLDS) == "critical"


def test_confidence_fall_of_25_percent_is_full_performance_drift() -> None:
    rng = np.random.default_rng(14)
    ref, win = samples(rng, 10_000), samples(rng, 10_000, conf=0.6)
    assert components(*ref, *win).performance == 1.0
    # 10% fall -> 0.1 / 0.2 = 0.5 (hand calculation on exact means)
    c = components(
        np.array([0.0, 1.0]), np.array([0.8, 0.8]), np.array([0.0, 1.0]), np.array([0.72, 0.72])
    )
    assert c.performance == pytest.approx(0.5)
    rise = components(
        np.array([0.0, 1.0]), np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.array([0.9, 0.9])
    )
    assert rise.performance == 0.0


def test_distribution_component_by_hand() -> None:
    ref = np.array([0.0, 2.0, 4.0])  # mean 2, sd 2
    half_shift = components(ref, np.ones(3), ref + 1.0, np.ones(3))
    assert half_shift.distribution == pytest.approx(0.5)
    doubled = components(ref, np.ones(3), ref * 2 - 2.0, np.ones(3))  # mean 2, sd 4
    assert doubled.distribution == pytest.approx(1.0)
    spread = components(ref, np.ones(3), (ref - 2.0) * math.sqrt(2) + 2.0, np.ones(3))
    assert spread.distribution == pytest.approx(0.5)  # ln(sqrt 2) / ln 2
    constant = components(np.ones(3), np.ones(3), np.ones(3), np.ones(3))
    assert constant.distribution == 0.0


@pytest.mark.parametrize(
    ("n", "m", "shift"),
    [
        (2, 2, 0.5),
        (30, 30, 0.0),
        (150, 150, 0.3),
        (1000, 3000, 0.05),
        (4000, 4000, 0.02),
        (10_000, 10_000, 0.02),
        (10_000, 10_000, 2.0),
        (20_000, 5_000, 0.05),
        (12_000, 12_000, 0.1),
    ],
)
def test_ks_matches_scipy(n: int, m: int, shift: float) -> None:
    # sizes up to 10,000 take the exact path, larger ones the asymptotic one (ks.py), as scipy
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(0, 1, n), rng.normal(shift, 1.1, m)
    c = components(a, np.ones(n), b, np.ones(m))
    ref = scipy.stats.ks_2samp(a, b)
    assert c.statistical == pytest.approx(ref.statistic, rel=1e-12)
    assert c.ks_pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_ks_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    a, b = np.round(rng.normal(0, 1, 500), 1), np.round(rng.normal(0.1, 1, 500), 1)
    c = components(a, np.ones(500), b, np.ones(500))
    ref = scipy.stats.ks_2samp(a, b)
    assert (c.statistical, c.ks_pvalue) == (
        pytest.approx(ref.statistic),
        pytest.approx(ref.pvalue, rel=1e-12),
    )


# -- through files ---------------------------------------------------------------------------


@pytest.fixture
def gnn(project: Project) -> Project:
    project.registry.register_version(ModelVersion("gnn", "v2.2.0", model_path="/m"))
    return project


def jsonl_of(pred: np.ndarray, conf: np.ndarray) -> bytes:
    return b"".join(
        orjson.dumps({"prediction": float(p), "confidence": float(c)}) + b"\n"
        for p, c in zip(pred, conf, strict=True)
    )


def test_report_is_current_and_read_only(gnn: Project, tmp_path: Path) -> None:
    fired = tmp_path / "fired"
    gnn.set_setting("drift.hooks.monitor", f"touch {fired}")
    gnn.set_setting("drift.window_size", "1000")
    d = gnn.drift_detector("gnn", "v2.2.0")
    rng = np.random.default_rng(18)
    ref = samples(rng, 1000)
    d.set_reference(jsonl_of(*ref))
    d.record_batch(jsonl_of(*samples(rng, 1000)))
    first = d.get_drift_report()
    new = samples(rng, 1000, mean=2.0)
    d.record_batch(jsonl_of(*new))
    before = snapshot(gnn.root)
    second = d.get_drift_report()
    expected = combine(components(*ref, *new), WEIGHTS)
    assert second["current_drift_score"] == pytest.approx(expected)  # never stale
    assert second["current_drift_score"] > first["current_drift_score"]
    assert second["level"] == "critical" and second["hooks"] == []
    assert d.history() == [] and not fired.exists()  # no check row, no hook
    assert {k: v for k, v in snapshot(gnn.root).items() if "cache" not in k} == {
        k: v for k, v in before.items() if "cache" not in k
    }


def _drifting(project: Project, version: str = "v2.2.0", mean: float = 2.0) -> DriftDetector:
    d = project.drift_detector("gnn", version)
    rng = np.random.default_rng(21)
    d.set_reference(jsonl_of(*samples(rng, 1000)))
    d.record_batch(jsonl_of(*samples(rng, 1000, mean=mean, conf=0.6)))
    return d


def test_hook_runs_with_the_documented_environment(gnn: Project, tmp_path: Path) -> None:
    out = tmp_path / "hook.txt"
    gnn.set_setting(
        "drift.hooks.critical",
        f'echo "$MLOPS_MODEL_TYPE $MLOPS_MODEL_VERSION $MLOPS_DRIFT_LEVEL '
        f'$MLOPS_DRIFT_SCORE" > {out}',
    )
    gnn.set_setting("drift.hooks.monitor", "true")
    report = _drifting(gnn).check()
    assert [h["level"] for h in report["hooks"]] == ["monitor", "critical"]
    model_type, version, level, score = out.read_text().split()
    assert (model_type, version, level) == ("gnn", "v2.2.0", "critical")
    assert float(score) == pytest.approx(report["current_drift_score"], abs=1e-6)


def test_failing_hook_is_reported_and_the_check_recorded(gnn: Project) -> None:
    gnn.set_setting(
        "drift.hooks.retrain", "echo secret-token-in-cmd >/dev/null; echo broken >&2; exit 4"
    )
    d = _drifting(gnn)
    report = d.check()
    assert [h.to_dict() for h in report.hooks] == [
        {"level": "retrain", "ok": False, "exit_code": 4, "timed_out": False, "output": "broken\n"}
    ]
    assert [r["level"] for r in d.history()] == ["critical"]
    assert "secret-token" not in str(report.to_dict())  # the command is never recorded
    assert "secret-token" not in gnn.drift_log("gnn", "v2.2.0", "checks").read_text()
    with pytest.raises(HookError, match="retrain exit code 4"):
        gate([report], None)
    with pytest.raises(GateError):  # the gate wins whatever the hooks did
        gate([report], Level.RETRAIN)


def test_hook_timeout_is_reported(gnn: Project) -> None:
    gnn.set_setting("drift.hooks.retrain", "sleep 600; echo late")
    gnn.set_setting("drift.hook_timeout_s", "0.5")
    d = _drifting(gnn)
    report = finishes(d.check)  # (a hook left to run would take 600 s)
    assert report.hooks[0].timed_out and report.hooks[0].exit_code is None
    assert not report.hooks[0].ok and len(d.history()) == 1


def test_hooks_fire_on_entry_then_after_the_cooldown(gnn: Project, tmp_path: Path) -> None:
    log = tmp_path / "fired.txt"
    gnn.set_setting("drift.window_size", "1000")
    gnn.set_setting("drift.hooks.monitor", f"echo monitor >> {log}")
    gnn.set_setting("drift.hooks.retrain", f"echo retrain >> {log}")
    gnn.set_setting("drift.hooks.critical", f"echo critical >> {log}; exit 1")
    gnn.set_setting("drift.hook_cooldown_s", "3600")
    now = [datetime(2026, 11, 1, tzinfo=timezone.utc)]
    project = Project.open(gnn.root, clock=lambda: now[0])
    d = project.drift_detector("gnn", "v2.2.0")
    rng = np.random.default_rng(30)
    d.set_reference(jsonl_of(*samples(rng, 1000)))

    def check_at(mean: float, conf: float = 0.8) -> list[str]:
        d.record_batch(jsonl_of(*samples(rng, 1000, mean=mean, conf=conf)))
        now[0] += timedelta(minutes=10)
        return [h.level for h in d.check().hooks]

    def fired() -> list[str]:
        return log.read_text().split() if log.exists() else []

    assert check_at(2.0, 0.6) == ["monitor", "retrain", "critical"]  # entered all three
    assert check_at(2.0, 0.6) == []  # stays: nothing, though critical failed
    assert d.check().hooks == []  # no new samples: nothing
    assert check_at(0.9) == []  # down to retrain: still in retrain and monitor
    assert check_at(0.0) == []  # ok: left every level
    assert check_at(0.9) == ["monitor", "retrain"]  # re-entered
    now[0] += timedelta(hours=1)
    assert check_at(0.9) == ["monitor", "retrain"]  # the cooldown passed
    assert fired() == ["monitor", "retrain", "critical", "monitor", "retrain"] * 1 + [
        "monitor",
        "retrain",
    ]
    assert len(d.history()) == 7


# -- CLI -------------------------------------------------------------------------------------

Cli = Callable[..., Run]


@pytest.fixture
def two_models(cli: Cli, gnn: Project, tmp_path: Path) -> Cli:
    rng = np.random.default_rng(22)
    cli("register", "gnn", "v2.3.0", "--path", "/m")
    cli("register", "gnn", "v2.4.0", "--path", "/m")
    for version, mean in (("v2.2.0", 0.0), ("v2.3.0", 2.0)):
        (tmp_path / "ref.jsonl").write_bytes(jsonl_of(*samples(rng, 1000)))
        assert (
            cli(
                "drift", "reference", "gnn", version, "--file", str(tmp_path / "ref.jsonl")
            ).exit_code
            == 0
        )
        run = cli(
            "drift",
            "record",
            "gnn",
            version,
            "--file",
            "-",
            input=jsonl_of(*samples(rng, 1000, mean=mean, conf=0.6 if mean else 0.8)).decode(),
        )
        assert run.exit_code == 0, run.stderr
    (tmp_path / "few.jsonl").write_bytes(jsonl_of(*samples(rng, 10)))
    cli("drift", "reference", "gnn", "v2.4.0", "--file", str(tmp_path / "few.jsonl"))
    for version in ("v2.3.0", "v2.4.0"):  # v2.2.0 serves (the champion); these do not
        assert cli("drift", "monitor", "gnn", version).exit_code == 0
    return cli


def test_check_all_and_fail_on(two_models: Cli) -> None:
    run = two_models("drift", "check", "--all", "--json")
    assert run.exit_code == 0
    results = {r["model_version"]: r for r in run.json()["results"]}
    assert set(results) == {"v2.2.0", "v2.3.0", "v2.4.0"}
    assert results["v2.2.0"]["level"] == "ok"
    assert results["v2.3.0"]["level"] == "critical" and results["v2.3.0"]["alert_triggered"]
    assert results["v2.4.0"]["status"] == "insufficient_data"
    for level, code in (("monitor", 3), ("retrain", 3), ("critical", 3)):
        assert two_models("drift", "check", "--all", "--fail-on", level).exit_code == code
    assert two_models("drift", "check", "gnn", "v2.2.0", "--fail-on", "monitor").exit_code == 0
    one = two_models("drift", "check", "gnn", "v2.3.0", "--fail-on", "critical", "--json")
    assert one.exit_code == 3 and one.json()["level"] == "critical"


def test_fail_on_below_the_level_passes(two_models: Cli, gnn: Project) -> None:
    gnn.set_setting("drift.thresholds.critical", "0.95")
    assert two_models("drift", "check", "gnn", "v2.3.0", "--fail-on", "critical").exit_code == 0
    assert two_models("drift", "check", "gnn", "v2.3.0", "--fail-on", "retrain").exit_code == 3


def test_report_json_keys(two_models: Cli) -> None:
    doc = two_models("drift", "report", "gnn", "v2.3.0", "--json").json()
    assert set(doc) >= {
        "model_type",
        "model_version",
        "status",
        "current_drift_score",
        "avg_drift_7d",
        "alert_triggered",
        "level",
        "recommendation",
        "components",
        "ks_pvalue",
        "n_reference",
        "n_window",
        "checked_at",
    }
    assert set(doc["components"]) == {"statistical", "performance", "distribution"}


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (
            ["drift", "record", "gnn", "v2.2.0", "--prediction", "nan", "--confidence", "0.5"],
            None,
            ["finite"],
        ),
        (
            ["drift", "record", "gnn", "v2.2.0", "--prediction", "inf", "--confidence", "0.5"],
            None,
            ["finite"],
        ),
        (
            ["drift", "record", "gnn", "v2.2.0", "--prediction", "1", "--confidence", "2"],
            None,
            ["--confidence must be between 0 and 1"],
        ),
        (
            ["drift", "record", "gnn", "v2.2.0", "--prediction", "1", "--confidence", "-0.5"],
            None,
            ["confidence"],
        ),
        (["drift", "reference", "gnn", "v2.2.0", "--file", "-"], "", ["no records"]),
        (
            ["drift", "reference", "gnn", "v2.2.0", "--file", "-"],
            '{"prediction": 1, "confidence": 0.5}\n' * 9001,
            ["would exceed", "--replace"],
        ),
        (
            ["drift", "record", "nosuch", "v2.2.0", "--prediction", "1", "--confidence", "0.5"],
            None,
            ["unknown model type"],
        ),
        (["drift", "check", "gnn", "v7.0.0"], None, ["unknown version"]),
        (
            ["drift", "record", "gnn", "v2.2.0", "--file", "-"],
            '{"prediction": 1, "confidence": 0.5}\n{"confidence": 0.5}\n',
            ["line 2", "prediction"],
        ),
    ],
)
def test_bad_drift_input(
    two_models: Cli, gnn: Project, args: list[str], stdin: str | None, words: list[str]
) -> None:
    before = snapshot(gnn.root)
    assert_one_error_line(two_models(*args, input=stdin), *words)
    assert snapshot(gnn.root) == before


def test_hook_timeout_through_the_cli(two_models: Cli, gnn: Project) -> None:
    two_models("config", "set", "drift.hooks.critical", "sleep 20")
    two_models("config", "set", "drift.hook_timeout_s", "0.3")
    run = two_models("drift", "check", "gnn", "v2.3.0", "--json")
    assert run.exit_code == 1 and "timed out" in run.stderr  # the check itself is recorded
    assert run.json()["hooks"][0]["timed_out"] is True
    assert len(gnn.drift_detector("gnn", "v2.3.0").history()) == 1


def test_a_failing_hook_does_not_stop_monitoring(two_models: Cli, gnn: Project) -> None:
    """Issue 11 item 3: a failing critical hook, `check --all --fail-on critical`."""
    two_models("drift", "monitor", "gnn", "v2.4.0", "--off")
    two_models("config", "set", "drift.window_size", "1000")
    v3 = gnn.drift_detector("gnn", "v2.3.0")
    two_models("config", "set", "drift.hooks.critical", "echo no retrainer >&2; exit 7")
    gated = two_models("drift", "check", "--all", "--fail-on", "critical", "--json")
    assert gated.exit_code == 3  # the gate, whatever the hook did
    results = {r["model_version"]: r for r in gated.json()["results"]}
    assert set(results) == {"v2.2.0", "v2.3.0"}  # every monitored version checked
    assert results["v2.3.0"]["hooks"] == [
        {
            "level": "critical",
            "ok": False,
            "exit_code": 7,
            "timed_out": False,
            "output": "no retrainer\n",
        }
    ]
    assert v3.last_check()["level"] == "critical"  # recorded, so exported
    assert "model_drift_level{" in two_models("metrics", "export").stdout
    export = two_models("metrics", "export").stdout
    assert 'model_drift_level{model_type="gnn",model_version="v2.3.0"} 3.0' in export
    # the same entry: the hook does not fire again, so no hook failure and exit 0
    assert two_models("drift", "check", "--all").exit_code == 0
    # a fresh entry whose hook fails, no gate: exit 1, both versions still checked
    two_models(
        "drift",
        "record",
        "gnn",
        "v2.3.0",
        "--file",
        "-",
        input=jsonl_of(*samples(np.random.default_rng(40), 1000)).decode(),
    )
    back = two_models("drift", "check", "gnn", "v2.3.0", "--json")
    assert back.exit_code == 0 and back.json()["level"] == "ok"  # left critical
    two_models(
        "drift",
        "record",
        "gnn",
        "v2.3.0",
        "--file",
        "-",
        input=jsonl_of(*samples(np.random.default_rng(41), 1000, mean=2.0, conf=0.6)).decode(),
    )
    run = two_models("drift", "check", "--all", "--json")
    assert run.exit_code == 1 and "gnn v2.3.0 critical exit code 7" in run.stderr
    assert len(run.json()["results"]) == 2
    report = two_models("drift", "report", "gnn", "v2.3.0")
    assert report.exit_code == 0 and "critical" in report.stdout  # a read: no hook, exit 0
    assert len(v3.history()) == 4


def test_hook_output_is_shown_as_text_never_as_markup_or_escapes(
    two_models: Cli, gnn: Project
) -> None:
    """A hook printing Rich markup (`[/nope]`) or terminal escapes: the line is printed as it
    reads, every other version's line too, and the gate's exit code stands."""
    two_models("config", "set", "drift.hooks.critical", r"printf '[/nope] [bold]x\033[2J\n'; exit 1")
    run = two_models("drift", "check", "--all", "--fail-on", "critical")
    assert run.exit_code == 3, run.stderr
    assert "this is a bug" not in run.stderr
    assert "[/nope] [bold]x\\x1b[2J" in run.stdout
    assert "\x1b" not in run.stdout + run.stderr
    for version in ("v2.2.0", "v2.3.0", "v2.4.0"):
        assert f"gnn {version}" in run.stdout


def test_monitoring_scope(two_models: Cli, gnn: Project) -> None:
    def checked() -> set[str]:
        run = two_models("drift", "check", "--all", "--json")
        return {r["model_version"] for r in run.json()["results"]}

    def exported() -> set[str]:
        out = two_models("metrics", "export").stdout
        return {
            v
            for v in ("v2.2.0", "v2.3.0", "v2.4.0")
            if f'model_drift_last_check_timestamp_seconds{{model_type="gnn",model_version="{v}"}}'
            in out
        }

    assert checked() == {"v2.2.0", "v2.3.0", "v2.4.0"} == exported()
    two_models("drift", "monitor", "gnn", "v2.3.0", "--off")
    two_models("drift", "monitor", "gnn", "v2.4.0", "--off")
    assert checked() == {"v2.2.0"} == exported()
    events = [e for e in gnn.store.history("events") if e["event"] in ("monitored", "unmonitored")]
    assert [(e["event"], e["version"]) for e in events][-2:] == [
        ("unmonitored", "v2.3.0"),
        ("unmonitored", "v2.4.0"),
    ]
    # the arms of a running test serve traffic
    gnn.ab.start_test(
        ABTestConfig(
            name="t1", model_type="gnn", control_version="v2.2.0", treatment_version="v2.3.0"
        )
    )
    assert checked() == {"v2.2.0", "v2.3.0"}
    gnn.ab.finalize_test("t1", "rollback")
    two_models("drift", "monitor", "gnn", "v2.3.0")
    assert checked() == {"v2.2.0", "v2.3.0"}
    # a deprecated version is dropped from both, whatever it was
    assert two_models("deprecate", "gnn", "v2.3.0").exit_code == 0
    assert checked() == {"v2.2.0"} == exported()
    assert 'model_drift_level{model_type="gnn",model_version="v2.3.0"}' not in (
        two_models("metrics", "export").stdout
    )
    assert_one_error_line(two_models("drift", "monitor", "gnn", "v2.3.0"), "deprecated")


def test_last_check_time_is_exported(two_models: Cli, gnn: Project) -> None:
    two_models("drift", "check", "gnn", "v2.2.0")
    when = gnn.drift_detector("gnn", "v2.2.0").last_check()["ts"]
    expected = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    line = next(
        x
        for x in two_models("metrics", "export").stdout.splitlines()
        if x.startswith(
            'model_drift_last_check_timestamp_seconds{model_type="gnn",model_version="v2.2.0"}'
        )
    )
    assert float(line.split()[-1]) == pytest.approx(expected, abs=1e-3)


def test_malformed_window_line_is_named_or_skipped_and_counted(
    two_models: Cli, gnn: Project
) -> None:
    production = gnn.drift_log("gnn", "v2.2.0", "production")
    with open(production, "ab") as f:
        f.write(b'{"prediction": "high", "confidence": 0.5}\n')
    two_models("drift", "record", "gnn", "v2.2.0", "--prediction", "0.1", "--confidence", "0.8")
    before = snapshot(gnn.root)
    assert_one_error_line(
        two_models("drift", "check", "gnn", "v2.2.0"),
        "production.jsonl",
        "line 1001",
        "--skip-invalid",
    )
    assert snapshot(gnn.root) == before
    doc = two_models("drift", "check", "gnn", "v2.2.0", "--skip-invalid", "--json").json()
    assert doc["skipped_lines"] == 1 and doc["n_window"] == 1001
    for command in ("check", "report"):  # the table says so too
        shown = two_models("drift", command, "gnn", "v2.2.0", "--skip-invalid").stdout
        assert "skipped 1 malformed log line(s)" in shown, command


def test_torn_production_tail_is_reported(two_models: Cli, gnn: Project) -> None:
    with open(gnn.drift_log("gnn", "v2.2.0", "production"), "ab") as f:
        f.write(b'{"prediction": 0.')
    run = two_models("drift", "check", "gnn", "v2.2.0")
    assert run.exit_code == 0 and "is incomplete (17 bytes" in run.stderr
    assert two_models("drift", "report", "gnn", "v2.2.0", "--json").json()["torn_bytes"] == 17


# -- settings --------------------------------------------------------------------------------


def test_weights_are_set_together_and_sum_to_1(cli: Cli, project: Project) -> None:
    before = snapshot(project.root)
    assert_one_error_line(
        cli("config", "set", "drift.weights.statistical", "0.9"),
        "drift.weights statistical=0.5,performance=0.25,distribution=0.25",
    )
    assert_one_error_line(
        cli("config", "set", "drift.weights", "statistical=0.5,performance=0.5,distribution=0.5"),
        "sum to 1",
    )
    assert_one_error_line(
        cli("config", "set", "drift.weights", "statistical=1.5,performance=-0.5,distribution=0"),
        ">= 0",
    )
    assert_one_error_line(
        cli("config", "set", "drift.weights", "statistical=0.5,performance=0.5"), "distribution"
    )
    assert snapshot(project.root) == before
    run = cli(
        "config", "set", "drift.weights", "statistical=0.5,performance=0.25,distribution=0.25"
    )
    assert run.exit_code == 0, run.stderr
    assert project.get_setting("drift.weights") == {
        "statistical": 0.5,
        "performance": 0.25,
        "distribution": 0.25,
    }
    yaml_form = "{statistical: 0.4, performance: 0.3, distribution: 0.3}"
    assert cli("config", "set", "drift.weights", yaml_form).exit_code == 0
    assert project.get_setting("drift.weights.statistical") == 0.4
    cli("config", "set", "drift.weights", "statistical=0.5,performance=0.25,distribution=0.25")
    # a registry.yaml edited by hand is checked on load too
    text = project.registry_path.read_text().replace("statistical: 0.5", "statistical: 0.9")
    project.registry_path.write_text(text)
    assert_one_error_line(cli("config", "list"), "sum to 1")


@pytest.mark.parametrize("key", ["reference_size", "window_size", "min_samples"])
def test_sizes_lie_in_1_to_10_million(cli: Cli, project: Project, key: str) -> None:
    for bad in ("0", "-1", "10000001", "1.5"):
        assert_one_error_line(cli("config", "set", "--", f"drift.{key}", bad), key)
    for good in ("1", "10000000"):
        assert cli("config", "set", f"drift.{key}", good).exit_code == 0
        assert project.get_setting(f"drift.{key}") == int(good)


def test_window_zero_is_an_error(two_models: Cli, gnn: Project) -> None:
    before = snapshot(gnn.root)
    for bad in ("0", "-5", "10000001"):
        assert_one_error_line(
            two_models("drift", "check", "gnn", "v2.2.0", "--window", bad), "--window"
        )
    assert snapshot(gnn.root) == before
    with pytest.raises(ValidationError, match=r"^window must be between"):
        gnn.drift_detector("gnn", "v2.2.0").check(window=0)


def test_a_fail_on_level_outside_the_set_is_a_usage_error(two_models: Cli, gnn: Project) -> None:
    before = snapshot(gnn.root)
    run = two_models("drift", "check", "--all", "--fail-on", "bad")
    assert run.exit_code == 2, run.stderr
    assert "Invalid value for '--fail-on': 'bad' is not one of monitor, retrain, critical" in (
        run.stderr
    )
    assert snapshot(gnn.root) == before


def test_python_callers_are_told_the_arguments_and_the_cli_its_flags(
    two_models: Cli, gnn: Project
) -> None:
    """The same refusals, named for each interface: `replace=True` and `window` in Python,
    `--replace` and `--window` on the command line."""
    gnn.set_setting("drift.reference_size", "2")
    detector = gnn.drift_detector("gnn", "v2.2.0")
    three = b'{"prediction": 1, "confidence": 0.5}\n' * 3
    with pytest.raises(ValidationError, match=r"use replace=True to start a new reference"):
        detector.set_reference(three)
    with pytest.raises(ValidationError, match=r"^window must be between 1 and 10,000,000"):
        detector.check(window=0)
    run = two_models("drift", "reference", "gnn", "v2.2.0", "--file", "-", input=three.decode())
    assert_one_error_line(run, "use --replace to start a new reference")
    run = two_models("drift", "check", "gnn", "v2.2.0", "--window", "0")
    assert_one_error_line(run, "--window must be between 1 and 10,000,000")


def test_levels_order_by_severity_under_every_operator() -> None:
    """Not by name: as strings, "critical" < "monitor" < "ok" < "retrain"."""
    from mlops_cli.state import Level

    assert Level.CRITICAL > Level.RETRAIN > Level.MONITOR > Level.OK
    assert Level.OK < Level.MONITOR < Level.RETRAIN < Level.CRITICAL
    assert Level.OK <= Level.OK <= Level.CRITICAL and not Level.CRITICAL <= Level.RETRAIN
    assert Level.CRITICAL >= Level.CRITICAL >= Level.OK and not Level.OK >= Level.MONITOR
    assert sorted(Level, reverse=True) == [Level.CRITICAL, Level.RETRAIN, Level.MONITOR, Level.OK]
