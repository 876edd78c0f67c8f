from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from mlops_cli import Project
from mlops_cli.cli import app

DATA = Path(__file__).parent / "data"
MLOPS_BIN = Path(sys.executable).with_name("mlops")
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


class Clock:
    """A settable clock to inject into a project (no test waits on wall-clock time)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv("MLOPS_PROJECT_DIR", raising=False)
    # what a PostgreSQL store could not write at exit goes to a spool: never the user's own
    monkeypatch.setenv("MLOPS_SPOOL_DIR", str(tmp_path_factory.getbasetemp() / "spool"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("MLOPS_ACTOR", "tester")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project.init(tmp_path / "proj")


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(project: Project) -> Callable[..., Run]:
    """Run `mlops -C <project> ARGS` through the real Typer app."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, root: Path | None = None) -> Run:
        target = str(root or project.root)
        result = runner.invoke(app, ["-C", target, *args], input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return invoke


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (lock files excluded: they hold no data)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def assert_one_error_line(run: Run, *words: str) -> None:
    assert run.exit_code == 1, (run.exit_code, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


T = TypeVar("T")

# A deadline that only catches a hang: far above what any call takes on a loaded machine, far
# below what the hang it guards against would take (the tests make that wait 600 s or more).
HANG_S = 120.0


def finishes(call: Callable[[], T], within: float = HANG_S) -> T:
    """`call()`'s result or exception, or a test failure if it has not returned `within`
    seconds: a hang fails the test instead of holding the suite (no assertion on speed)."""
    import threading

    done: list[T] = []
    raised: list[BaseException] = []

    def target() -> None:
        try:
            done.append(call())
        except BaseException as exc:  # handed to the test's thread
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        pytest.fail(f"did not return within {within:g} s: a hang")
    if raised:
        raise raised[0]
    return done[0]


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def spark_session() -> Any:
    """One local Spark session for every Spark test (it takes ~20 s to start), handed to
    mlops as the session its Spark sources use. Skipped without pyspark or Java, except
    under CI=true, where that is a failure."""
    from mlops_cli.sources import use_spark_session

    missing = None
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        missing = "pyspark is not installed (pip install -e '.[spark]')"
    if missing is None and shutil.which("java") is None:
        missing = "no java on PATH (apt-get install openjdk-17-jre-headless)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Spark tests under CI: {missing}")
        pytest.skip(missing)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("mlops-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    use_spark_session(session)
    yield session
    use_spark_session(None)
    session.stop()
