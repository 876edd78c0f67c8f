"""Decision quality of `mlops_cli.decision` with users as units, through the benchmark's simulation.

Fixed seeds and fewer runs than `python benchmarks/ab_peeking.py` (500), so each figure is
deterministic; every target the benchmark states must hold.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow
RUNS = 200


def benchmark() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "ab_peeking.py"
    spec = importlib.util.spec_from_file_location("ab_peeking", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "section",
    [
        ("aa", (10.0, RUNS, 1)),
        ("aa", (50.0, RUNS, 2)),
        ("coverage", (RUNS, 3)),
        ("harm", (RUNS, 4)),
        ("power", (RUNS, 7)),
    ],
    ids=["aa-10", "aa-50", "coverage", "harm", "power"],
)
def test_benchmark_targets_hold(section: tuple[str, tuple[float, ...]]) -> None:
    bench = benchmark()
    name, args = section
    getattr(bench, name)(*args)
    missed = [row for row in bench.ROWS if row[3] == "MISSED"]
    assert [row for row in bench.ROWS if row[3] == "ok"] and not missed, missed
