"""Installing: mlops is not on the package index, so every install line the docs and recipes
show installs it from its own source; without psycopg a URL is one clean error line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_cli.errors import MissingExtraError
from mlops_cli.project import Project

ROOT = Path(__file__).parent.parent
URL = "postgresql://nobody@127.0.0.1:9/none"  # never reached: psycopg is missing first

# -- a postgresql:// location without psycopg -------------------------------------------------

WITHOUT_PSYCOPG = (
    "import sys; sys.modules['psycopg'] = None\n"  # as after `pip install .`: no extra
    "from mlops_cli.entry import main; sys.argv = ['mlops', *sys.argv[1:]]; main()\n"
)


def mlops_without_psycopg(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_PROJECT_DIR"}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG, *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )


@pytest.mark.parametrize(
    "args",
    [("-C", URL, "list"), ("-C", URL, "db", "upgrade"), ("-C", URL, "init"),
     ("store", "copy", URL, "copied")],
)
def test_a_url_without_psycopg_is_one_error_line_naming_the_extra(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    run = mlops_without_psycopg(*[a.replace("copied", str(tmp_path / "c")) for a in args])
    assert run.returncode == 1, run.stderr
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "psycopg" in lines[0] and "pip install '.[postgres]'" in lines[0]
    assert "bug" not in lines[0]
    assert not (tmp_path / "c").exists()


def test_the_library_raises_missing_extra_for_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtraError, match=r"postgres extra"):
        Project.open(URL)
    with pytest.raises(MissingExtraError):
        Project.init(URL)


# -- every install line in README.md, docs/ and examples/ ---------------------------------------

# Packages of other projects the docs install by name (all on the package index).
THIRD_PARTY = {"fastapi", "uvicorn", "psycopg[binary]"}
# This project from its own repository, pinned to a tag or commit (REF is the placeholder).
OWN_VCS = re.compile(
    r"mlops-cli(\[[a-z,]+\])? @ git\+https://[\w.-]+/[\w.-]+/mlops(\.git)?@[\w./-]+"
)
LOCAL = re.compile(r"(\.|\./[\w./-]*)(\[[a-z,]+\])?")  # `.`, `.[postgres]`, ./path
OPTIONS = {"-q", "--quiet", "-U", "--upgrade", "--no-deps", "--disable-pip-version-check"}


def install_lines(text: str) -> list[str]:
    """What follows each `pip install` in a text: to the end of its inline code span when it
    is in one, else to the end of the line."""
    found = []
    for line in text.splitlines():
        for match in re.finditer(r"pip install\b", line):
            rest = line[match.end():]
            if line[: match.start()].count("`") % 2:  # inside `...`
                rest = rest.split("`", 1)[0]
            found.append(rest)
    return found


def refused(arguments: str) -> list[str]:
    """The arguments of one install line that are not of an allowed form."""
    bad = []
    editable = False
    for word in shlex.split(arguments, comments=True):
        if word in OPTIONS:
            continue
        if word in ("-e", "--editable"):
            editable = True
            continue
        allowed = (
            LOCAL.fullmatch(word) is not None
            or (word.endswith(".whl") and not editable)
            or (OWN_VCS.fullmatch(word) is not None and not editable)
            or (word in THIRD_PARTY and not editable)
        )
        editable = False
        if not allowed:
            bad.append(word)
    return bad


UNPINNED = "mlops-cli @ git+https://github.com/OWNER/mlops"  # no tag or commit
OTHER = "mlops-cli @ git+https://github.com/OWNER/other@v1"  # another project's repository


@pytest.mark.parametrize(
    ("arguments", "bad"),
    [
        (" .", []),
        (" -e '.[test]'", []),
        (" '.[postgres]' fastapi uvicorn   # in a checkout", []),
        (" ./dist/mlops_cli-0.9.0-py3-none-any.whl", []),
        (' "mlops-cli[postgres] @ git+https://github.com/OWNER/mlops@REF"', []),
        (" 'mlops-cli[postgres]'", ["mlops-cli[postgres]"]),  # not on the index
        (" mlops-cli", ["mlops-cli"]),
        (f" '{UNPINNED}'", [UNPINNED]),
        (f" '{OTHER}'", [OTHER]),
        (" requests", ["requests"]),  # a third-party name not in the list
        (" -r requirements.txt", ["-r", "requirements.txt"]),
    ],
)
def test_the_install_line_check(arguments: str, bad: list[str]) -> None:
    assert refused(arguments) == bad


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(p for p in (ROOT / "examples").iterdir() if p.is_file()),
    ]


def test_every_install_line_installs_mlops_from_its_own_source() -> None:
    seen = 0
    for path in documents():
        for arguments in install_lines(path.read_text()):
            seen += 1
            assert not refused(arguments), f"{path.name}: pip install{arguments}"
    assert seen >= 8  # README (4), docs/postgresql.md, both recipes, the service example
