"""A/B tests through the Python API: the seed's flow, decision rules, assignment, recording."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from mlops_cli import (
    ABTestConfig,
    ConflictError,
    ModelVersion,
    Project,
    ValidationError,
)
from mlops_cli.ab_testing import decide
from mlops_cli.errors import StateError
from mlops_cli.summary import Moments, summarize
from tests.conftest import START, Clock


@pytest.fixture
def project(tmp_path: Path, clock: Clock) -> Project:
    """A project on the test's clock (one clock per project, passed in)."""
    return Project.init(tmp_path / "proj", clock=clock)


@pytest.fixture
def gnn(project: Project) -> Project:
    for v in ("v2.1.0", "v2.2.0", "v2.3.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path=f"/m/{v}.pt"))
    return project


def seed_config(**kw: object) -> ABTestConfig:
    base: dict[str, object] = dict(
        name="gnn_v2.2_test",
        model_type="gnn",
        control_version="v2.1.0",
        treatment_version="v2.2.0",
        treatment_traffic_pct=10,
        duration_days=7,
        min_requests=1000,
        max_error_rate_increase=0.05,
        min_confidence_improvement=0.02,
    )
    base.update(kw)
    return ABTestConfig(**base)  # type: ignore[arg-type]


def feed(
    project: Project,
    test: str,
    n: int,
    conf: tuple[float, float],
    err: tuple[float, float],
    share: float = 0.1,
    seed: int = 0,
) -> None:
    """Record n requests split by `share`, confidences N(mu, 0.1), errors Bernoulli."""
    rng = np.random.default_rng(seed)
    treated = rng.random(n) < share
    lines = []
    for t in treated:
        arm = 1 if t else 0
        lines.append(
            orjson.dumps(
                {
                    "variant": "treatment" if t else "control",
                    "inference_time_ms": float(rng.normal(100, 10)),
                    "confidence": float(np.clip(rng.normal(conf[arm], 0.1), 0, 1)),
                    "error": bool(rng.random() < err[arm]),
                }
            )
        )
    project.ab.record_batch(test, b"\n".join(lines))


def test_seed_flow_promotes_the_treatment(gnn: Project, clock: Clock) -> None:
    ab = gnn.ab
    ab.start_test(seed_config())
    assert "gnn_v2.2_test" in ab._active_tests
    assignment = ab.assign_variant("gnn", "user123")
    assert assignment["name"] in ("control", "treatment")
    assert assignment["model"].version == assignment["version"]
    ab.record_result("gnn_v2.2_test", assignment["name"], 120.0, 0.9, False)
    feed(gnn, "gnn_v2.2_test", 6000, conf=(0.80, 0.86), err=(0.02, 0.02))
    early = ab.evaluate_test("gnn_v2.2_test")
    assert early.decision == "continue" and "7.0 days left" in early.reasons
    clock.now = START + timedelta(days=7, hours=1)
    result = ab.evaluate_test("gnn_v2.2_test")
    assert result.decision == "promote", result.reasons
    ab.finalize_test("gnn_v2.2_test", "promote")
    champion = gnn.registry.get_champion("gnn")
    assert champion is not None and champion.version == "v2.2.0"
    assert champion.traffic_percentage == 100.0
    assert gnn.registry.get_version("gnn", "v2.1.0").traffic_percentage == 0.0
    assert "gnn_v2.2_test" not in ab.active_tests


def test_start_sets_traffic_and_rollback_restores_it(gnn: Project, clock: Clock) -> None:
    gnn.ab.start_test(seed_config(treatment_traffic_pct=12.5))
    traffic = {v.version: v.traffic_percentage for v in gnn.registry.list_versions("gnn")}
    assert traffic == {"v2.1.0": 87.5, "v2.2.0": 12.5, "v2.3.0": 0.0}
    gnn.ab.finalize_test("gnn_v2.2_test", "rollback")
    traffic = {v.version: v.traffic_percentage for v in gnn.registry.list_versions("gnn")}
    assert traffic == {"v2.1.0": 100.0, "v2.2.0": 0.0, "v2.3.0": 0.0}
    events = [e["event"] for e in gnn.registry.history("gnn")]
    assert events[-2:] == ["ab_started", "ab_finalized"]


def test_harm_is_rolled_back_at_once(gnn: Project, clock: Clock) -> None:
    gnn.ab.start_test(seed_config(treatment_traffic_pct=50))
    feed(gnn, "gnn_v2.2_test", 600, conf=(0.8, 0.8), err=(0.02, 0.30), share=0.5)
    result = gnn.ab.evaluate_test("gnn_v2.2_test", apply=True)
    assert result.decision == "rollback" and result.applied
    assert result.requests == 600 < 1000 and result.days_elapsed == 0.0
    assert gnn.ab.get_test("gnn_v2.2_test")["status"] == "rolled_back"
    assert gnn.registry.require_champion("gnn").version == "v2.1.0"


def m(n: int, errors: int, conf_mean: float, conf_sd: float) -> Moments:
    """Moments with the given mean and sample sd (exact sums, no randomness)."""
    s = conf_mean * n
    ss = conf_sd**2 * (n - 1) + s * s / n
    return Moments(n, errors, s, ss, 100.0 * n, 100.0**2 * n + 25 * (n - 1))


CFG = dict(
    alpha=0.05,
    method="fixed",
    sequential_tuning=5000,
    treatment_traffic_pct=50.0,
    min_requests=1000,
    duration_days=7.0,
    max_error_rate_increase=0.05,
    min_confidence_improvement=0.02,
    control_version="v1",
    treatment_version="v2",
)


def test_continue_lists_every_unmet_condition() -> None:
    r = decide("t", CFG, m(206, 4, 0.80, 0.1), m(206, 4, 0.811, 0.1), days_elapsed=3.8)
    assert r.decision == "continue"
    assert r.reasons[:3] == [
        "412 of 1000 requests",
        "3.2 days left",
        "confidence +0.011, needs +0.020",
    ]
    assert any("not wholly above 0" in x for x in r.reasons)
    assert r.recommendation.startswith("Keep the test running: 412 of 1000 requests")


def test_promote_needs_every_condition() -> None:
    good = decide("t", CFG, m(5000, 100, 0.80, 0.1), m(5000, 100, 0.83, 0.1), days_elapsed=8)
    assert good.decision == "promote"
    # Requests are not the unit of assignment: their counts cannot test the split, so they
    # never block (tests/test_decision.py has the per-user sample ratio test that does).
    srm = decide("t", CFG, m(5400, 100, 0.80, 0.1), m(4600, 100, 0.83, 0.1), days_elapsed=8)
    assert srm.decision == "promote" and not srm.metrics["srm"]["testable"]
    risky = decide(
        "t",
        {**CFG, "max_error_rate_increase": 0.005},
        m(5000, 100, 0.80, 0.1),
        m(5000, 110, 0.83, 0.1),
        days_elapsed=8,
    )
    assert risky.decision == "continue"
    assert any(x.startswith("error rate may rise by up to") for x in risky.reasons)


def test_rollback_needs_the_interval_above_zero() -> None:
    # 3 of 20 errors vs 0 of 20: the raw difference exceeds 0.05 but the interval spans 0.
    r = decide("t", CFG, m(20, 0, 0.8, 0.1), m(20, 3, 0.8, 0.1), days_elapsed=1)
    assert r.metrics["error_rate_diff"]["estimate"] == pytest.approx(0.15)
    assert r.metrics["error_rate_diff"]["ci"][0] < 0 and r.decision == "continue"


def test_incremental_evaluation_equals_from_scratch(gnn: Project, clock: Clock) -> None:
    gnn.ab.start_test(seed_config(treatment_traffic_pct=50))
    log = gnn.ab_log("gnn_v2.2_test")
    for i in range(30):
        feed(gnn, "gnn_v2.2_test", 50 + i, conf=(0.8, 0.82), err=(0.05, 0.05), share=0.5, seed=i)
        gnn.ab.evaluate_test("gnn_v2.2_test")  # leaves a cache at the current offset
    with open(log, "ab") as f:
        f.write(b'{"variant": "control", "inference_time_ms": 1')  # a torn tail
    incremental = gnn.ab.evaluate_test("gnn_v2.2_test").to_dict()
    cache = log.with_name(f".{log.name}.summary.json")
    assert cache.exists()
    cache.unlink()
    scratch = gnn.ab.evaluate_test("gnn_v2.2_test").to_dict()
    assert incremental["requests"] == scratch["requests"] == sum(50 + i for i in range(30))
    flat_inc, flat_scratch = flatten(incremental["metrics"]), flatten(scratch["metrics"])
    assert flat_inc.keys() == flat_scratch.keys()
    for key, value in flat_scratch.items():
        assert flat_inc[key] == (
            pytest.approx(value, rel=1e-12, abs=1e-15) if isinstance(value, float) else value
        ), key


def flatten(doc: object, prefix: str = "") -> dict[str, object]:
    if isinstance(doc, dict):
        return {
            k: v for key, val in doc.items() for k, v in flatten(val, f"{prefix}.{key}").items()
        }
    if isinstance(doc, list):
        return {
            k: v for i, val in enumerate(doc) for k, v in flatten(val, f"{prefix}[{i}]").items()
        }
    return {prefix: doc}


def test_evaluation_reads_only_new_lines(
    gnn: Project, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gnn.ab.start_test(seed_config(treatment_traffic_pct=50))
    feed(gnn, "gnn_v2.2_test", 2000, conf=(0.8, 0.8), err=(0.0, 0.0), share=0.5)
    gnn.ab.evaluate_test("gnn_v2.2_test")
    from mlops_cli import jsonl

    seen: list[int] = []
    real = jsonl.read_chunks

    def spy(path: Path, offset: int = 0, *a: object, **k: object) -> Iterator[jsonl.Chunk]:
        for chunk in real(path, offset, *a, **k):  # type: ignore[arg-type]
            seen.append(chunk.lines)
            yield chunk

    monkeypatch.setattr(jsonl, "read_chunks", spy)
    gnn.ab.record_result("gnn_v2.2_test", "control", 10.0, 0.5)
    assert gnn.ab.evaluate_test("gnn_v2.2_test").requests == 2001
    assert sum(seen) == 1  # the one new line, not the 2,000 before it


def test_summary_of_an_empty_or_missing_log_is_zero(tmp_path: Path) -> None:
    assert summarize(tmp_path / "none.jsonl", "variant").arm("control").n == 0


@pytest.mark.parametrize(
    ("field", "value", "kept"),
    [
        ("confidence", 0.0, True),
        ("confidence", 1.0, True),
        ("confidence", -1e-12, False),
        ("confidence", 1.0 + 2**-52, False),
        ("inference_time_ms", 0, True),
        ("inference_time_ms", 1e7, True),
        ("inference_time_ms", -1e-9, False),
        ("inference_time_ms", 1e7 * (1 + 2**-52), False),
        ("user_id", "u1", True),
        ("user_id", 7, True),
        ("user_id", None, True),
        ("user_id", True, False),
        ("user_id", [1], False),
        ("user_id", {"id": 1}, False),
    ],
)
def test_a_stored_request_is_read_within_the_writers_bounds(
    tmp_path: Path, field: str, value: object, kept: bool
) -> None:
    """The limits the writers check (confidence [0, 1], latency [0, 1e7] ms, user_id a string
    or a whole number), at their edges: a hand-edited line beyond them is named, never
    counted (both the per-block sums and the line-by-line reading)."""
    good = {"ts": "2026-12-06T00:00:00.000000Z", "variant": "control",
            "inference_time_ms": 5.0, "confidence": 0.5, "error": False, "user_id": "u0"}
    odd = {**good, field: value}
    log = tmp_path / "t.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in (good, odd, good)))
    keys = ("control", "treatment")
    if kept:
        found = summarize(log, "variant", keys=keys, per_user=True)
        assert found.arm("control").n == 3
    else:
        with pytest.raises(StateError, match="line 2 is not a valid record"):
            summarize(log, "variant", keys=keys, per_user=True)
        found = summarize(log, "variant", skip_invalid=True, keys=keys, per_user=True)
        assert found.arm("control").n == 2 and found.skipped == [2]


def test_assignment_share_is_within_one_point(gnn: Project) -> None:
    gnn.ab.start_test(seed_config())
    names = [gnn.ab.assign_variant("gnn", f"user-{i}")["name"] for i in range(100_000)]
    share = names.count("treatment") / len(names)
    assert abs(share - 0.10) < 0.01


def test_raising_the_share_only_moves_control_users(gnn: Project) -> None:
    from mlops_cli.registry import bucket

    users = [f"u{i}" for i in range(20_000)]
    previous: set[str] = set()
    for pct in (10, 20, 50):
        treated = {u for u in users if bucket("exp", u) < pct * 100}
        assert previous <= treated
        assert abs(len(treated) / len(users) - pct / 100) < 0.01
        previous = treated


def test_assignment_is_the_same_in_two_processes(gnn: Project) -> None:
    gnn.ab.start_test(seed_config(treatment_traffic_pct=50))
    code = (
        "import sys; from mlops_cli import Project; p = Project.open(sys.argv[1]);"
        "print(''.join('T' if p.ab.assign_variant('gnn', f'id{i}')['name'] == 'treatment'"
        " else 'C' for i in range(500)))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(gnn.root)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin"},
        ).stdout
        for seed in (1, 2)
    }
    assert len(outs) == 1
    here = "".join(
        "T" if gnn.ab.assign_variant("gnn", f"id{i}")["name"] == "treatment" else "C"
        for i in range(500)
    )
    assert outs == {here + "\n"} and 150 < here.count("T") < 350


def test_without_a_test_assign_returns_the_champion(gnn: Project) -> None:
    a = gnn.ab.assign_variant("gnn", "user123")
    assert (a["name"], a["version"]) == ("champion", "v2.1.0")


def test_batch_is_all_or_nothing_with_line_numbers(gnn: Project) -> None:
    gnn.ab.start_test(seed_config())
    good = b'{"variant": "control", "inference_time_ms": 5, "confidence": 0.5}'
    lines = [good] * 12
    lines[6] = b'{"variant": "control", "inference_time_ms": 5}'
    lines[9] = b"not json"
    with pytest.raises(ValidationError) as info:
        gnn.ab.record_batch("gnn_v2.2_test", b"\n".join(lines))
    assert "line 7: missing 'confidence'" in str(info.value)
    assert "line 10: not valid JSON" in str(info.value)
    assert not gnn.ab_log("gnn_v2.2_test").exists()
    many = [b"{}"] * 25
    with pytest.raises(ValidationError, match=r"25 bad line\(s\).*and 15 more"):
        gnn.ab.record_batch("gnn_v2.2_test", b"\n".join(many))


def test_batch_keeps_a_given_ts_and_adds_one_otherwise(gnn: Project) -> None:
    gnn.ab.start_test(seed_config())
    gnn.ab.record_batch(
        "gnn_v2.2_test",
        (
            b'{"variant":"treatment","inference_time_ms":5,"confidence":0.5,"ts":"2026-01-01T00:00:00Z"}\n'
            b'{"variant":"control","inference_time_ms":6,"confidence":0.7,"error":true,"user_id":"u1"}\n'
        ),
    )
    rows = [orjson.loads(x) for x in gnn.ab_log("gnn_v2.2_test").read_bytes().splitlines()]
    assert rows[0]["ts"] == "2026-01-01T00:00:00Z"
    assert rows[1]["ts"].endswith("Z") and rows[1]["user_id"] == "u1" and rows[1]["error"] is True


def test_config_defaults_come_from_settings(gnn: Project) -> None:
    gnn.set_setting("ab.defaults.min_requests", "250")
    gnn.set_setting("ab.defaults.method", "fixed")
    test = gnn.ab.start_test(ABTestConfig(name="t", model_type="gnn", treatment_version="v2.2.0"))
    assert (test["min_requests"], test["method"], test["treatment_traffic_pct"]) == (
        250,
        "fixed",
        10.0,
    )
    assert test["control_version"] == "v2.1.0"


def test_cache_is_not_trusted_after_the_log_was_cut_and_written_again(
    gnn: Project, clock: Clock
) -> None:
    gnn.ab.start_test(seed_config(treatment_traffic_pct=50))
    feed(gnn, "gnn_v2.2_test", 300, conf=(0.8, 0.8), err=(0.0, 0.0), share=0.5, seed=1)
    log = gnn.ab_log("gnn_v2.2_test")
    kept = log.read_bytes()
    feed(gnn, "gnn_v2.2_test", 300, conf=(0.8, 0.8), err=(0.0, 0.0), share=0.5, seed=2)
    assert gnn.ab.evaluate_test("gnn_v2.2_test").requests == 600  # cached at 600 lines
    # a batch undone (disk full) and other lines written since: same inode, size >= offset
    log.write_bytes(
        kept
        + b"".join(
            orjson.dumps({"variant": "control", "inference_time_ms": 1.0, "confidence": 0.1})
            + b"\n"
            for _ in range(900)
        )
    )
    assert log.stat().st_size > len(kept) * 2  # larger than what the cache covered
    assert gnn.ab.evaluate_test("gnn_v2.2_test").requests == 1200


def test_python_errors_name_python_arguments(gnn: Project, tmp_path: Path) -> None:
    """A Python caller is told `force=True` (the CLI prints `--force`: tests/test_cli_*)."""
    gnn.ab.start_test(seed_config())
    with pytest.raises(ConflictError, match=r"or pass force=True$") as running:
        gnn.registry.promote_to_champion("gnn", "v2.2.0")
    assert "--force" not in str(running.value)
    assert running.value.for_cli().endswith("or pass --force")
    with pytest.raises(ConflictError, match="pass force=True to promote anyway"):
        gnn.ab.finalize_test("gnn_v2.2_test", "promote")
    with pytest.raises(ConflictError, match="pass force=True to reset it"):
        Project.init(gnn.root)
    with pytest.raises(ValidationError, match=r"^treatment_traffic_pct must be < 100"):
        gnn.ab.start_test(seed_config(name="t2", model_type="gnn", treatment_traffic_pct=150))
