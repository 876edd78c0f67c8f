"""Every `sh` block of the README runs as shown, in order, in a fresh directory; its Python
API block runs as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_readme_shell_blocks_run_in_order(tmp_path: Path) -> None:
    blocks = sh_blocks()
    assert len(blocks) >= 4
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLOPS_PROJECT_DIR", None)
    for number, block in enumerate(blocks, 1):
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"block {number} failed:\n{block}\n{run.stdout}{run.stderr}"
    assert "retrain gnn v2.2.0" in (tmp_path / "retrain.log").read_text()


def test_the_slow_simulations_run_in_make_test_and_can_be_left_out() -> None:
    """`make test` (CI) runs the decision simulations; `-m 'not slow'` leaves them out."""
    root = README.parent
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (root / "Makefile").read_text(), re.M)
    assert recipe is not None and "pytest" in recipe.group(1)
    assert not re.search(r"pytest.*\s-m\s", recipe.group(1)), recipe.group(1)  # no marker left out
    files = ["tests/test_decision_quality.py", "tests/test_decision_simulation.py"]

    def collected(*extra: str) -> int:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                *extra,
                *files,
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return sum(1 for line in run.stdout.splitlines() if "::" in line)

    assert collected() >= 5
    assert collected("-m", "not slow") == 0
    assert "pytest -q -m 'not slow'" in README.read_text()


def test_the_python_api_block_runs_without_and_with_a_running_test(tmp_path: Path) -> None:
    """The README's Python block: registered once, then per request, with the champion
    serving and then inside a running test (where the request is recorded under its user)."""
    from mlops_cli import ABTestConfig, ModelVersion, Project

    text = README.read_text()
    block = text.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    once, per_request = block.split('user_id = "user-42"', 1)
    per_request = 'user_id = "user-42"' + per_request
    imports = once.split("\n", 1)[0]
    project = Project.init(tmp_path)
    project.registry.register_version(ModelVersion("gnn", "v2.1.0", model_path="/m.pt"))
    env = {**os.environ, "MLOPS_PROJECT_DIR": str(tmp_path)}

    def run(code: str) -> None:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()

    run(block)  # the champion serves: nothing is recorded in a test
    assert Project.open(tmp_path).registry.get_version("gnn", "v2.1.0").requests == 1
    project.ab.start_test(ABTestConfig("gnn_v2.2_test", "gnn", treatment_version="v2.2.0"))
    run(imports + "\n" + per_request)
    rows = [r for chunk in Project.open(tmp_path).store.scan("ab/gnn_v2.2_test") for r in chunk]
    assert [r["user_id"] for r in rows] == ["user-42"]
