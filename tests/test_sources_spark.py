"""Sources through Spark in local mode (one session for the run): the same numbers as the
project's log and as DuckDB. Few tests on purpose: a session costs ~20 s to start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import ABTestConfig, Project
from mlops_cli.errors import ValidationError
from mlops_cli.registry import ModelVersion
from mlops_cli.sources import Source, ab_sums_of

from .sources_data import (
    T0,
    drift_project,
    drift_rows,
    jsonl,
    requests,
    same_numbers,
    with_history,
    write_parquet,
)

pytestmark = pytest.mark.spark


def _evaluation(project: Project, name: str) -> dict[str, Any]:
    doc = project.ab.evaluate_test(name).to_dict()
    doc.pop("test")
    doc["recommendation"] = doc["recommendation"].replace(name, "X")
    return doc


def test_spark_duckdb_and_the_project_log_give_the_same_decision(
    spark_session: Any, tmp_path: Path
) -> None:
    cols = requests(n=4000, users=300)
    path = write_parquet(cols, tmp_path / "lake" / "r.parquet")
    now = [T0]
    Project.init(tmp_path / "proj")
    project = Project.open(tmp_path / "proj", clock=lambda: now[0])
    for model_type in ("own", "duck", "spark"):
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion(model_type, v, model_path="m"))
    sources = {"duck": Source("duckdb", path=str(path)), "spark": Source("spark", path=str(path))}
    for name in ("own", "duck", "spark"):
        config = ABTestConfig(
            name=name, model_type=name, treatment_version="1.1.0", treatment_traffic_pct=50.0,
            duration_days=2.0,
        )
        project.ab.start_test(config, sources.get(name))
    project.ab.record_batch("own", jsonl(cols))
    now[0] = T0 + timedelta(days=3)
    own, duck, spark = (_evaluation(project, n) for n in ("own", "duck", "spark"))
    assert spark["metrics"]["guardrails"]["tail_latency"]["status"] == "judged"
    assert same_numbers(own, spark) == [] and same_numbers(duck, spark) == []
    tau = project.ab.get_test("own").tail_latency_ms
    assert project.ab.get_test("spark").tail_latency_ms == pytest.approx(tau, rel=1e-12)


def test_spark_leaves_out_rows_stamped_before_the_test_started(
    spark_session: Any, tmp_path: Path
) -> None:
    cols = requests(n=3000, users=300)
    path = write_parquet(with_history(cols), tmp_path / "lake" / "r.parquet")
    now = [T0]
    Project.init(tmp_path / "proj")
    project = Project.open(tmp_path / "proj", clock=lambda: now[0])
    for model_type in ("own", "spark"):
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion(model_type, v, model_path="m"))
    for name in ("own", "spark"):
        config = ABTestConfig(
            name=name, model_type=name, treatment_version="1.1.0", treatment_traffic_pct=50.0,
            duration_days=2.0,
        )
        project.ab.start_test(config, Source("spark", path=str(path)) if name == "spark" else None)
    project.ab.record_batch("own", jsonl(cols))
    now[0] = T0 + timedelta(days=3)
    own, spark = (_evaluation(project, n) for n in ("own", "spark"))
    assert spark["requests"] == 3000
    assert spark["metrics"]["guardrails"]["tail_latency"]["source"] == "first_day"
    assert same_numbers(own, spark) == []


def test_spark_table_drift_window_matches_the_project_log(
    spark_session: Any, tmp_path: Path
) -> None:
    cols = drift_rows(reference=1000, production=3000)
    path = write_parquet(cols, tmp_path / "d.parquet")
    spark_session.read.parquet(str(path)).createOrReplaceTempView("predictions")
    project = drift_project(tmp_path / "proj", cols)
    project.drift_detector("gnn", "1.1.0").set_source(
        Source(
            "spark", table="predictions", filter={"stream": "drift/gnn/1.0.0/production"},
            reference={"stream": "drift/gnn/1.0.0/reference"},
        )
    )
    docs = []
    for v in ("1.0.0", "1.1.0"):
        doc = project.drift_detector("gnn", v).check(window=1001).to_dict()
        for key in ("model_version", "checked_at", "hooks"):
            doc.pop(key, None)
        docs.append(doc)
    assert docs[1]["n_window"] == 1001 and docs[1]["status"] == "active"
    assert same_numbers(docs[0], docs[1]) == []


def test_spark_counts_rows_without_a_ts_and_out_of_range(spark_session: Any, tmp_path: Path) -> None:
    cols = requests(n=200)
    cols["ts"][4] = None
    cols["variant"][4] = "control"
    cols["confidence"][9] = 1.5
    path = write_parquet(cols, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match="1 row of control without a ts") as caught:
        ab_sums_of(Source("spark", path=str(path)), None, since="2026-03-02T09:00:00Z")
    assert "confidence outside [0, 1]" in str(caught.value)


def test_spark_missing_table_or_column_is_a_clean_error(spark_session: Any, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no_such_table"):
        ab_sums_of(Source("spark", table="no_such_table"), None)
    path = write_parquet(requests(n=50), tmp_path / "r.parquet", rename={"variant": "arm"})
    with pytest.raises(ValidationError, match="no column 'variant'"):
        ab_sums_of(Source("spark", path=str(path)), None)
