"""Commands that compute nothing import nothing heavy: `python -X importtime` through the real
entry point, in a small project, must list none of numpy, scipy, rich or psycopg."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"numpy", "scipy", "rich", "psycopg", "psycopg2"}
COMMANDS = [
    (["--version"], "mlops "),
    (["list"], "v1.0.0"),
    (["champion", "T"], "v1.0.0"),
    (["show", "T"], "v1.0.0"),
    (["history"], "register"),
    (["config", "list"], "drift.window_size"),
    (["ab", "list"], "test"),
]


def mlops(project: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "mlops_cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def imported_packages(importtime_log: str) -> set[str]:
    """Top-level names of the modules in a `-X importtime` log ("import time: a | b | name")."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name.split(".")[0])
    return names


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("startup")
    (root / "model.bin").write_bytes(b"weights")
    for args in (["init"], ["register", "T", "v1.0.0", "--path", "model.bin"]):
        done = mlops(root, *args)
        assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize(("args", "expected"), COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_command_imports_nothing_heavy(project: Path, args: list[str], expected: str) -> None:
    done = mlops(project, *args, importtime=True)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    packages = imported_packages(done.stderr)
    assert "mlops_cli" in packages  # the log is read right
    assert packages & HEAVY == set()


def test_the_check_sees_a_heavy_import(project: Path) -> None:
    log = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import numpy"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert "numpy" in imported_packages(log)


def test_the_collector_is_off_for_the_start_up_only(project: Path) -> None:
    """The console script disables the cyclic garbage collector while it imports (start-up
    makes no garbage worth collecting); the command itself, which may run for hours (`mlops
    ui`), runs with it enabled."""
    probe = (
        "import gc, sys\n"
        "from mlops_cli.cli import common\n"
        "run = common.run\n"
        "def spy(*args, **kwargs):\n"
        "    sys.stderr.write(f'collector enabled: {gc.isenabled()}\\n')\n"
        "    return run(*args, **kwargs)\n"
        "common.run = spy\n"
        "from mlops_cli.cli import registry_cmds\n"
        "registry_cmds.run = spy\n"
        "sys.argv = ['mlops', 'list']\n"
        "from mlops_cli.entry import main\n"
        "gc.enable()\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "collector enabled: True" in done.stderr


def test_drift_commands_do_not_load_the_ab_tests(project: Path) -> None:
    """`drift check` on a large window is timed against Evidently with its start-up: the drift
    commands share the batch input helpers (cli/batch_io.py), not the A/B modules."""
    done = mlops(project, "drift", "report", "T", "v1.0.0", "--json", importtime=True)
    assert "mlops_cli.cli.drift_cmds" in done.stderr  # the log is read right
    loaded = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert {"mlops_cli.cli.ab_cmds", "mlops_cli.ab_testing"} & loaded == set()
    # nor, for a version whose samples are in the project, the sources or the hook runner
    assert {"mlops_cli.sources", "mlops_cli.hooks"} & loaded == set()
