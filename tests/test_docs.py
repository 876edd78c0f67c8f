"""Help text for every command and option, and docs/cli.md in step with the app."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_cli.cli.docs import commands, markdown, parameters

CLI_MD = Path(__file__).parent.parent / "docs" / "cli.md"
ALL = list(commands())


def test_the_app_has_every_documented_command() -> None:
    names = {name for name, _ in ALL}
    for expected in (
        "mlops init",
        "mlops register",
        "mlops list",
        "mlops show",
        "mlops champion",
        "mlops promote",
        "mlops rollback",
        "mlops deprecate",
        "mlops verify",
        "mlops history",
        "mlops metrics update",
        "mlops metrics export",
        "mlops ab start",
        "mlops ab assign",
        "mlops ab record",
        "mlops ab evaluate",
        "mlops ab finalize",
        "mlops ab list",
        "mlops ab status",
        "mlops drift reference",
        "mlops drift record",
        "mlops drift check",
        "mlops drift report",
        "mlops config list",
        "mlops config get",
        "mlops config set",
        "mlops demo",
    ):
        assert expected in names


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_command_and_option_has_help(name: str, command: object) -> None:
    assert (getattr(command, "help", None) or "").strip(), name
    for how, text in parameters(command):
        assert text.strip(), f"{name} {how} has no help"


def test_cli_reference_is_up_to_date() -> None:
    assert CLI_MD.read_text() == markdown(), (
        "docs/cli.md is stale: run `python -m mlops_cli.cli.docs > docs/cli.md`"
    )
