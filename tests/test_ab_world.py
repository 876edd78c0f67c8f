"""The simulated world of benchmarks/ab_decisions.py is the one DESIGN section 14 pins."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy.stats import lognorm


def bench() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "ab_decisions.py"
    spec = importlib.util.spec_from_file_location("ab_decisions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


B = bench()
WORLDS = [B.draw(7, r) for r in range(3)]


def same_user_correlation(world: object, values: np.ndarray) -> float:
    """Correlation of a user's first two requests (users with at least two)."""
    user = world.user  # type: ignore[attr-defined]
    order = np.argsort(user, kind="stable")
    starts = np.searchsorted(user[order], np.arange(B.USERS))
    counts = world.counts  # type: ignore[attr-defined]
    two = starts[counts >= 2]
    return float(np.corrcoef(values[order][two], values[order][two + 1])[0, 1])


def test_users_and_requests() -> None:
    for world in WORLDS:
        assert world.counts.size == 5000 and world.user.size == world.counts.sum()
    # 1 + floor(LogNormal(1.2, 1.5)): the top 1% of users send about 19% of the requests
    shares = [np.sort(w.counts)[-50:].sum() / w.counts.sum() for w in WORLDS]
    assert float(np.mean(shares)) == pytest.approx(0.19, abs=0.04)
    # arrivals uniform over 14 days
    days = np.bincount(np.concatenate([w.day for w in WORLDS]), minlength=14)
    assert days.size == 14 and np.allclose(days / days.sum(), 1 / 14, atol=0.004)


def test_confidence_latency_and_errors() -> None:
    world = WORLDS[0]
    aa = B.requests(world, B.SCENARIOS[0], 50.0)
    assert aa.confidence.mean() == pytest.approx(0.80, abs=0.005)
    assert aa.confidence.std() == pytest.approx(0.10, abs=0.004)
    assert same_user_correlation(world, aa.confidence) == pytest.approx(0.3, abs=0.05)
    assert aa.ms.mean() == pytest.approx(100, abs=1.5) and aa.ms.std() == pytest.approx(30, abs=1)
    assert same_user_correlation(world, aa.ms) == pytest.approx(0.3, abs=0.05)
    assert aa.error.mean() == pytest.approx(0.02, abs=0.002)
    assert aa.treated.mean() == pytest.approx(0.5, abs=0.05)


def test_scenarios_change_the_treatment_only() -> None:
    world = WORLDS[1]
    aa = B.requests(world, B.SCENARIOS[0], 10.0)
    t = aa.treated
    gain = B.requests(world, B.SCENARIOS[1], 10.0)
    assert np.array_equal(gain.confidence[~t], aa.confidence[~t])
    assert gain.confidence[t].mean() - aa.confidence[t].mean() == pytest.approx(0.03, abs=0.002)
    errors = B.requests(world, B.SCENARIOS[2], 10.0)
    assert errors.error[t].mean() == pytest.approx(0.06, abs=0.01)
    assert np.array_equal(errors.error[~t], aa.error[~t])
    slow = B.requests(world, B.SCENARIOS[3], 10.0)
    positive = aa.ms[t] > 0  # latency is clipped at 0 (a 3.3 sd event)
    assert np.allclose(slow.ms[t][positive] - aa.ms[t][positive], 60.0)


def test_tail_regression_holds_the_mean_and_moves_the_p95_share() -> None:
    # lognormal sigma 0.3 -> 0.512, mean 100: the share above the control's p95 is 5% -> 12.9%
    p95 = lognorm.ppf(0.95, 0.3, scale=100 * math.exp(-0.045))
    assert lognorm.sf(p95, 0.512, scale=100 * math.exp(-(0.512**2) / 2)) == pytest.approx(
        0.129, abs=0.001
    )
    world = WORLDS[2]
    tail = B.requests(world, B.SCENARIOS[4], 50.0)
    c, t = tail.ms[~tail.treated], tail.ms[tail.treated]
    assert c.mean() == pytest.approx(100, abs=1.5) and t.mean() == pytest.approx(100, abs=2.5)
    assert (c > p95).mean() == pytest.approx(0.05, abs=0.01)
    assert (t > p95).mean() == pytest.approx(0.129, abs=0.015)


def test_peers_roll_back_tripled_errors_at_once() -> None:
    # errors 2% -> 6% at a 50% split: about 1,900 requests a day an arm, a 4-point difference
    # of about 8 standard errors on day 1 for the per-request test, and far more by day 14
    world = WORLDS[0]
    reqs = B.requests(world, B.SCENARIOS[2], 50.0)
    assert B.original_rule(world, reqs) == ("harm", 1)
    assert B.welch_day14(world, reqs) == "harm"


def test_peers_welch_tests_agree_with_scipy() -> None:
    from scipy.stats import ttest_ind

    world = WORLDS[1]
    reqs = B.requests(world, B.SCENARIOS[1], 50.0)
    stop = int(np.searchsorted(world.day, 1))  # day 1's requests
    t = reqs.treated[:stop]
    p = ttest_ind(reqs.confidence[:stop][t], reqs.confidence[:stop][~t], equal_var=False).pvalue
    diff, p_bench = B.welch(reqs.confidence[:stop][~t], reqs.confidence[:stop][t])
    assert p_bench == pytest.approx(p, rel=1e-9)
    stops = np.searchsorted(world.day, np.arange(1, 15))
    _, daily = B.daily_welch(reqs.confidence, reqs.treated, stops)
    assert daily[0] == pytest.approx(p, rel=1e-6)  # from running sums
    assert diff == pytest.approx(
        reqs.confidence[:stop][t].mean() - reqs.confidence[:stop][~t].mean()
    )
