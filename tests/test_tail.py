"""The tail-latency guardrail's boundaries, with numbers worked by hand: the p95 definition,
"slow" as strictly above tau, the threshold's sources, the ratio sums, the harm boundary, k,
and a test recorded before the guardrail keeping it off."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_cli import tail
from mlops_cli.decision import Rules, decide
from mlops_cli.moments import Moments
from mlops_cli.schema import AB_TEST, legacy_test
from mlops_cli.summary import tail_counts
from mlops_cli.tail import TailInput, TailSums, Threshold


def test_p95_is_numpys_linear_method_type_7() -> None:
    # 1..20: h = (20 - 1) * 0.95 = 18.05, so x[18] + 0.05 (x[19] - x[18]) = 19 + 0.05.
    values = list(range(1, 21))
    assert tail.p95(values) == pytest.approx(19.05, abs=1e-12)
    assert tail.p95(values) == float(np.quantile(values, 0.95, method="linear"))
    # not the inverted-CDF (type 1) or "higher" definitions, which give 19 and 20 here
    assert float(np.quantile(values, 0.95, method="inverted_cdf")) == 19.0
    assert tail.p95(values[::-1]) == pytest.approx(19.05, abs=1e-12)  # order does not matter


def test_the_source_boundaries() -> None:
    assert tail.MIN_HISTORY_REQUESTS == 2000
    assert tail.from_history(np.arange(1, 2000)) is None  # 1,999 requests: too few
    found = tail.from_history(np.arange(1, 2001))  # 2,000: h = 1999 * 0.95 = 1899.05
    assert found == Threshold(pytest.approx(1900.05, abs=1e-9), "champion_history", 2000)
    assert tail.MIN_FIRST_DAY_REQUESTS == 20
    assert tail.from_first_day(list(range(1, 20))) is None
    first = tail.from_first_day(list(range(1, 21)))
    assert first == Threshold(pytest.approx(19.05, abs=1e-12), "first_day", 20)


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def test_slow_means_strictly_above_tau_and_the_sums_are_per_user(tmp_path: Path) -> None:
    log = tmp_path / "ab.jsonl"
    rows = [
        # control: user a has 3 requests, 1 slow (100.0 is tau itself: not slow); b 1 of 1
        {"variant": "control", "user_id": "a", "inference_time_ms": 100.0},
        {"variant": "control", "user_id": "a", "inference_time_ms": 100.5},
        {"variant": "control", "user_id": "a", "inference_time_ms": 20.0},
        {"variant": "control", "user_id": 7, "inference_time_ms": 300.0},
        {"variant": "control", "user_id": "7", "inference_time_ms": 10.0},  # 7 and "7": one
        # treatment: user c 2 of 2 slow; an anonymous request, slow
        {"variant": "treatment", "user_id": "c", "inference_time_ms": 101.0},
        {"variant": "treatment", "user_id": "c", "inference_time_ms": 999.0},
        {"variant": "treatment", "inference_time_ms": 150.0},
        {"variant": "treatment", "inference_time_ms": "slow"},  # not a request: left out
    ]
    write_log(log, [{"confidence": 0.5, "ts": "2026-11-01T00:00:00.000000Z", **r} for r in rows])
    found = tail_counts(log, 100.0, ("control", "treatment"))
    # control: users (M, D) = a (1, 3), 7 (1, 2): sums M 2, M^2 2, D 5, D^2 13, MD 5
    assert found["control"] == TailSums(5, 2, 0, (2, 2.0, 2.0, 5.0, 13.0, 5.0))
    # treatment: c (2, 2); the anonymous request counts in requests and slow only
    assert found["treatment"] == TailSums(3, 3, 1, (1, 2.0, 4.0, 2.0, 4.0, 4.0))
    assert found["control"].share == pytest.approx(2 / 5)


def rules(**kw: Any) -> Rules:
    base: dict[str, Any] = dict(
        alpha=0.05,
        method="sequential",
        sequential_tuning=5000,
        treatment_traffic_pct=50,
        min_requests=0,
        duration_days=0,
        max_error_rate_increase=0.05,
        min_confidence_improvement=0.02,
        tail_latency=True,
    )
    return Rules(**{**base, **kw})


def test_k_counts_the_tail_guardrail_while_it_is_on() -> None:
    assert rules(tail_latency=False).harm_tests == 3  # errors, confidence, latency (10%)
    assert rules().harm_tests == 4
    assert rules().harm_alpha == pytest.approx(0.05 / 4)
    assert Rules.from_config({**rules()._asdict(), "tail_latency": None}).harm_tests == 3
    old = {k: v for k, v in rules()._asdict().items() if k != "tail_latency"}
    assert Rules.from_config(old).tail_latency is False  # a config without the key: off


def seq_lower(n_c: int, s_c: int, n_t: int, s_t: int, alpha: float, tuning: float) -> float:
    """The sequential interval's lower end for a difference of proportions, Agresti-Caffo
    (1 event and 2 trials added per arm), written out from Waudby-Smith et al. eqs. 9, 161."""
    pc, pt = (s_c + 1) / (n_c + 2), (s_t + 1) / (n_t + 2)
    variance = pc * (1 - pc) / (n_c + 2) + pt * (1 - pt) / (n_t + 2)
    n = n_c + n_t + 4
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    half = math.sqrt(variance * n) * math.sqrt(
        2 * (n * rho2 + 1) * math.log(math.sqrt(n * rho2 + 1) / alpha) / (n * n * rho2)
    )
    return pt - pc - half  # centred on the adjusted difference (the estimate reported raw)


def arm(n: int) -> Moments:
    return Moments(n=n, errors=0, confidence_sum=0.8 * n, confidence_sum_squares=0.65 * n,
                   time_sum=100.0 * n, time_sum_squares=10100.0 * n)


def per_request(slow: int, n: int) -> TailSums:
    return TailSums(n, slow, n, tail.EMPTY.users)


def test_harm_exactly_when_the_interval_at_alpha_over_k_clears_zero() -> None:
    n, s_c, alpha = 4000, 200, 0.05 / 4  # 5% slow; k = 4: errors, confidence, latency, tail
    # the least treatment slow count whose lower end is above 0, found independently
    s_t = next(s for s in range(s_c, n) if seq_lower(n, s_c, n, s, alpha, 5000) > 0)
    assert seq_lower(n, s_c, n, s_t - 1, alpha, 5000) <= 0
    threshold = Threshold(120.0, "champion_history", 5000)
    for slow, harm in ((s_t, True), (s_t - 1, False)):
        found = decide(
            "t", rules(), arm(n), arm(n), 8.0,
            TailInput(threshold, per_request(s_c, n), per_request(slow, n)),
        )
        entry = found.metrics["guardrails"]["tail_latency"]
        assert entry["harm"] is harm
        assert entry["ci"][0] == pytest.approx(seq_lower(n, s_c, n, slow, alpha, 5000), abs=1e-12)
        assert (found.rollback_cause == "harm") is harm  # (else futility: no gain here)
        assert entry["threshold_ms"] == 120.0 and entry["source"] == "champion_history"
        assert entry["share"] == {"control": s_c / n, "treatment": slow / n}
    harmed = decide("t", rules(), arm(n), arm(n), 8.0,
                    TailInput(threshold, per_request(s_c, n), per_request(s_t, n)))
    assert "slower than the control's p95" in harmed.reasons[0]


def test_off_the_guardrail_is_neither_judged_nor_counted() -> None:
    threshold = Threshold(120.0, "first_day", 300)
    found = decide("t", rules(tail_latency=False), arm(4000), arm(4000), 8.0,
                   TailInput(threshold, per_request(200, 4000), per_request(900, 4000)))
    assert "tail_latency" not in found.metrics["guardrails"]
    assert found.rollback_cause != "harm"


def test_a_promotion_margin_needs_the_interval_below_it() -> None:
    threshold = Threshold(120.0, "first_day", 300)
    # a clear confidence gain; the slow share equal in both arms (5%)
    control = Moments(n=4000, errors=0, confidence_sum=3200.0, confidence_sum_squares=2600.0,
                      time_sum=4e5, time_sum_squares=4.04e7)
    better = Moments(n=4000, errors=0, confidence_sum=3600.0, confidence_sum_squares=3280.0,
                     time_sum=4e5, time_sum_squares=4.04e7)
    same = TailInput(threshold, per_request(200, 4000), per_request(200, 4000))
    assert decide("t", rules(), control, better, 8.0, same).decision == "promote"
    tight = decide("t", rules(max_tail_latency_increase=0.001), control, better, 8.0, same)
    assert tight.decision == "continue"
    assert any("tail latency" in r for r in tight.reasons)
    wide = decide("t", rules(max_tail_latency_increase=0.05), control, better, 8.0, same)
    assert wide.decision == "promote"
    assert wide.metrics["guardrails"]["tail_latency"]["non_inferior"] is True
    pending = decide("t", rules(max_tail_latency_increase=0.05), control, better, 8.0,
                     TailInput(None, pending="0.5 days left"))
    assert pending.decision == "continue"
    assert pending.metrics["guardrails"]["tail_latency"]["status"] == "pending"


def test_a_test_recorded_before_the_guardrail_keeps_it_off() -> None:
    old = {
        "model_type": "gnn", "control_version": "1.0.0", "treatment_version": "1.1.0",
        "treatment_traffic_pct": 10.0, "duration_days": 7.0, "min_requests": 1000,
        "max_error_rate_increase": 0.05, "min_confidence_improvement": 0.02, "alpha": 0.05,
        "method": "sequential", "sequential_tuning": 5000, "max_confidence_drop": 0.02,
        "max_latency_increase_ms": None, "status": "running",
        "started_at": "2026-11-01T00:00:00Z", "finalized_at": None, "end_reason": None,
    }
    doc = AB_TEST(legacy_test(old), "ab_tests.t")  # as the schema 3 -> 4 migration reads it
    assert doc["tail_latency"] is False and doc["tail_latency_ms"] is None
    assert AB_TEST({**doc, "tail_latency": True}, "ab_tests.t")["tail_latency"] is True


def test_the_cli_sets_it_and_evaluate_json_reports_it(cli: Any, project: Any) -> None:
    from mlops_cli import ModelVersion

    for v in ("1.0.0", "1.1.0", "1.2.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="m.pt"))
    off = cli("ab", "start", "a", "--model-type", "gnn", "--treatment", "1.1.0",
              "--no-tail-latency", "--json").json()
    assert off["tail_latency"] is False and off["max_tail_latency_increase"] is None
    assert cli("ab", "finalize", "a", "rollback").exit_code == 0
    on = cli("ab", "start", "b", "--model-type", "gnn", "--treatment", "1.2.0",
             "--max-tail-latency-increase", "0.02", "--json").json()
    assert on["tail_latency"] is True and on["max_tail_latency_increase"] == 0.02
    assert on["tail_latency_ms"] is None and on["tail_latency_source"] is None
    evaluation = cli("ab", "evaluate", "b", "--json").json()
    entry = evaluation["metrics"]["guardrails"]["tail_latency"]
    assert entry["status"] == "pending" and entry["margin"] == 0.02
    text = cli("ab", "evaluate", "b").stdout
    assert "tail latency: pending (set from the first day's control requests, 1.0 days left)" in text
    bad = cli("ab", "start", "c", "--model-type", "gnn", "--treatment", "1.2.0",
              "--max-tail-latency-increase", "2")
    assert bad.exit_code == 1 and bad.stderr.startswith("error:")


def test_a_running_test_from_an_older_version_keeps_it_off(tmp_path: Path) -> None:
    import yaml

    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.init(tmp_path / "p")
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="m.pt"))
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    registry = project.root / "registry.yaml"
    doc = yaml.safe_load(registry.read_text())
    for key in ("tail_latency", "max_tail_latency_increase", "tail_latency_ms",
                "tail_latency_source", "tail_latency_requests"):
        del doc["ab_tests"]["t"][key]  # as an mlops without the guardrail wrote it
    registry.write_text(yaml.safe_dump(doc))
    reopened = Project.open(project.root)
    assert reopened.ab.get_test("t").tail_latency is False
    for i in range(30):
        reopened.ab.record_result("t", "control", 10.0 * i, 0.8, user_id=f"u{i}")
    assert "tail_latency" not in reopened.ab.evaluate_test("t").metrics["guardrails"]


def test_the_counts_are_cached_and_read_only_what_is_new(tmp_path: Path) -> None:
    log = tmp_path / "ab.jsonl"
    keys = ("control", "treatment")

    def rows(times: list[float], user: str | None) -> list[dict[str, Any]]:
        extra = {"user_id": user} if user else {}
        return [{"variant": "control", "inference_time_ms": t, "confidence": 0.5,
                 "ts": "2026-11-01T00:00:00.000000Z", **extra} for t in times]

    write_log(log, rows([50.0, 150.0], "a"))
    assert tail_counts(log, 100.0, keys)["control"].slow == 1
    cache = tmp_path / ".ab.jsonl.tail.json"
    assert cache.exists()
    with log.open("ab") as f:
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in rows([300.0, 20.0], None)))
    again = tail_counts(log, 100.0, keys)["control"]
    # a (1 of 2) and the anonymous requests (1 of 2)
    assert (again.requests, again.slow, again.anonymous, again.users.users) == (4, 2, 2, 1)
    assert tail_counts(log, 10.0, keys)["control"].slow == 4  # another tau: not the cache
    write_log(log, rows([150.0, 150.0], "a"))  # rewritten at the same size: recounted
    assert tail_counts(log, 100.0, keys)["control"].slow == 2


def test_evaluate_says_which_threshold_and_source_it_used() -> None:
    from mlops_cli.cli.ab_cmds import tail_line

    entry = {"threshold_ms": 131.25, "source": "first_day", "threshold_requests": 1332,
             "share": {"control": 0.05, "treatment": 0.129}, "ci": [0.05, 0.11],
             "alpha": 0.05 / 3, "status": "judged", "note": None}
    assert tail_line(entry) == (
        "tail latency: requests over 131.2 ms (control p95 from day one, 1,332 requests): "
        "control 5.00%, treatment 12.90%, difference [+0.0500, +0.1100] at alpha 0.0167"
    )


def test_the_ab_defaults_turn_it_off_or_give_a_margin(tmp_path: Path) -> None:
    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.init(tmp_path / "p")
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="m.pt"))
    assert project.ab.start_test(ABTestConfig("a", "gnn", treatment_version="1.1.0")).tail_latency
    project.ab.finalize_test("a", "rollback")
    project.set_setting("ab.defaults.tail_latency", "false")
    project.set_setting("ab.defaults.max_tail_latency_increase", "0.02")
    test = project.ab.start_test(ABTestConfig("b", "gnn", treatment_version="1.2.0"))
    assert (test.tail_latency, test.max_tail_latency_increase) == (False, 0.02)
