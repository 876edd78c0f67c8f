"""Registry commands through the real entry point: happy paths and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlops_cli import Project

from .conftest import MLOPS_BIN, Run, assert_one_error_line, snapshot

Cli = Callable[..., Run]


@pytest.fixture
def two_versions(cli: Cli, tmp_path: Path) -> Cli:
    model = tmp_path / "gnn.pt"
    model.write_bytes(b"model-bytes")
    assert (
        cli(
            "register",
            "gnn",
            "v2.1.0",
            "--path",
            str(model),
            "--config",
            "hidden_dim=256",
            "--config",
            "arch=GraphSAGE",
            "--tag",
            "team=search",
            "--json",
        ).exit_code
        == 0
    )
    assert cli("register", "gnn", "v2.2.0", "--path", "/nowhere/gnn.pt").exit_code == 0
    return cli


def test_register_prints_the_version_object(cli: Cli, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("hidden_dim: 128\nnum_layers: 4\n")
    run = cli(
        "register",
        "gnn",
        "v2.1.0",
        "--path",
        "/m.pt",
        "--config-file",
        str(cfg),
        "--config",
        "hidden_dim=256",
        "--description",
        "first",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert set(doc) == {
        "model_type",
        "version",
        "is_champion",
        "traffic_percentage",
        "model_path",
        "config",
        "avg_inference_time_ms",
        "avg_confidence",
        "error_rate",
        "requests",
        "registered_at",
        "description",
        "tags",
        "sha256",
        "size_bytes",
        "deprecated",
    }
    assert doc["config"] == {"hidden_dim": 256, "num_layers": 4}
    assert doc["is_champion"] is True and doc["traffic_percentage"] == 100.0
    # the table shows a mapping as it is given on the command line, not as a Python dict
    card = cli("show", "gnn", "v2.1.0").stdout
    assert "hidden_dim=256, num_layers=4" in card and "{" not in card


def test_list_show_champion(two_versions: Cli) -> None:
    cli = two_versions
    listing = cli("list", "--json").json()
    assert [(v["version"], v["is_champion"]) for v in listing] == [
        ("v2.1.0", True),
        ("v2.2.0", False),
    ]
    assert cli("show", "gnn", "v2.2.0", "--json").json()["model_path"] == "/nowhere/gnn.pt"
    assert cli("show", "gnn", "--json").json()["version"] == "v2.1.0"
    plain = cli("champion", "gnn")
    assert plain.stdout == "v2.1.0\n"
    table = cli("list").stdout
    assert "v2.2.0" in table and "champion" in table


def test_promote_rollback_history(two_versions: Cli) -> None:
    cli = two_versions
    doc = cli("promote", "gnn", "v2.2.0", "--reason", "ab win", "--json").json()
    assert doc["version"] == "v2.2.0" and doc["is_champion"] and doc["traffic_percentage"] == 100
    assert cli("champion", "gnn").stdout.strip() == "v2.2.0"
    assert cli("rollback", "gnn", "--reason", "latency", "--json").json()["version"] == "v2.1.0"
    events = cli("history", "gnn", "--json").json()
    assert [e["event"] for e in events][-2:] == ["promoted", "rolled_back"]
    assert events[-1]["reason"] == "latency" and events[-1]["previous"] == "v2.2.0"
    assert len(cli("history", "--limit", "2", "--json").json()) == 2
    assert cli("alias", "set", "gnn", "shadow", "v2.2.0").exit_code == 0
    assert cli("alias", "set", "gnn", "Shadow", "v2.2.0").exit_code == 0
    rows = [r for r in cli("history", "gnn").stdout.splitlines() if "│" in r]
    details = [r.split("│")[-2].strip() for r in rows]  # the last column of each row
    assert details[-3:] == ["latency; previous=v2.2.0", "alias=shadow", "alias=Shadow"]


def test_deprecate_and_verify(two_versions: Cli, tmp_path: Path) -> None:
    cli = two_versions
    done = cli("deprecate", "gnn", "v2.2.0", "--json").json()
    assert done["deprecated"] is True and done["aliases_removed"] == []
    ok = cli("verify", "gnn", "v2.1.0", "--json")
    assert ok.exit_code == 0 and ok.json()["status"] == "ok"
    (tmp_path / "gnn.pt").write_bytes(b"tampered")
    bad = cli("verify", "gnn", "v2.1.0", "--json")
    assert bad.exit_code == 1 and bad.json()["status"] == "mismatch"


def test_metrics_update_accumulates(two_versions: Cli) -> None:
    cli = two_versions
    cli("metrics", "update", "gnn", "v2.1.0", "--inference-time-ms", "100", "--confidence", "0.9")
    doc = cli(
        "metrics",
        "update",
        "gnn",
        "v2.1.0",
        "--inference-time-ms",
        "50",
        "--confidence",
        "0.6",
        "--error",
        "--json",
    ).json()
    assert doc["requests"] == 2
    assert doc["error_rate"] == pytest.approx(0.5)
    assert doc["avg_inference_time_ms"] == pytest.approx(75.0)
    assert doc["avg_confidence"] == pytest.approx(0.75)


def test_config_get_set(cli: Cli) -> None:
    assert cli("config", "get", "drift.reference_size", "--json").json()["value"] == 10000
    assert cli("config", "set", "drift.reference_size", "500").exit_code == 0
    assert cli("config", "get", "drift.reference_size").stdout.strip() == "500"
    cli("config", "set", "drift.hooks.critical", "make retrain")
    assert cli("config", "list", "--json").json()["drift"]["hooks"] == {"critical": "make retrain"}


def test_json_error_document(cli: Cli) -> None:
    run = cli("show", "nope", "--json")
    assert run.exit_code == 1
    assert run.json()["error"]["type"] == "NotFoundError"
    assert "nope" in run.json()["error"]["message"]


def test_installed_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "MLOPS_PROJECT_DIR": str(tmp_path)}
    subprocess.run([str(MLOPS_BIN), "init"], env=env, check=True, capture_output=True)
    subprocess.run(
        [str(MLOPS_BIN), "register", "rag", "1.0.0", "--path", "/r.pt"],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [str(MLOPS_BIN), "champion", "rag"], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert out == "1.0.0\n"
    doc = json.loads(
        subprocess.run(
            [str(MLOPS_BIN), "list", "--json"], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    assert doc[0]["model_type"] == "rag"
    missing = subprocess.run(
        [str(MLOPS_BIN), "-C", str(tmp_path / "none"), "list"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and missing.stderr.startswith("error: no registry.yaml")
    usage = subprocess.run([str(MLOPS_BIN), "promote"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2


def test_project_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    a, b = Project.init(tmp_path / "a"), Project.init(tmp_path / "b")
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(a.root))
    monkeypatch.chdir(b.root)
    from typer.testing import CliRunner

    from mlops_cli.cli import app

    runner = CliRunner()
    runner.invoke(app, ["register", "x", "1.0.0", "--path", "/x"])
    assert "x" in a.state().models and "x" not in b.state().models
    runner.invoke(app, ["-C", str(b.root), "register", "y", "1.0.0", "--path", "/y"])
    assert "y" in b.state().models
    monkeypatch.delenv("MLOPS_PROJECT_DIR")
    runner.invoke(app, ["register", "z", "1.0.0", "--path", "/z"])
    assert "z" in Project.open(b.root).state().models


BAD_INPUTS = [
    (["show", "nosuch"], ["unknown model type"]),
    (["show", "gnn", "v9.9.9"], ["unknown version"]),
    (["register", "gnn", "v2.1.0", "--path", "/x"], ["already registered"]),
    (["register", "gnn", "latest", "--path", "/x"], ["invalid version", "semver"]),
    (["register", "gnn", "1.0", "--path", "/x"], ["invalid version"]),
    (["register", "gnn", "v1", "--path", "/x"], ["invalid version"]),
    (["register", "gnn", "", "--path", "/x"], ["invalid version"]),
    (["register", "../x", "1.0.0", "--path", "/x"], ["invalid model type"]),
    (["register", "a/b", "1.0.0", "--path", "/x"], ["invalid model type"]),
    (["register", "a" * 65, "1.0.0", "--path", "/x"], ["invalid model type"]),
    (["register", "my model", "1.0.0", "--path", "/x"], ["invalid model type"]),
    (["register", "gnn", "v3.0.0", "--path", "/x", "--config", "novalue"], ["KEY=VALUE"]),
    (
        ["metrics", "update", "gnn", "v2.1.0", "--inference-time-ms", "1", "--confidence", "1.5"],
        ["--confidence must be between 0 and 1"],
    ),
    (
        ["metrics", "update", "gnn", "v2.1.0", "--inference-time-ms", "1", "--confidence", "-0.1"],
        ["confidence"],
    ),
    (
        ["metrics", "update", "gnn", "v2.1.0", "--inference-time-ms", "1", "--confidence", "nan"],
        ["finite"],
    ),
    (
        ["metrics", "update", "gnn", "v2.1.0", "--inference-time-ms", "1", "--confidence", "inf"],
        ["finite"],
    ),
    (
        ["metrics", "update", "gnn", "v2.1.0", "--inference-time-ms", "-5", "--confidence", "0.5"],
        ["--inference-time-ms must be"],
    ),
    (
        ["metrics", "update", "gnn", "v7.0.0", "--inference-time-ms", "5", "--confidence", "0.5"],
        ["unknown version"],
    ),
    (["promote", "gnn", "v2.0.0"], ["deprecated"]),
    (["rollback", "gnn"], ["no earlier champion"]),
    (["config", "set", "drift.nosuch", "1"], ["unknown setting"]),
    (["config", "set", "drift.window_size", "ten"], ["whole number"]),
]


@pytest.mark.parametrize(
    ("args", "words"), BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in BAD_INPUTS]
)
def test_bad_input_is_one_error_line_and_changes_nothing(
    cli: Cli, project: Project, args: list[str], words: list[str]
) -> None:
    assert cli("register", "gnn", "v2.1.0", "--path", "/a").exit_code == 0
    assert cli("register", "gnn", "v2.0.0", "--path", "/b").exit_code == 0
    assert cli("deprecate", "gnn", "v2.0.0").exit_code == 0
    before = snapshot(project.root)
    run = cli(*args)
    assert_one_error_line(run, *words)
    assert snapshot(project.root) == before


BROKEN_REGISTRIES = {
    "schema 99": (
        "schema_version: 99\nsettings: {}\nmodels: {}\nab_tests: {}\n",
        ["schema_version 99"],
    ),
    "yaml syntax": (
        "schema_version: 1\nsettings: {}\nmodels:\n  gnn: [unclosed\nab_tests: {}\n",
        ["line "],
    ),
    "python tag": (
        "schema_version: 1\nsettings: !!python/object/apply:os.system ['touch PWNED']\n"
        "models: {}\nab_tests: {}\n",
        ["python/object"],
    ),
    "wrong type": (
        "schema_version: 1\nsettings:\n  drift:\n    window_size: many\nmodels: {}\nab_tests: {}\n",
        ["drift.window_size"],
    ),
    "missing key": ("schema_version: 1\nsettings: {}\nmodels: {}\n", ["ab_tests"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_REGISTRIES))
def test_broken_registry_names_file_and_problem(cli: Cli, project: Project, case: str) -> None:
    text, words = BROKEN_REGISTRIES[case]
    project.registry_path.write_text(text)
    before = snapshot(project.root)
    run = cli("list")
    assert_one_error_line(run, "registry.yaml", *words)
    assert snapshot(project.root) == before
    assert not (project.root / "PWNED").exists()


def test_registry_cut_off_mid_file(two_versions: Cli, project: Project) -> None:
    data = project.registry_path.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 40):
        project.registry_path.write_bytes(data[:cut])
        run = two_versions("list")
        assert_one_error_line(run, "registry.yaml")


def test_missing_registry_names_the_directory(tmp_path: Path, cli: Cli) -> None:
    run = cli("list", root=tmp_path / "empty")
    assert_one_error_line(run, "no registry.yaml", str(tmp_path / "empty"), "mlops init")
    assert not (tmp_path / "empty").exists()


def test_the_console_script_routes_every_group(tmp_path: Path) -> None:
    """`mlops` builds only the group a command names; each still works as the full app."""
    Project.init(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MLOPS_BIN), *args], capture_output=True, text=True)

    helped = run("--help").stdout
    for name in ("register", "promote", "ab", "drift", "demo", "config", "metrics"):
        assert name in helped
    assert run("--version").stdout.startswith("mlops ")
    assert run("-C", str(tmp_path), "ab", "list", "--json").stdout.strip() == "[]"
    assert (
        run(f"--project-dir={tmp_path}", "config", "get", "drift.window_size").stdout == "10000\n"
    )
    assert run("--traceback", "-C", str(tmp_path), "metrics", "export").returncode == 0
    drift = run("-C", str(tmp_path), "drift", "check", "--all", "--json")
    assert json.loads(drift.stdout) == {"results": [], "without_reference": [], "watch": []}
    assert json.loads(run("-C", str(tmp_path), "watch", "check", "--json").stdout) == []
    typo = run("-C", str(tmp_path), "lisst")
    assert typo.returncode == 2 and "No such command" in typo.stderr


def test_first_command_skips_global_options() -> None:
    from mlops_cli.cli import first_command

    assert first_command(["-C", "x", "list"]) == "list"
    assert first_command(["--project-dir", "x", "--traceback", "ab", "list"]) == "ab"
    assert first_command(["--project-dir=x", "drift"]) == "drift"
    assert first_command(["--help"]) is None and first_command([]) is None
    assert first_command(["nosuch"]) is None


def test_the_router_knows_every_registry_command() -> None:
    from mlops_cli.cli import REGISTRY_COMMANDS
    from mlops_cli.cli.registry_cmds import COMMANDS, GROUPS

    assert set(COMMANDS) | set(GROUPS) == REGISTRY_COMMANDS


def test_invalid_dates_in_config_and_registry_are_one_clean_line(
    cli: Cli, project: Project, tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("hidden_dim: 8\nlr: 2026-13-01\n")
    before = snapshot(project.root)
    run = cli("register", "gnn", "1.0.0", "--path", "/m.pt", "--config-file", str(cfg))
    assert_one_error_line(run, "cfg.yaml", "'2026-13-01' at line 2 is not a valid date")
    assert snapshot(project.root) == before
    # On the command line a value that is not YAML is kept as its text, as any other.
    run = cli("register", "gnn", "1.0.0", "--path", "/m.pt", "--config", "d=2026-13-01", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["config"] == {"d": "2026-13-01"}
    (model_file,) = (project.root / "models" / "gnn").glob("*.jsonl")  # the type's file
    text = model_file.read_text()
    stamp = text.split('"registered_at":', 1)[1].split(",", 1)[0]
    model_file.write_text(text.replace(f'"registered_at":{stamp}', '"registered_at":"2026-13-45"'))
    # a file of one generation never changes: a process reads it once (a hand edit is read
    # by the next process; here, once the project's stores are closed)
    project.close()
    assert_one_error_line(cli("list"), str(model_file), "registered_at", "'2026-13-45'")


def test_a_negative_setting_value_is_passed_as_is_or_after_a_double_dash(
    cli: Cli, project: Project
) -> None:
    """`config set KEY -5` is the value -5, not an unknown option -5 (exit 2 before); `--`
    before it gives the same."""
    before = snapshot(project.root)
    for args in (["-5"], ["--", "-5"]):
        run = cli("config", "set", "drift.window_size", *args)
        assert run.stderr == "error: drift.window_size must be >= 1, not -5\n"  # the key given
        assert snapshot(project.root) == before
    for key, value, said in (
        ("watch.hours", "-1", "watch.hours must be > 0, not -1"),
        ("drift.thresholds.monitor", "0.9", "drift.thresholds must satisfy monitor <= retrain"),
    ):
        run = cli("config", "set", key, value)
        assert (run.exit_code, run.stderr.startswith(f"error: {said}")) == (1, True), run.stderr
        assert snapshot(project.root) == before
    key = "ab.defaults.min_confidence_improvement"
    for value, args in ((-0.01, ["-0.01"]), (-0.03, ["--", "-0.03"])):
        run = cli("config", "set", "--json", key, *args)
        assert run.exit_code == 0, run.stderr
        assert run.json() == {"key": key, "value": value}
        assert project.get_setting(key) == value


def test_a_terminal_console_wraps_and_a_piped_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import sys

    from mlops_cli.cli.common import console

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert console().soft_wrap is False
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert console().soft_wrap is True


def test_alias_commands(cli: Cli, project: Project) -> None:
    assert cli("register", "gnn", "v2.1.0", "--path", "/a").exit_code == 0
    assert cli("register", "gnn", "v2.2.0", "--path", "/b", "--no-champion").exit_code == 0
    assert cli("alias", "set", "gnn", "shadow", "2.2.0").stdout == "gnn alias shadow -> v2.2.0\n"
    assert cli("alias", "list", "--json").json() == [
        {"model_type": "gnn", "alias": "shadow", "version": "v2.2.0"}
    ]
    assert "aliases: shadow" in cli("show", "gnn", "v2.2.0").stdout
    assert "aliases:" not in cli("show", "gnn").stdout  # the champion has none
    assert cli("show", "gnn", "v2.2.0", "--json").json()["aliases"] == ["shadow"]
    assert cli("show", "gnn", "--json").json()["aliases"] == []
    assert project.registry.get_version_by_alias("gnn", "shadow").version == "v2.2.0"
    before = snapshot(project.root)
    for args, words in (
        (["alias", "set", "gnn", "v3", "v2.1.0"], ["alias", "version"]),
        (["alias", "set", "gnn", "x", "v9.0.0"], ["unknown version"]),
        (["alias", "set", "nope", "x", "v2.1.0"], ["unknown model type"]),
        (["alias", "delete", "gnn", "canary"], ["unknown alias", "shadow"]),
    ):
        assert_one_error_line(cli(*args), *words)
        assert snapshot(project.root) == before
    run = cli("alias", "delete", "gnn", "shadow", "--json")
    assert run.json() == {"model_type": "gnn", "alias": "shadow", "version": "v2.2.0"}
    assert cli("alias", "list", "gnn", "--json").json() == []
    for alias in ("canary", "Canary"):  # names are case-sensitive, as versions are
        assert cli("alias", "set", "gnn", alias, "v2.2.0").exit_code == 0
    gone = cli("deprecate", "gnn", "v2.2.0")
    assert gone.stdout == "gnn v2.2.0 is deprecated; aliases removed: Canary, canary\n"
    assert cli("alias", "list", "gnn", "--json").json() == []
