"""String and time bounds through the real entry point: one error line, every file unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops_cli.cli import app

from ..conftest import assert_one_error_line, snapshot
from .helpers import ab_project, requests_jsonl

RECORD = ["--variant", "control", "--inference-time-ms", "5", "--confidence", "0.9"]
GOOD = requests_jsonl(3, seed=7)


def line(extra: str) -> bytes:
    return b'{"variant":"control","inference_time_ms":5,"confidence":0.9,' + extra.encode() + b"}\n"


CASES: dict[str, tuple[list[str], bytes | None, tuple[str, ...]]] = {
    "--user-id of 257 bytes": (
        ["ab", "record", "t", *RECORD, "--user-id", "u" * 257],
        None,
        ("user_id is longer than 256 bytes (257)",),
    ),
    "a batch line with a NUL in user_id": (
        ["ab", "record", "t", "--file", "-", "--batch-id", "b1"],
        GOOD + line('"user_id":"a\\u0000b"') + GOOD,
        ("nothing recorded", "line 4", "user_id holds a NUL character"),
    ),
    "a batch line at year 9999, -14:00": (
        ["ab", "record", "t", "--file", "-", "--batch-id", "b2"],
        GOOD + line('"ts":"9999-12-31T23:59:59-14:00"'),
        ("nothing recorded", "line 4", "ts must lie between 1970-01-01T00:00:00Z"),
    ),
    "a drift sample before 1970": (
        ["drift", "record", "gnn", "1.0.0", "--file", "-"],
        b'{"prediction":1,"confidence":0.5,"ts":"1969-12-31T23:59:59Z"}\n',
        ("line 1", "ts must lie between"),
    ),
    "--reason of 4,097 bytes": (
        ["deprecate", "gnn", "1.2.0", "--reason", "r" * 4097],
        None,
        ("the reason is longer than 4,096 bytes (4,097)",),
    ),
    "--description of 4,097 bytes": (
        ["register", "gnn", "2.0.0", "--path", "/m", "--description", "d" * 4097],
        None,
        ("description is longer than 4,096 bytes (4,097)",),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_value_past_its_bound_is_one_error_and_changes_nothing(tmp_path: Path, case: str) -> None:
    args, data, words = CASES[case]
    project = ab_project(tmp_path / "p")
    project.ab.record_batch("t", requests_jsonl(20, seed=1))
    before = snapshot(project.root)
    result = CliRunner().invoke(app, ["-C", str(project.root), *args], input=data)
    assert_one_error_line(result, *words)
    assert snapshot(project.root) == before
