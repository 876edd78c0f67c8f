"""The examples use only what mlops_cli exports, and the CI files run the documented gates."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

import mlops_cli

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_service_example_imports_only_exported_names() -> None:
    tree = ast.parse((EXAMPLES / "fastapi_service.py").read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "mlops_cli"
        for alias in node.names
    ]
    assert imported
    for name in imported:
        assert hasattr(mlops_cli, name), name


def test_ci_examples_run_both_gates() -> None:
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (EXAMPLES / name).read_text()
        yaml.safe_load(text)
        assert "mlops ab evaluate gnn_v2.2_test --fail-on rollback" in text
        assert "mlops drift check --all --fail-on critical" in text
