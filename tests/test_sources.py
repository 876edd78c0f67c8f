"""Sources through DuckDB: the declaration, the one-query sums, decisions equal to the
project's own log (1e-9), and clean errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_cli import Project
from mlops_cli.ab_testing import ABTestConfig
from mlops_cli.errors import ConflictError, ValidationError
from mlops_cli.registry import ModelVersion
from mlops_cli.sources import Source, ab_sums_of, drift_samples, load

from .conftest import Run, assert_one_error_line, snapshot
from .sources_data import (
    T0,
    close,
    drift_project,
    drift_rows,
    expected_sums,
    jsonl,
    requests,
    same_numbers,
    sample_lines,
    with_history,
    write_parquet,
)

Cli = Callable[..., Run]


def _yaml(tmp_path: Path, text: str, name: str = "source.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the declaration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("engine: sqlite\npath: x.parquet\n", ["engine must be duckdb or spark"]),
        ("engine: duckdb\n", ["exactly one of `path` and `table`"]),
        ("engine: duckdb\npath: a\ntable: b\n", ["exactly one of"]),
        ("engine: duckdb\ntable: db.t\n", ["`table` needs engine spark"]),
        ("engine: duckdb\npath: a\nmaster: local[2]\n", ["`master` is a spark setting"]),
        ("engine: spark\ntable: 'x; DROP TABLE y'\n", ["table must be a name"]),
        ("engine: duckdb\npath: a\nwhere: x = 1\n", ["unknown key 'where'"]),
        ("engine: duckdb\npath: a\ncolumns: {colour: c}\n", ["unknown name 'colour'"]),
        ("engine: duckdb\npath: a\nfilter: {arm: [1, 2]}\n", ["filter.arm must be a text"]),
        ("engine: duckdb\npath: a\npath: b\n", ["duplicate key"]),
        ("engine: duckdb\npath: a\nthreads: 0\n", ["threads must be"]),
        ("engine: duckdb\npath: a\nmemory_limit: lots\n", ["memory_limit must be"]),
    ],
)
def test_a_bad_declaration_is_one_error_line(
    cli: Cli, project: Project, tmp_path: Path, text: str, words: list[str]
) -> None:
    before = snapshot(project.root)
    assert_one_error_line(cli("source", "check", str(_yaml(tmp_path, text))), *words)
    assert snapshot(project.root) == before


def test_alias_expansion_is_bounded(cli: Cli, tmp_path: Path) -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    assert_one_error_line(cli("source", "check", str(_yaml(tmp_path, laughs))), "alias")


def test_relative_path_is_resolved_beside_the_file_and_kept_as_plain_data(tmp_path: Path) -> None:
    source = load(_yaml(tmp_path, "engine: duckdb\npath: lake/*.parquet\nfilter: {exp: 3}\n"))
    assert source.path == str(tmp_path / "lake" / "*.parquet")
    assert Source.from_doc(source.to_doc()) == source


def test_source_check_reports_rows_columns_and_time_range(cli: Cli, tmp_path: Path) -> None:
    cols = requests(n=500)
    write_parquet(cols, tmp_path / "lake" / "r.parquet", rename={"variant": "arm"})
    text = "engine: duckdb\npath: lake/r.parquet\ncolumns: {variant: arm}\n"
    doc = cli("source", "check", str(_yaml(tmp_path, text)), "--json").json()
    assert doc["rows"] == 500 and doc["ab_ready"] and not doc["drift_ready"]
    assert doc["mapped"]["variant"] == "arm" and doc["mapped"]["seq"] == "seq"
    assert {"name": "arm", "type": "VARCHAR"} in doc["columns"]
    assert doc["ts_min"].startswith(min(cols["ts"]).strftime("%Y-%m-%dT%H:%M:%S"))
    assert doc["ts_max"].startswith(max(cols["ts"]).strftime("%Y-%m-%dT%H:%M:%S"))


def test_filter_values_are_bound_never_spliced(tmp_path: Path) -> None:
    cols = requests(n=300)
    cols["experiment"] = ["a' OR '1'='1"] * 100 + ["b"] * 200
    write_parquet(cols, tmp_path / "r.parquet")
    hostile = Source("duckdb", path=str(tmp_path / "r.parquet"), filter={"experiment": "a' OR '1'='1"})
    sums = ab_sums_of(hostile, None)
    assert sum(a.moments.n for a in sums.arms.values()) == 100  # the literal value, matched


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"columns": {"variant": "arm"}}, ["no column 'arm'", "columns.variant"]),
        ({"filter": {"nothere": 1}}, ["no column 'nothere' to filter on"]),
        ({"columns": {"confidence": "variant"}}, ["'variant' (confidence) is VARCHAR", "number"]),
        ({"path": "/nonexistent/*.parquet"}, ["/nonexistent"]),
    ],
)
def test_missing_column_wrong_type_or_no_files_is_one_error_line(
    cli: Cli, project: Project, tmp_path: Path, change: dict[str, Any], words: list[str]
) -> None:
    write_parquet(requests(n=100), tmp_path / "r.parquet")
    doc = {"engine": "duckdb", "path": str(tmp_path / "r.parquet"), **change}
    import yaml

    file = _yaml(tmp_path, yaml.safe_dump(doc))
    before = snapshot(project.root)
    assert_one_error_line(cli("source", "check", str(file)), *words)
    assert snapshot(project.root) == before


def test_missing_extra_is_one_error_line(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "duckdb", None)  # as if not installed
    file = _yaml(tmp_path, f"engine: duckdb\npath: {tmp_path}/r.parquet\n")
    assert_one_error_line(cli("source", "check", str(file)), "needs the duckdb package", ".[duckdb]")


def test_invalid_rows_are_an_error_with_their_count(tmp_path: Path) -> None:
    cols = requests(n=200)
    cols["confidence"][:3] = 1.5
    cols["variant"][10] = "other"
    write_parquet(cols, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match="not valid requests") as caught:
        ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), None)
    assert "1 row of variant 'other'" in str(caught.value)
    assert "a control confidence outside [0, 1]" in str(caught.value) or (
        "a treatment confidence outside [0, 1]" in str(caught.value)
    )


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("confidence", float("nan"), "confidence outside"),
        ("confidence", -1e-9, "confidence outside"),
        ("inference_time_ms", 1e7 + 1, "inference_time_ms outside"),
        ("inference_time_ms", float("inf"), "inference_time_ms outside"),
        ("error", 2, "error outside"),
    ],
)
def test_each_bound_is_checked(tmp_path: Path, column: str, value: Any, words: str) -> None:
    cols = requests(n=100)
    if column == "error":
        cols["error"] = cols["error"].astype(int)
    cols[column][7] = value
    write_parquet(cols, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match=words):
        ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), None)


def test_the_bounds_themselves_are_valid(tmp_path: Path) -> None:
    cols = requests(n=100)
    cols["error"] = cols["error"].astype(int)
    cols["confidence"][:2] = (0.0, 1.0)
    cols["inference_time_ms"][:2] = (0.0, 1e7)
    write_parquet(cols, tmp_path / "r.parquet")
    sums = ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), None)
    assert sum(a.moments.n for a in sums.arms.values()) == 100


def test_a_missing_value_is_not_a_valid_request(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(write_parquet(requests(n=100), tmp_path / "r.parquet"))
    times = table.column("inference_time_ms").to_pylist()
    times[5] = None
    table = table.set_column(3, "inference_time_ms", pa.array(times, pa.float64()))
    pq.write_table(table, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match=r"inference_time_ms outside .* or missing"):
        ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), None)


def _ab_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every A/B sums query DuckDB runs from now on."""
    from mlops_cli.sources.engines.duckdb import DuckDBEngine

    seen: list[str] = []
    rows = DuckDBEngine.rows

    def spy(self: DuckDBEngine, query: Any) -> list[tuple[Any, ...]]:
        if "per_user" in query.sql:
            seen.append(query.sql)
        return rows(self, query)

    monkeypatch.setattr(DuckDBEngine, "rows", spy)
    return seen


def test_footers_that_prove_every_value_in_range_leave_the_check_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _ab_queries(monkeypatch)
    cols = requests(n=3000)
    cols["error"] = cols["error"].astype(int)
    cols["confidence"][:2] = (0.0, 1.0)  # the bounds themselves are in range
    cols["inference_time_ms"][:2] = (0.0, 1e7)
    write_parquet(cols, tmp_path / "r.parquet")
    sums = ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), 120.0)
    assert "max(abs(" not in seen[-1]  # no per-row range check in the query
    want = expected_sums(cols, 120.0)
    assert all(close(sums.arms[a].moments.confidence_sum, want[a]["confidence_sum"]) for a in want)
    # NaN is left out of Parquet statistics: the footers show [0, 1], the sum shows the NaN
    cols["confidence"][7] = float("nan")
    write_parquet(cols, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match=r"confidence outside \[0, 1\] or missing"):
        ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), 120.0)
    assert "max(abs(" not in seen[-1]


@pytest.mark.parametrize("statistics", [True, False])
def test_footers_out_of_range_or_without_statistics_keep_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statistics: bool
) -> None:
    import pyarrow.parquet as pq

    seen = _ab_queries(monkeypatch)
    good = requests(n=500, seed=1)
    bad = requests(n=500, seed=2)
    bad["confidence"][3] = 1.5
    write_parquet(good, tmp_path / "lake" / "a.parquet")
    path = write_parquet(bad, tmp_path / "lake" / "b.parquet")
    if not statistics:  # the bad file's footer says nothing: the good one's cannot vouch for it
        pq.write_table(pq.read_table(path), path, write_statistics=False)
    assert pq.ParquetFile(path).metadata.row_group(0).column(2).is_stats_set is statistics
    with pytest.raises(ValidationError, match=r"confidence outside \[0, 1\] or missing"):
        ab_sums_of(Source("duckdb", path=str(tmp_path / "lake")), None)
    assert "max(abs(" in seen[-1]


def test_an_integer_error_column_is_proven_by_its_footer_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _ab_queries(monkeypatch)
    cols = requests(n=300)
    cols["error"] = cols["error"].astype(int)
    cols["error"][5] = 2
    write_parquet(cols, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match="error outside"):
        ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), None)
    assert "max(abs(coalesce(err" in seen[-1]


@pytest.mark.parametrize("since", [None, "2026-03-02T09:00:00Z"])
def test_a_row_without_a_ts_is_not_a_valid_request(tmp_path: Path, since: str | None) -> None:
    # never counted silently (no time bound) nor left out silently (by `ts >= since`)
    cols = requests(n=300)
    cols["ts"][4] = None
    cols["variant"][4] = "control"
    write_parquet(cols, tmp_path / "r.parquet")
    with pytest.raises(ValidationError, match="1 row of control without a ts"):
        ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), None, since=since)


# -- the sums, against numpy -------------------------------------------------------------------


@pytest.mark.parametrize("anonymous", [False, True])
def test_one_query_gives_the_sums_numpy_gives(tmp_path: Path, anonymous: bool) -> None:
    cols = requests(anonymous=anonymous)
    write_parquet(cols, tmp_path / "r.parquet")
    tau = 120.0
    sums = ab_sums_of(Source("duckdb", path=str(tmp_path / "r.parquet")), tau)
    want = expected_sums(cols, tau)
    assert sums.unit == ("request" if anonymous else "user")
    for arm in ("control", "treatment"):
        got, w = sums.arms[arm], want[arm]
        m = got.moments
        for name, value in (
            ("n", m.n), ("errors", m.errors), ("confidence_sum", m.confidence_sum),
            ("confidence_sum_squares", m.confidence_sum_squares), ("time_sum", m.time_sum),
            ("time_sum_squares", m.time_sum_squares), ("slow", got.tail.slow),
        ):
            assert close(value, w[name]), (arm, name, value, w[name])
        if anonymous:
            continue
        assert got.confidence.users == w["users"] and got.tail.users.users == w["users"]
        for ratio, key in (
            (got.errors, "errors"), (got.confidence, "confidence"),
            (got.inference_time_ms, "time"), (got.tail.users, "slow"),
        ):
            assert close(ratio.m_sum_squares, w[f"{key}_m2"]), (arm, key)
            assert close(ratio.m_d_sum_of_products, w[f"{key}_md"]), (arm, key)
            assert close(ratio.d_sum_squares, w["d_sum_squares"]), (arm, key)


# -- A/B tests: the project's log and the same requests as Parquet -----------------------------


def _project(tmp_path: Path, now: list[Any]) -> Project:
    Project.init(tmp_path / "proj")
    project = Project.open(tmp_path / "proj", clock=lambda: now[0])
    for model_type in ("gnn", "lake"):
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion(model_type, v, model_path="m.pt"))
    return project


def _config(name: str, model_type: str = "gnn") -> ABTestConfig:
    return ABTestConfig(
        name=name, model_type=model_type, treatment_version="1.1.0",
        treatment_traffic_pct=50.0, duration_days=2.0, min_requests=1000,
    )


def same_decision(project: Project, logged: str, lake: str) -> dict[str, Any]:
    own = project.ab.evaluate_test(logged).to_dict()
    theirs = project.ab.evaluate_test(lake).to_dict()
    own.pop("test"), theirs.pop("test")
    theirs["recommendation"] = theirs["recommendation"].replace(lake, logged)
    assert same_numbers(own, theirs) == []
    return theirs


@pytest.mark.parametrize("anonymous", [False, True])
def test_parquet_source_gives_the_same_decision_as_the_project_log(
    tmp_path: Path, anonymous: bool
) -> None:
    cols = requests(anonymous=anonymous)
    path = write_parquet(cols, tmp_path / "lake" / "r.parquet")
    now = [T0]
    project = _project(tmp_path, now)
    project.ab.start_test(_config("logged"))
    project.ab.record_batch("logged", jsonl(cols))
    project.ab.start_test(_config("from_lake", "lake"), Source("duckdb", path=str(path)))
    pending = same_decision(project, "logged", "from_lake")  # tau pending on day one
    assert pending["metrics"]["guardrails"]["tail_latency"]["status"] == "pending"
    now[0] = T0 + timedelta(days=3)  # tau from the first day's control requests, then judged
    doc = same_decision(project, "logged", "from_lake")
    tail = doc["metrics"]["guardrails"]["tail_latency"]
    assert tail["status"] == "judged" and tail["source"] == "first_day"
    assert doc["unit"] == ("request" if anonymous else "user")
    assert doc["requests"] == 6000
    assert doc["decision"] == "rollback" and doc["rollback_cause"] == "harm"  # the slower tail
    logged, lake = project.ab.get_test("logged"), project.ab.get_test("from_lake")
    assert lake.tail_latency_ms == logged.tail_latency_ms  # recorded in both tests
    assert lake.source == {"engine": "duckdb", "path": str(path)}
    reopened = Project.open(tmp_path / "proj").ab.get_test("from_lake")
    assert reopened.source == lake.source  # kept in registry.yaml


def test_rows_stamped_before_the_test_started_are_not_its_requests(tmp_path: Path) -> None:
    # The lake holds a day of history before the test starts at T0: it must move neither the
    # sums, nor the first-day threshold, nor the decision (the log holds only the test's).
    cols = requests()
    path = write_parquet(with_history(cols), tmp_path / "lake" / "r.parquet")
    every = ab_sums_of(Source("duckdb", path=str(path)), None)
    assert sum(a.moments.n for a in every.arms.values()) == 6600  # the history is there
    now = [T0]
    project = _project(tmp_path, now)
    project.ab.start_test(_config("logged"))
    project.ab.record_batch("logged", jsonl(cols))
    project.ab.start_test(_config("from_lake", "lake"), Source("duckdb", path=str(path)))
    now[0] = T0 + timedelta(days=3)
    doc = same_decision(project, "logged", "from_lake")
    assert doc["requests"] == 6000
    assert doc["metrics"]["guardrails"]["tail_latency"]["source"] == "first_day"
    logged, lake = project.ab.get_test("logged"), project.ab.get_test("from_lake")
    assert lake.tail_latency_ms == logged.tail_latency_ms
    assert lake.tail_latency_requests == logged.tail_latency_requests
    # the status and the list count the source's requests of the test, as the log's
    counted = project.ab.status("logged").requests
    assert sum(counted.values()) == 6000
    assert project.ab.status("from_lake").requests == counted
    listed = {t.test.name: t.requests for t in project.ab.list_tests()}
    assert listed == {"logged": counted, "from_lake": counted}


def test_record_result_into_a_source_test_is_refused(tmp_path: Path) -> None:
    path = write_parquet(requests(n=100), tmp_path / "r.parquet")
    now = [T0]
    project = _project(tmp_path, now)
    project.ab.start_test(_config("lake"), Source("duckdb", path=str(path)))
    with pytest.raises(ConflictError, match="reads its requests from a source"):
        project.ab.record_result("lake", "control", 10.0, 0.5, user_id="u1")
    with pytest.raises(ConflictError, match="reads its requests from a source"):
        project.ab.record_batch("lake", b'{"variant": "control", "inference_time_ms": 1, "confidence": 0.5}\n')
    assert project.store.count("ab/lake") == 0


def test_cli_ab_start_with_source_then_evaluate_and_record_refused(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    cols = requests(n=2000, users=200)
    later = datetime.now(timezone.utc) + timedelta(hours=1) - T0  # after the test's start
    cols["ts"] = [t + later for t in cols["ts"]]
    write_parquet(cols, tmp_path / "lake" / "r.parquet", rename={"user_id": "uid"})
    file = _yaml(tmp_path, "engine: duckdb\npath: lake/r.parquet\ncolumns: {user_id: uid}\n")
    for v in ("1.0.0", "1.1.0"):
        assert cli("register", "gnn", v, "--path", "/m").exit_code == 0
    run = cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "1.1.0",
              "--source", str(file), "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["source"]["columns"] == {"user_id": "uid"}
    doc = cli("ab", "evaluate", "t", "--json").json()
    assert doc["requests"] == 2000 and doc["unit"] == "user"
    before = snapshot(project.root)
    refused = cli("ab", "record", "t", "--variant", "control", "--inference-time-ms", "1",
                  "--confidence", "0.5")
    assert_one_error_line(refused, "reads its requests from a source")
    assert snapshot(project.root) == before


def test_cli_ab_start_with_a_bad_source_starts_nothing(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    write_parquet(requests(n=100), tmp_path / "r.parquet", rename={"variant": "arm"})
    file = _yaml(tmp_path, f"engine: duckdb\npath: {tmp_path}/r.parquet\n")
    for v in ("1.0.0", "1.1.0"):
        assert cli("register", "gnn", v, "--path", "/m").exit_code == 0
    before = snapshot(project.root)
    run = cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "1.1.0", "--source", str(file))
    assert_one_error_line(run, "no column 'variant'")
    assert snapshot(project.root) == before


# -- drift -------------------------------------------------------------------------------------



def _report(project: Project, version: str, window: int) -> dict[str, Any]:
    doc = project.drift_detector("gnn", version).check(window=window).to_dict()
    for key in ("model_version", "checked_at", "hooks"):
        doc.pop(key, None)
    return doc


@pytest.mark.parametrize("window", [1000, 1001, 1003])  # the window's start splits a second
def test_drift_window_from_a_source_gives_the_project_logs_numbers(
    tmp_path: Path, window: int
) -> None:
    cols = drift_rows()
    path = write_parquet(cols, tmp_path / "lake" / "d.parquet")
    project = drift_project(tmp_path / "proj", cols)
    source = Source(
        "duckdb", path=str(path), filter={"stream": "drift/gnn/1.0.0/production"},
        reference={"stream": "drift/gnn/1.0.0/reference"},
    )
    project.drift_detector("gnn", "1.1.0").set_source(source)
    own, lake = _report(project, "1.0.0", window), _report(project, "1.1.0", window)
    assert lake["n_window"] == window and lake["n_reference"] == 2000
    assert lake["status"] == "active" and lake["level"] != "ok"
    assert same_numbers(own, lake) == []


def test_drift_source_without_reference_uses_the_projects_reference(tmp_path: Path) -> None:
    cols = drift_rows()
    path = write_parquet(cols, tmp_path / "d.parquet")
    project = drift_project(tmp_path / "proj", cols)
    project.drift_detector("gnn", "1.1.0").add_reference(sample_lines(cols, "reference"))
    source = Source("duckdb", path=str(path), filter={"stream": "drift/gnn/1.0.0/production"})
    project.drift_detector("gnn", "1.1.0").set_source(source)
    assert same_numbers(_report(project, "1.0.0", 500), _report(project, "1.1.0", 500)) == []


def test_drift_ties_are_broken_by_seq_not_by_value(tmp_path: Path) -> None:
    # four samples in one second: the last two by seq are 3 and 4, whatever their values
    cols = {
        "prediction": np.array([9.0, 8.0, 1.0, 2.0]), "confidence": np.full(4, 0.5),
        "ts": [T0] * 4, "seq": np.arange(1, 5),
    }
    path = write_parquet(cols, tmp_path / "d.parquet")
    _, window = drift_samples(Source("duckdb", path=str(path)), None, 2)
    assert sorted(window["prediction"].tolist()) == [1.0, 2.0]


def test_drift_source_refuses_production_samples_and_off_restores(cli: Cli, project: Project, tmp_path: Path) -> None:
    cols = drift_rows(reference=200, production=300)
    write_parquet(cols, tmp_path / "d.parquet")
    file = _yaml(tmp_path, "engine: duckdb\npath: d.parquet\nfilter: {stream: drift/gnn/1.0.0/production}\n")
    assert cli("register", "gnn", "1.0.0", "--path", "/m").exit_code == 0
    run = cli("drift", "source", "gnn", "1.0.0", str(file), "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["source"]["filter"] == {"stream": "drift/gnn/1.0.0/production"}
    before = snapshot(project.root)
    refused = cli("drift", "record", "gnn", "1.0.0", "--prediction", "1", "--confidence", "0.5")
    assert_one_error_line(refused, "reads its production samples from a source")
    assert snapshot(project.root) == before
    assert cli("drift", "source", "gnn", "1.0.0", "--off").exit_code == 0
    assert cli("drift", "record", "gnn", "1.0.0", "--prediction", "1", "--confidence", "0.5").exit_code == 0
    assert_one_error_line(cli("drift", "source", "gnn", "1.0.0"), "give either a source FILE or --off")


# -- export ------------------------------------------------------------------------------------


def test_export_encodes_stream_names_and_refuses_a_used_folder(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    import duckdb

    assert cli("register", "gnn", "1.0.0+build.5", "--path", "/m").exit_code == 0
    for ms in (10.0, 20.0):
        project.registry.update_metrics("gnn", "1.0.0+build.5", ms, 0.9)
    project.flush()
    out = tmp_path / "lake"
    run = cli("store", "export", "--parquet", str(out), "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["records"]["metrics/gnn/1.0.0+build.5"] == 2
    folder = out / "stream=metrics%2Fgnn%2F1.0.0%2Bbuild.5"
    assert folder.is_dir() and len(list(folder.glob("day=*/part-0.parquet"))) == 1
    rows = duckdb.sql(
        f"SELECT stream, seq, inference_time_ms FROM read_parquet('{folder}/*/*.parquet', "
        "hive_partitioning = false) ORDER BY seq"
    ).fetchall()
    assert rows == [("metrics/gnn/1.0.0+build.5", 0, 10.0), ("metrics/gnn/1.0.0+build.5", 1, 20.0)]
    events = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{out}/stream=events/*/*.parquet', hive_partitioning = false) "
        "WHERE record LIKE '%registered%'"
    ).fetchall()
    assert events == [(1,)]
    before = snapshot(tmp_path)
    assert_one_error_line(cli("store", "export", "--parquet", str(out)), "not an empty folder")
    assert snapshot(tmp_path) == before
