"""The tail-latency guardrail in the calibration world (`benchmarks/tail_latency.py`, fixed
seeds, fewer runs than the benchmark's 500): a tail regression with a confidence gain is
rolled back for tail harm in at least 90% of runs, an A/A test in at most 2%."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow
RUNS = 200


def benchmark() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "tail_latency.py"
    spec = importlib.util.spec_from_file_location("tail_latency_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("history", [True, False], ids=["champion-history", "first-day"])
def test_a_tail_regression_is_rolled_back_and_aa_is_not(history: bool) -> None:
    bench = benchmark()
    regression = bench.scenario(RUNS, 11, bench.REGRESSED_SIGMA, bench.GAIN, history, 50.0)
    assert regression["tail"] >= 0.90, regression
    aa = bench.scenario(RUNS, 12, bench.CONTROL_SIGMA, 0.0, history, 50.0)
    assert aa["tail"] <= 0.02, aa


def test_the_world_moves_the_share_above_p95_from_5_to_12_9_percent() -> None:
    # lognormal with the mean held: ln X = ln 100 - sigma^2 / 2 + sigma Z. The control's p95 is
    # at Z = 1.6449; the treatment exceeds it when Z > (0.3 * 1.6449 - 0.045 + 0.1311) / 0.512
    from scipy.stats import norm

    bench = benchmark()
    s0, s1 = bench.CONTROL_SIGMA, bench.REGRESSED_SIGMA
    z = norm.ppf(0.95)
    share = norm.sf((s0 * z - s0 * s0 / 2 + s1 * s1 / 2) / s1)
    assert share == pytest.approx(0.129, abs=0.0005)
