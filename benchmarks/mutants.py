"""Flip every comparison in stats.py and decision.py, one at a time, and run the fast tests.

    python benchmarks/mutants.py [FILTER ...]

Each mutant turns one `<` into `<=` (and back), `>` into `>=`, `==` into `!=` in a copy of
the package (the KS code aside: its own tests pin it), then runs the decision and statistics
unit tests on it; a mutant the tests do not fail is printed as SURVIVED. FILTER keeps only
mutants whose tag (`mlops_cli/decision.py:563 guardrails op0 LtE`) contains it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("mlops_cli/stats.py", "mlops_cli/decision.py")
SKIP = {"ks_two_sample", "_prob_outside_square"}
TESTS = (
    "tests/test_decision_boundaries.py",
    "tests/test_decision.py",
    "tests/test_stats.py",
    "tests/test_stats_ratio.py",
)
FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
}


def sites(tree: ast.Module) -> list[tuple[int, int, str, str]]:
    """(line, operator index, enclosing function, operator) of each comparison to flip."""
    out: dict[tuple[int, int, str], str] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or fn.name in SKIP:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Compare):
                for j, op in enumerate(node.ops):
                    if type(op) in FLIP:
                        out.setdefault((node.lineno, j, type(op).__name__), fn.name)
    return sorted((line, j, name, op) for (line, j, op), name in out.items())


def mutant(source: str, line: int, j: int, op: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or node.lineno != line or len(node.ops) <= j:
            continue
        if type(node.ops[j]).__name__ == op:
            node.ops[j] = FLIP[type(node.ops[j])]()
            break
    return ast.unparse(tree)


def main(filters: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(ROOT / "mlops_cli", work / "mlops_cli")
        shutil.copytree(ROOT / "tests", work / "tests")
        shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(work)}
        killed = total = 0
        for module in MODULES:
            path = work / module
            original = path.read_text()
            for line, j, name, op in sites(ast.parse(original)):
                tag = f"{module}:{line} {name} op{j} {op}"
                if filters and not any(f in tag for f in filters):
                    continue
                path.write_text(mutant(original, line, j, op))
                run = subprocess.run(
                    [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                    cwd=work,
                    env=env,
                    capture_output=True,
                )
                total += 1
                killed += run.returncode != 0
                print(("killed   " if run.returncode else "SURVIVED ") + tag, flush=True)
            path.write_text(original)
        print(f"{killed} of {total} mutants killed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
