"""Users as units: the delta-method ratio statistic against GrowthBook's gbstats 0.8.0 vectors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mlops_cli.stats import RatioSums, compare_ratio

DOC = json.loads((Path(__file__).parent / "data" / "ab_ratio_vectors.json").read_text())
VECTORS = DOC["vectors"]


def close(got: float, want: float) -> bool:
    if want == 0 or math.isinf(want):
        return got == want
    return abs(got - want) / abs(want) < 1e-6


@pytest.mark.parametrize("method", ["fixed", "sequential"])
@pytest.mark.parametrize("index", range(len(VECTORS)))
def test_reproduces_gbstats_ratio_vectors(index: int, method: str) -> None:
    v = VECTORS[index]
    got = compare_ratio(
        RatioSums(**v["control"]),
        RatioSums(**v["treatment"]),
        v["alpha"],
        method,
        v["sequential_tuning"],
    )
    want = v[method]
    assert close(got.estimate, v["estimate"])
    assert close(got.ci[0], want["ci"][0]) and close(got.ci[1], want["ci"][1])
    assert close(got.p_value, want["p_value"]), (got.p_value, want["p_value"])


def test_vectors_cover_every_metric_and_both_methods() -> None:
    assert {v["kind"] for v in VECTORS} == {"confidence", "latency", "errors"}
    assert len(VECTORS) >= 20 and "RatioStatistic" in DOC["source"]


def test_delta_variance_matches_a_direct_computation() -> None:
    # Var(sum M / sum D) by the delta method, written out from per-user arrays.
    rng = np.random.default_rng(3)
    d = rng.integers(1, 30, 400).astype(float)
    m = d * 0.8 + rng.normal(0, 1, 400) * np.sqrt(d)
    sums = RatioSums(400, m.sum(), (m * m).sum(), d.sum(), (d * d).sum(), (m * d).sum())
    stats = sums.arm_stats()
    r = m.sum() / d.sum()
    residual = (m - r * d) / d.mean()  # linearisation of the ratio
    assert stats.mean == pytest.approx(r)
    assert stats.variance == pytest.approx(residual.var(ddof=1), rel=1e-9)


def test_single_user_and_empty_arm_have_no_variance() -> None:
    assert RatioSums(0, 0, 0, 0, 0, 0).arm_stats().variance == 0.0
    one = RatioSums(1, 3.0, 9.0, 4.0, 16.0, 12.0).arm_stats()
    assert (one.n, one.mean, one.variance) == (1, 0.75, 0.0)


def test_agresti_caffo_pseudo_user_gives_zero_error_arms_an_interval() -> None:
    zero = RatioSums(500, 0, 0, 2500, 20000, 0)
    assert zero.arm_stats().variance == 0.0
    adjusted = zero.agresti_caffo()
    assert adjusted == RatioSums(501, 1, 1, 2502, 20004, 2)
    assert adjusted.arm_stats().variance > 0
