"""The watch after a promotion: the new champion against the previous champion's figures from
before the promotion, rolled back on a breach when watch.rollback is on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from mlops_cli import ModelVersion, Project, watch
from mlops_cli.errors import GateError
from mlops_cli.watch import drift_breach, judge
from tests.conftest import Clock


@pytest.fixture
def gnn(tmp_path: Path, clock: Clock) -> Project:
    project = Project.init(tmp_path / "p", clock=clock)
    for v in ("v1.0.0", "v2.0.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    return project


def serve(project: Project, clock: Clock, version: str, n: int, error: float, seed: int,
          ms: float = 100.0) -> None:
    """n requests over an hour, one every 3600 / n seconds."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        clock.now += timedelta(seconds=3600 / n)
        project.registry.update_metrics(
            "gnn", version, float(rng.normal(ms, 10)), 0.8, bool(rng.random() < error)
        )


def promoted_with(gnn: Project, clock: Clock, error: float, rollback: bool = True) -> None:
    gnn.set_setting("watch.rollback", "true" if rollback else "false")
    serve(gnn, clock, "v1.0.0", 2000, 0.02, seed=1)
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    serve(gnn, clock, "v2.0.0", 2000, error, seed=2)


def test_an_error_spike_after_a_promotion_is_rolled_back_within_the_window(
    gnn: Project, clock: Clock
) -> None:
    promoted_with(gnn, clock, error=0.10)
    (result,) = gnn.watch.check()
    assert result.status == "open" and result.breach and result.rolled_back
    # the previous champion's last request is stamped at the promotion's instant: it counts
    assert result.requests == {"previous": 2000, "champion": 2000}
    assert gnn.registry.get_champion("gnn").version == "v1.0.0"
    events = [e for e in gnn.registry.history("gnn") if e["event"] in (
        "watch_breached", "rolled_back", "watch_rolled_back")]
    assert [e["event"] for e in events] == ["watch_breached", "rolled_back", "watch_rolled_back"]
    assert events[1]["reason"].startswith("watch after promotion: error rate up +0.0")
    assert "wholly above 0" in events[1]["reason"]
    (again,) = gnn.watch.check()
    # the rollback ended the watch; the window still says so while it is open
    assert (again.status, again.breach, again.rolled_back) == ("open", True, True)
    assert (again.version, again.previous) == ("v2.0.0", "v1.0.0")
    assert again.reasons[0].startswith("error rate up +0.0")
    assert len([e for e in gnn.registry.history("gnn") if e["event"] == "rolled_back"]) == 1


def test_no_spike_no_rollback(gnn: Project, clock: Clock) -> None:
    promoted_with(gnn, clock, error=0.02)
    (result,) = gnn.watch.check()
    assert result.status == "open" and not result.breach and not result.rolled_back
    assert result.error_rate is not None and result.error_rate["ci"][0] <= 0
    assert gnn.registry.get_champion("gnn").version == "v2.0.0"
    assert result.caveat.startswith("a historical comparison, confounded by time")


def test_a_breach_is_only_reported_with_rollback_off(gnn: Project, clock: Clock) -> None:
    promoted_with(gnn, clock, error=0.10, rollback=False)
    (result,) = gnn.watch.check()
    assert result.breach and not result.rolled_back
    assert gnn.registry.get_champion("gnn").version == "v2.0.0"
    gnn.watch.check()
    kinds = [e["event"] for e in gnn.registry.history("gnn")]
    assert kinds.count("watch_breached") == 1  # one window breaches once


def test_the_window_closes_after_watch_hours(gnn: Project, clock: Clock) -> None:
    gnn.set_setting("watch.hours", "1")
    promoted_with(gnn, clock, error=0.10)  # its requests span exactly the hour
    clock.now += timedelta(seconds=1)
    (result,) = gnn.watch.check()
    assert result.status == "closed" and not result.rolled_back
    assert gnn.registry.get_champion("gnn").version == "v2.0.0"
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    shown = CliRunner().invoke(app, ["-C", str(gnn.root), "watch", "check"]).stdout
    assert "(ended 2026-11-01T02:00:00Z): ended, nothing done; error rate up" in shown


def test_judge_boundaries() -> None:
    """Errors: a breach needs the interval wholly above 0; latency: wholly above the margin."""
    def rows(n: int, errors: int, ms: float) -> list[dict[str, object]]:
        return [{"error": i < errors, "inference_time_ms": ms + (i % 2)} for i in range(n)]

    same = judge(rows(1000, 20, 100), rows(1000, 20, 100), 0.05, 5000, 0.1)
    assert same[2] == []
    worse = judge(rows(1000, 20, 100), rows(1000, 200, 100), 0.05, 5000, 0.1)
    assert worse[0].ci[0] > 0 and len(worse[2]) == 1
    slower = judge(rows(1000, 20, 100), rows(1000, 20, 130), 0.05, 5000, 0.1)
    assert slower[1].ci[0] > 0.1 and "latency up" in slower[2][0]
    within = judge(rows(1000, 20, 100), rows(1000, 20, 105), 0.05, 5000, 0.1)
    assert 0 < within[1].ci[0] < 0.1 and within[2] == []  # above 0, below the margin
    assert judge([], rows(10, 10, 100), 0.05, 5000, 0.1)[2] == []  # nothing to compare


def test_a_window_without_requests_to_compare_is_waiting_not_ok(
    gnn: Project, clock: Clock
) -> None:
    """Each side needs 100 requests: with fewer, nothing is compared (no interval of
    [-15, 15] reported beside an "ok"), while the window is open and after it ended."""
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    clock.now = datetime.now(timezone.utc) - timedelta(hours=1)  # the CLI's clock is the wall's
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    (nothing,) = gnn.watch.check()
    assert nothing.waiting and nothing.error_rate is None and nothing.latency is None
    assert nothing.requests == {"previous": 0, "champion": 0} and not nothing.breach
    shown = CliRunner().invoke(app, ["-C", str(gnn.root), "watch", "check"])
    assert shown.exit_code == 0
    assert (
        ": waiting; serving metrics not compared yet: 0 requests of v1.0.0 before "
        "the promotion and 0 of v2.0.0 after it (each needs 100)"
    ) in shown.stdout
    assert ": ok" not in shown.stdout
    clock.now += timedelta(days=2)
    (ended,) = gnn.watch.check()
    assert ended.status == "closed" and not ended.waiting and ended.error_rate is None
    assert ended.to_dict()["waiting"] is False


@pytest.mark.parametrize(
    "previous, champion, waiting", [(100, 99, True), (99, 100, True), (100, 100, False)]
)
def test_a_hundred_requests_a_side_are_enough_to_compare(
    gnn: Project, clock: Clock, previous: int, champion: int, waiting: bool
) -> None:
    serve(gnn, clock, "v1.0.0", previous, 0.0, seed=1)
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    serve(gnn, clock, "v2.0.0", champion, 0.0, seed=2)
    (result,) = gnn.watch.check()
    assert result.requests == {"previous": previous, "champion": champion}
    assert result.waiting is waiting and (result.error_rate is None) is waiting
    assert result.to_dict()["waiting"] is waiting


def test_watch_check_fail_on_breach_exits_3(gnn: Project, clock: Clock) -> None:
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    def check(*args: str) -> tuple[int, str]:
        run = CliRunner().invoke(app, ["-C", str(gnn.root), "watch", "check", *args])
        return run.exit_code, run.stderr

    assert check("--fail-on", "breach") == (0, "")  # no promotion: nothing breached
    assert check("--fail-on", "breaches")[0] == 2  # not a gate
    clock.now = datetime.now(timezone.utc) - timedelta(hours=3)  # the CLI's clock is the wall's
    promoted_with(gnn, clock, error=0.10, rollback=False)  # two hours: the window is open
    assert check() == (0, "")  # the breach is reported, the exit code is the gate's
    code, err = check("--fail-on", "breach")
    assert (code, err) == (3, "error: watch breached: gnn v2.0.0 (--fail-on breach)\n")


@pytest.mark.parametrize(
    ("level", "previous_level", "breach"),
    [
        ("critical", None, False),  # no check of the previous champion: nothing to compare
        ("monitor", "ok", False),  # below retrain
        ("retrain", "ok", True),
        ("retrain", "retrain", False),  # not above the previous champion's level
        ("retrain", "monitor", True),
        ("critical", "retrain", True),
        ("insufficient_data", "ok", False),  # no level to compare
        ("critical", "insufficient_data", False),
    ],
)
def test_drift_breach_boundaries(level: str, previous_level: str | None, breach: bool) -> None:
    assert drift_breach(level, previous_level) is breach


def jsonl(rng: np.random.Generator, n: int, mean: float) -> bytes:
    pred, conf = rng.normal(mean, 1.0, n), np.clip(rng.normal(0.8, 0.05, n), 0, 1)
    return b"".join(
        b'{"prediction": %r, "confidence": %r}\n' % (float(p), float(c))
        for p, c in zip(pred, conf, strict=True)
    )


@pytest.mark.parametrize(("previous_mean", "previous_at"), [(0.0, "ok"), (2.0, "critical"),
                                                            (None, None)])
def test_drift_of_the_new_champion_breaches_only_above_the_previous_ones_level(
    gnn: Project, clock: Clock, previous_mean: float | None, previous_at: str | None
) -> None:
    """The new champion's predictions two sd from its reference: critical. A breach (rolled
    back) when the previous champion's last check before the promotion was ok; none when it
    was critical too (the inputs moved for both), nor when it had no check to compare."""
    gnn.set_setting("watch.rollback", "true")
    gnn.set_setting("drift.window_size", "1000")
    rng = np.random.default_rng(26)
    if previous_mean is not None:
        old = gnn.drift_detector("gnn", "v1.0.0")
        old.set_reference(jsonl(rng, 1000, 0.0))
        old.record_batch(jsonl(rng, 1000, previous_mean))
        assert old.check().level == previous_at  # recorded before the promotion
    clock.now += timedelta(minutes=1)
    new = gnn.drift_detector("gnn", "v2.0.0")
    new.set_reference(jsonl(rng, 1000, 0.0))
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    clock.now += timedelta(minutes=1)
    new.record_batch(jsonl(rng, 1000, 2.0))
    assert gnn.watch.check()[0].drift is None  # no drift check since the promotion yet
    new.check()  # the cron step's check, recorded
    (result,) = gnn.watch.check()
    assert result.drift is not None and result.drift["level"] == "critical"
    assert result.drift["previous_level"] == previous_at
    breach = previous_at == "ok"
    assert result.breach is breach and result.rolled_back is breach
    if breach:
        (event,) = [e for e in gnn.registry.history("gnn") if e["event"] == "rolled_back"]
        assert event["reason"].startswith("watch after promotion: drift at critical (score ")
        assert event["reason"].endswith("v1.0.0 was at ok before the promotion")
    if previous_at is None:
        from typer.testing import CliRunner

        from mlops_cli.cli import app

        shown = CliRunner().invoke(app, ["-C", str(gnn.root), "watch", "check"]).stdout
        assert "; drift critical, not compared: v1.0.0 has no drift check from before" in shown


def test_only_a_drift_check_since_the_promotion_counts(gnn: Project, clock: Clock) -> None:
    """The new champion checked at critical while it was tested, before its promotion: not
    a figure of the watch window."""
    rng = np.random.default_rng(27)
    new = gnn.drift_detector("gnn", "v2.0.0")
    new.set_reference(jsonl(rng, 1000, 0.0))
    new.record_batch(jsonl(rng, 1000, 2.0))
    assert new.check().level == "critical"
    clock.now += timedelta(minutes=1)
    promoted_with(gnn, clock, error=0.02)
    (result,) = gnn.watch.check()
    assert result.drift is None and not result.breach


def test_the_baseline_is_the_previous_champions_requests_up_to_the_promotion(
    gnn: Project, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous champion keeps serving after the promotion (an alias routes to it): its
    latest requests before the promotion are still the baseline, however many came after
    (at most HISTORY_MAX_REQUESTS, 150 here; read from the end 40 at a time)."""
    monkeypatch.setattr(watch, "HISTORY_MAX_REQUESTS", 150)
    monkeypatch.setattr(watch, "PAGE", 40)
    serve(gnn, clock, "v1.0.0", 200, 0.02, seed=1)
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    serve(gnn, clock, "v2.0.0", 200, 0.02, seed=2)
    serve(gnn, clock, "v1.0.0", 300, 0.02, seed=3)  # after the promotion: not the baseline
    (result,) = gnn.watch.check()
    assert result.requests == {"previous": 150, "champion": 200}
    assert result.error_rate is not None


def test_a_reported_breach_rolls_back_once_rollback_is_turned_on(
    gnn: Project, clock: Clock
) -> None:
    promoted_with(gnn, clock, error=0.10, rollback=False)
    assert gnn.watch.check()[0].breach
    gnn.set_setting("watch.rollback", "true")
    (result,) = gnn.watch.check()
    assert result.rolled_back and gnn.registry.get_champion("gnn").version == "v1.0.0"
    kinds = [e["event"] for e in gnn.registry.history("gnn")]
    assert kinds.count("watch_breached") == 1 and kinds.count("watch_rolled_back") == 1


def test_fail_on_breach_still_trips_after_another_check_rolled_back(
    gnn: Project, clock: Clock
) -> None:
    """`drift check --all` (or any watch check) rolled the breach back: a later
    `watch check --fail-on breach` still exits 3 while the window is open, and says so."""
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    clock.now = datetime.now(timezone.utc) - timedelta(hours=3)  # the CLI's clock is the wall's
    promoted_with(gnn, clock, error=0.10)
    assert gnn.watch.check()[0].rolled_back  # another process's check
    run = CliRunner().invoke(app, ["-C", str(gnn.root), "watch", "check", "--fail-on", "breach"])
    assert run.exit_code == 3
    assert run.stderr == "error: watch breached: gnn v2.0.0 (rolled back) (--fail-on breach)\n"
    assert ": rolled back; error rate up +0.0" in run.stdout


def test_a_rolled_back_window_that_has_ended_trips_no_gate(gnn: Project, clock: Clock) -> None:
    gnn.set_setting("watch.hours", "3")
    promoted_with(gnn, clock, error=0.10)
    assert gnn.watch.check()[0].rolled_back
    clock.now += timedelta(hours=2)
    (result,) = gnn.watch.check()
    assert (result.status, result.rolled_back, result.breach) == ("closed", True, False)
    watch.gate([result])  # nothing raised


def test_a_hand_rollback_ends_the_watch(gnn: Project, clock: Clock) -> None:
    promoted_with(gnn, clock, error=0.02)
    gnn.registry.rollback("gnn", reason="by hand")
    assert gnn.watch.check()[0].status == "none"


def test_checks_at_once_roll_back_once(gnn: Project, clock: Clock) -> None:
    """Another check rolls back between this one's judging and its change: this one sees the
    champion moved and rolls back no further (it went to v1.0.0, two promotions back)."""
    gnn.registry.register_version(ModelVersion("gnn", "v3.0.0", model_path="/m"))
    gnn.set_setting("watch.rollback", "true")
    serve(gnn, clock, "v1.0.0", 200, 0.02, seed=1)
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    serve(gnn, clock, "v2.0.0", 2000, 0.02, seed=2)
    gnn.registry.promote_to_champion("gnn", "v3.0.0")
    serve(gnn, clock, "v3.0.0", 2000, 0.10, seed=3)
    other = Project.open(gnn.root, clock=clock)
    act = watch.WatchMonitor._act

    def late(self: watch.WatchMonitor, *args: object) -> None:
        watch.WatchMonitor._act = act  # type: ignore[method-assign]
        assert other.watch.check()[0].rolled_back  # the other check, first
        act(self, *args)  # type: ignore[arg-type]

    watch.WatchMonitor._act = late  # type: ignore[method-assign]
    try:
        (result,) = gnn.watch.check()
    finally:
        watch.WatchMonitor._act = act  # type: ignore[method-assign]
    assert result.breach and result.rolled_back
    assert result.reasons[-1] == "gnn was rolled back to v2.0.0 by another check"
    assert gnn.registry.get_champion("gnn").version == "v2.0.0"
    kinds = [e["event"] for e in gnn.registry.history("gnn")]
    assert kinds.count("rolled_back") == 1 and kinds.count("watch_breached") == 1


def test_a_rollback_that_cannot_be_made_is_reported_with_the_breach(
    gnn: Project, clock: Clock
) -> None:
    """The previous champion was deprecated: the breach is reported (and trips the gate), the
    rollback said impossible; nothing raises, so `drift check --all` still reports the rest."""
    gnn.set_setting("watch.rollback", "true")
    serve(gnn, clock, "v1.0.0", 200, 0.02, seed=1)
    gnn.registry.promote_to_champion("gnn", "v2.0.0")
    gnn.registry.deprecate("gnn", "v1.0.0")
    serve(gnn, clock, "v2.0.0", 2000, 0.10, seed=2)
    (result,) = gnn.watch.check()
    assert result.breach and not result.rolled_back
    assert result.reasons[-1] == (
        "not rolled back: gnn has no earlier champion that is not deprecated")
    assert gnn.registry.get_champion("gnn").version == "v2.0.0"
    with pytest.raises(GateError):
        watch.gate([result])


def test_a_latency_exactly_at_the_margin_is_within_it(gnn: Project, clock: Clock) -> None:
    """100 ms before, 110 ms after, every request: +10% exactly (0.10000000000000009 in
    floating point), within the 10% margin."""
    for version, ms in (("v1.0.0", 100.0), ("v2.0.0", 110.0)):
        if version == "v2.0.0":
            gnn.registry.promote_to_champion("gnn", version)
        for _ in range(150):
            clock.now += timedelta(seconds=10)
            gnn.registry.update_metrics("gnn", version, ms, 0.8, False)
    (result,) = gnn.watch.check()
    assert result.latency is not None and result.latency["ci"][0] == pytest.approx(0.1)
    assert not result.breach and result.reasons == []


def test_drift_check_all_shows_open_windows_and_reads_no_ended_one(
    gnn: Project, clock: Clock
) -> None:
    """A cron step's `drift check --all` lists open windows only; with `ended=False` an ended
    window comes back without its figures (its requests are not read again every run)."""
    gnn.set_setting("watch.hours", "1")
    promoted_with(gnn, clock, error=0.02)
    clock.now += timedelta(hours=1)
    (figured,) = gnn.watch.check()
    (bare,) = gnn.watch.check(ended=False)
    assert figured.status == bare.status == "closed"
    assert figured.error_rate is not None and figured.requests["previous"] == 2000
    assert bare.requests == {} and bare.error_rate is None
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    run = CliRunner().invoke(app, ["-C", str(gnn.root), "drift", "check", "--all", "--json"])
    assert run.exit_code == 0 and json.loads(run.stdout)["watch"] == []  # ended: not listed
