"""textsafe.printable: terminal escapes and control characters are shown, not obeyed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_cli.textsafe import printable


def test_plain_text_is_unchanged() -> None:
    for text in ("rollback after p99 regression", "Müller 東京 🚀", ""):
        assert printable(text) == text


def test_escape_sequences_are_shown() -> None:
    reason = "ok\x1b[2J\x1b]0;pwned\x07\rfake line\x08"
    assert printable(reason) == "ok\\x1b[2J\\x1b]0;pwned\\x07\\rfake line\\x08"
    assert "\x1b" not in printable(reason)


def test_newlines_tabs_and_backslashes() -> None:
    assert printable("a\nb\tc\\x1b") == "a\\nb\\tc\\\\x1b"
    assert printable("a\nb", keep_newlines=True) == "a\nb"


def test_invisible_and_bidi_characters() -> None:
    assert printable("admin\u202e\u200b\x9b\x7f") == "admin\\u202e\\u200b\\x9b\\x7f"
    assert printable("x\u2028y\U000e0041") == "x\\u2028y\\U000e0041"


def test_history_and_show_escape_user_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 case 11: reasons, descriptions and actors were printed raw."""
    from typer.testing import CliRunner

    from mlops_cli import ModelVersion, Project
    from mlops_cli.cli import app

    project = Project.init(tmp_path / "p")
    project.registry.register_version(
        ModelVersion("g", "1.0.0", model_path="/m", description="weights\x1b]0;owned\x07")
    )
    project.registry.register_version(ModelVersion("g", "1.1.0", model_path="/m"))
    monkeypatch.setenv("MLOPS_ACTOR", "ci\x1b[31m")
    runner = CliRunner()
    base = ["-C", str(project.root)]
    assert (
        runner.invoke(
            app, [*base, "promote", "g", "1.1.0", "--reason", "ok\x1b[2J\nfake"]
        ).exit_code
        == 0
    )
    history = runner.invoke(app, [*base, "history"]).stdout
    show = runner.invoke(app, [*base, "show", "g", "1.0.0"]).stdout
    for out in (history, show):
        assert "\x1b" not in out and "\x07" not in out
    assert "ok\\x1b[2J\\nfake" in history and "ci\\x1b[31m" in history
    assert "weights\\x1b]0;owned\\x07" in show
    as_json = runner.invoke(app, [*base, "history", "--json"]).stdout
    assert "\\u001b[2J\\nfake" in as_json  # JSON keeps the exact text, escaped by JSON itself


@pytest.mark.parametrize("styled", [False, True])
def test_say_shows_markup_and_escapes_as_text(
    styled: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one path human output takes: Rich markup in a text is printed as it reads (a
    `[/nope]` no longer raises MarkupError), escapes are shown, styles come beside the text."""
    from mlops_cli.cli.common import say

    outside = "[/nope] [bold red]x[/] \x1b[2J\x07"
    parts = (("LABEL", "bold"), f" {outside}") if styled else (f"LABEL {outside}",)
    say(*parts)
    say(*parts, err=True)
    out, err = capsys.readouterr()
    expected = "LABEL [/nope] [bold red]x[/] \\x1b[2J\\x07\n"
    assert out == expected and err == expected


def test_error_lines_show_escapes(tmp_path: Path) -> None:
    """An error message quoting outside text (here a key the user typed) cannot drive the
    terminal."""
    from typer.testing import CliRunner

    from mlops_cli import Project
    from mlops_cli.cli import app

    project = Project.init(tmp_path / "p")
    runner = CliRunner()
    key = "drift.\x1b]0;owned\x07[/x]"
    run = runner.invoke(app, ["-C", str(project.root), "config", "get", key])
    assert run.exit_code == 1
    assert run.stderr.startswith("error: ") and "\x1b" not in run.stderr
    assert "x1b]0;owned" in run.stderr and "x07[/x]" in run.stderr  # shown, not obeyed
    as_json = runner.invoke(app, ["-C", str(project.root), "config", "get", key, "--json"])
    assert json.loads(as_json.stdout)["error"]["type"] == "NotFoundError"


def test_every_human_line_of_the_cli_goes_through_say_or_table() -> None:
    """The one escaping path: no command prints by itself (typer.echo, print, a Rich
    console, a raw write) except JSON, the version, and the Prometheus exposition."""
    import ast

    import mlops_cli.cli

    allowed = {
        ("__init__.py", "_version"),  # the version
        ("common.py", "print_json"),  # JSON: the encoder escapes
        ("common.py", "say"),  # the path itself
        ("common.py", "table"),  # cells through printable
        ("registry_cmds.py", "metrics_export"),  # the exposition format (validated names)
        ("registry_cmds.py", "action"),
    }
    found = set()
    for path in sorted(Path(mlops_cli.cli.__file__).parent.glob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call):
                    called = ast.unparse(node.func)
                    if called in ("typer.echo", "print") or called.endswith(
                        (".print", "stdout.write", "stderr.write", ".echo")
                    ):
                        found.add((path.name, function.name))
    assert found <= allowed, found - allowed
