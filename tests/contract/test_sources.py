"""A test whose requests come from a source, on each store: the source kept on the test's
record (reopened, finalized into the archive), recording into it refused, and the decision
the same as the store's own log of the same requests."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import ABTestConfig, Project
from mlops_cli.errors import ConflictError
from mlops_cli.registry import ModelVersion
from mlops_cli.sources import Source
from mlops_cli.sources.export import export_parquet

from ..sources_data import T0 as DATA_T0
from ..sources_data import jsonl, requests, same_numbers, write_parquet
from .conftest import Clock, reopen

COMMON = dict(treatment_version="1.1.0", treatment_traffic_pct=50.0, duration_days=1.0)


def own_test(project: Project, clock: Clock, cols: dict[str, Any]) -> None:
    """Test `own` on gnn with the requests in the project's log, started at DATA_T0; a second
    model type `other` to start a sourced test on."""
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("other", v, model_path="m.pt"))
    clock.now = DATA_T0
    project.ab.start_test(ABTestConfig(name="own", model_type="gnn", **COMMON))  # type: ignore[arg-type]
    project.ab.record_batch("own", jsonl(cols))


def test_source_kept_with_the_test_and_same_decision(
    project: Project, clock: Clock, tmp_path: Path
) -> None:
    cols = requests(n=3000, users=300)
    path = write_parquet(cols, tmp_path / "lake" / "r.parquet")
    own_test(project, clock, cols)
    source = Source("duckdb", path=str(path))
    project.ab.start_test(ABTestConfig(name="lake", model_type="other", **COMMON), source)  # type: ignore[arg-type]
    with pytest.raises(ConflictError, match="reads its requests from a source"):
        project.ab.record_result("lake", "control", 1.0, 0.5)
    clock.now = DATA_T0 + timedelta(days=3)
    project.flush()
    own = project.ab.evaluate_test("own").to_dict()
    lake = project.ab.evaluate_test("lake").to_dict()
    own.pop("test"), lake.pop("test")
    lake["recommendation"] = lake["recommendation"].replace("lake", "own")
    assert same_numbers(own, lake) == []
    again = reopen(project, clock)
    assert again.ab.get_test("lake").source == source.to_doc()
    assert again.ab.get_test("own").source is None
    again.ab.finalize_test("lake", "rollback", force=True)
    archived = reopen(project, clock).ab.get_test("lake")
    assert archived.status == "rolled_back" and archived.source == source.to_doc()


def test_drift_source_kept_on_the_version_and_same_check(
    project: Project, clock: Clock, tmp_path: Path
) -> None:
    from ..sources_data import drift_rows, sample_lines

    cols = drift_rows(reference=500, production=1500)
    path = write_parquet(cols, tmp_path / "d.parquet")
    own = project.drift_detector("gnn", "1.0.0")
    own.add_reference(sample_lines(cols, "reference"))
    own.record_batch(sample_lines(cols, "production"))
    source = Source(
        "duckdb", path=str(path), filter={"stream": "drift/gnn/1.0.0/production"},
        reference={"stream": "drift/gnn/1.0.0/reference"},
    )
    project.drift_detector("gnn", "1.1.0").set_source(source)
    project.flush()
    again = reopen(project, clock)
    assert again.store.read().version("gnn", "1.1.0").drift_source == source.to_doc()
    assert again.store.read().version("gnn", "1.0.0").drift_source is None
    a = again.drift_detector("gnn", "1.0.0").check(window=700).to_dict()
    b = again.drift_detector("gnn", "1.1.0").check(window=700).to_dict()
    for doc in (a, b):
        for key in ("model_version", "checked_at", "hooks"):
            doc.pop(key, None)
    assert same_numbers(a, b) == []
    again.drift_detector("gnn", "1.1.0").set_source(None)
    assert reopen(project, clock).store.read().version("gnn", "1.1.0").drift_source is None


def test_export_then_declare_as_source_gives_the_same_decision(
    project: Project, clock: Clock, tmp_path: Path
) -> None:
    import duckdb

    cols = requests(n=3000, users=300)
    own_test(project, clock, cols)
    project.flush()
    out = tmp_path / "lake"
    done = export_parquet(project.store, out)
    assert done.records["ab/own"] == 3000
    # one folder per stream and day, the name encoded as one segment
    assert sorted(p.name for p in (out / "stream=ab%2Fown").iterdir()) == [
        "day=2026-03-02", "day=2026-03-03", "day=2026-03-04", "day=2026-03-05"
    ]
    source = Source("duckdb", path=str(out), filter={"stream": "ab/own"})
    project.ab.start_test(ABTestConfig(name="lake", model_type="other", **COMMON), source)  # type: ignore[arg-type]
    clock.now = DATA_T0 + timedelta(days=3)
    own = project.ab.evaluate_test("own").to_dict()
    lake = project.ab.evaluate_test("lake").to_dict()
    own.pop("test"), lake.pop("test")
    lake["recommendation"] = lake["recommendation"].replace("lake", "own")
    assert same_numbers(own, lake) == []
    seqs = duckdb.sql(
        f"SELECT min(seq), max(seq), count(DISTINCT seq) FROM read_parquet('{out}/**/*.parquet', "
        "hive_partitioning = false) WHERE stream = 'ab/own'"
    ).fetchall()
    assert seqs == [(0, 2999, 3000)]
