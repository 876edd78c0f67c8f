"""Issue 12 cases 7 and 10 through the real CLI: bounded YAML in --config-file, registry.yaml
and settings values."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mlops_cli.cli import app

from ..conftest import assert_one_error_line
from ..test_yamlsafe import bomb
from .helpers import ab_project


class _Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def run(root: Path, *args: str) -> _Run:
    result = CliRunner().invoke(app, ["-C", str(root), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Run(result.exit_code, result.stdout, result.stderr)


def test_alias_bomb_in_config_file_is_refused_at_the_budget(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(bomb(10))
    result = run(root, "register", "gnn", "2.0.0", "--path", "/m", "--config-file", str(cfg))
    assert_one_error_line(result, "bomb.yaml", "aliases expand past")
    listed = run(root, "list", "--json")
    assert listed.exit_code == 0 and "2.0.0" not in listed.stdout


def test_duplicate_keys_in_config_file(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    cfg = tmp_path / "ab.yaml"
    cfg.write_text("alpha: 0.05\nmin_requests: 100\nalpha: 0.2\n")
    result = run(
        root,
        "ab",
        "start",
        "t2",
        "--model-type",
        "gnn",
        "--treatment",
        "1.2.0",
        "--config-file",
        str(cfg),
    )
    assert_one_error_line(result, "duplicate key 'alpha' at line 3")


def test_duplicate_key_in_registry_yaml_names_key_and_line(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    registry = root / "registry.yaml"
    lines = registry.read_text().splitlines(keepends=True)
    # registry.yaml is the index (schema 5): its top-level keys, the schema version first
    at = next(i for i, line in enumerate(lines) if line.startswith("schema_version:"))
    lines.insert(at + 1, lines[at])
    registry.write_text("".join(lines))
    result = run(root, "champion", "gnn")
    assert_one_error_line(
        result, "registry.yaml", f"duplicate key 'schema_version' at line {at + 2}"
    )


def test_alias_bomb_in_registry_yaml(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    registry = root / "registry.yaml"
    registry.write_text(
        registry.read_text()
        + "".join(
            "  " + line + "\n" for line in ["bomb:"] + ["  " + x for x in bomb(9).splitlines()]
        ).replace("  bomb:", "bomb:", 1)
    )
    result = run(root, "list")
    assert_one_error_line(result, "registry.yaml", "aliases expand past")


def test_deep_settings_value_is_a_clean_error(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    deep = "{a: " * 40 + "1" + "}" * 40
    result = run(root, "config", "set", "ab.defaults", deep)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    deeper = "[" * 100_000 + "]" * 100_000
    result = run(root, "config", "set", "drift.hooks", deeper)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
