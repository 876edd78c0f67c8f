"""The cached sums of a log notice the log changed under them (issue 12, item 11)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mlops_cli import ABTestConfig, ModelVersion, Project


def test_a_line_rewritten_in_place_is_not_counted_from_the_cache(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="m"))
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    lines = [
        {"variant": "control", "inference_time_ms": 100.0, "confidence": 0.5, "error": False}
        for _ in range(1000)
    ]
    project.ab.record_batch("t", b"".join(orjson.dumps(r) + b"\n" for r in lines))
    assert project.ab.requests("t").arm("control").confidence_sum == 500.0  # cached now
    log = project.ab_log("t")
    data = log.read_bytes()
    middle = data.index(b'"confidence":0.5', len(data) // 2)
    with open(log, "r+b") as f:  # same length, same inode, in the middle of the log
        f.seek(middle)
        f.write(b'"confidence":0.9')
    assert project.ab.requests("t").arm("control").confidence_sum == pytest.approx(500.4)
