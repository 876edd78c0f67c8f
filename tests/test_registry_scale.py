"""The directory store's layout from schema 5: registry.yaml an index, one file per model type.

A command on one model type reads that type's file only; a commit writes only the types it
changed; listing pages; the files round-trip every value; a reader a commit behind still
reads; the upgrade of an older project survives a kill at any step (test_registry_migrate.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlops_cli import ABTestConfig, ModelVersion, Project, StateError
from mlops_cli.cli import app
from mlops_cli.errors import ValidationError
from mlops_cli.state import Models, ModelType, VersionRecord

from . import pg_server as fixtures

STAMP = "2026-11-26T00:00:00.000000Z"


def record(traffic: float = 0.0, **extra: object) -> VersionRecord:
    fields: dict[str, object] = {
        "model_path": "/m.pt",
        "config": {},
        "traffic_percentage": traffic,
        "registered_at": STAMP,
        "description": "",
        "tags": {},
        "sha256": None,
        "size_bytes": None,
        "deprecated": False,
        **extra,
    }
    return VersionRecord(**fields)  # type: ignore[arg-type]


def index(root: Path) -> dict[str, object]:
    doc: dict[str, object] = yaml.safe_load((root / "registry.yaml").read_text())
    return doc


def type_file(root: Path, name: str) -> Path:
    files = index(root)["models"]
    assert isinstance(files, dict)
    return root / "models" / name / f"{files[name]['generation']}.jsonl"


def cli(root: Path | str, *args: str) -> tuple[int, str, str]:
    run = CliRunner().invoke(app, ["-C", str(root), *args])
    return run.exit_code, run.stdout, run.stderr


@pytest.fixture
def two_types(tmp_path: Path) -> Project:
    project = Project.init(tmp_path / "p")
    for name in ("a", "b"):
        for v in ("1.0.0", "1.1.0", "2.0.0"):
            project.registry.register_version(ModelVersion(name, v, model_path="/m"))
    return project


def test_every_value_round_trips_through_the_files(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    odd = {
        "lr": 0.001,
        "big": 2**62,
        "nested": {"layers": [1, 2, {"x": None}], "on": True},
        "text": "ünïcode \u2028 and \"quotes\"\nnewline",
    }
    model = ModelType(
        "gnn",
        "2.0.0",
        ["1.0.0"],
        {
            "1.0.0": record(config=odd, tags={"team": "r"}, sha256="ab" * 32, size_bytes=7),
            "2.0.0": record(100.0, description="d", deprecated=False, monitored=True),
            "v3.0.0-rc.1": record(deprecated=True),
        },
    )
    with project.store.transaction() as txn:
        txn.state.models["gnn"] = copy.deepcopy(model)
    project.close()  # a new reader: nothing held from the write
    again = Project.open(project.root).store.read()
    assert again.models["gnn"] == model
    assert again.models["gnn"].versions["1.0.0"].config == odd


def test_a_command_on_one_type_never_reads_another_types_file(two_types: Project) -> None:
    root = two_types.root
    two_types.ab.start_test(ABTestConfig("t", "a", treatment_version="1.1.0"))
    two_types.registry.promote_to_champion("b", "2.0.0")
    two_types.close()
    broken = type_file(root, "b")
    broken.write_bytes(b"not a model type file\n")  # reading it is an error
    for args in (
        ("champion", "a"),
        ("show", "a", "1.0.0"),
        ("list", "a"),
        ("register", "a", "3.0.0", "--path", "/m"),
        ("ab", "assign", "a", "user-1"),
        ("ab", "finalize", "t", "rollback"),
        ("promote", "a", "2.0.0"),
        ("rollback", "a"),
        ("deprecate", "a", "1.1.0"),
    ):
        code, _, err = cli(root, *args)
        assert code == 0, (args, err)
    code, _, err = cli(root, "champion", "b")
    assert code == 1 and err.startswith("error: ") and str(broken) in err, err
    assert broken.read_bytes() == b"not a model type file\n"


def test_a_commit_writes_only_the_types_it_changed(two_types: Project) -> None:
    root = two_types.root
    b_before = type_file(root, "b")
    a_before = type_file(root, "a")
    generation = index(root)["generation"]
    assert isinstance(generation, int)
    two_types.registry.promote_to_champion("a", "2.0.0")
    assert index(root)["generation"] == generation + 1
    assert type_file(root, "b") == b_before  # the same file, not rewritten
    assert type_file(root, "a") == root / "models" / "a" / f"{generation + 1}.jsonl"
    assert a_before.exists()  # kept one commit, for a reader a commit behind
    two_types.registry.promote_to_champion("a", "1.1.0")
    assert not a_before.exists()  # two commits old: removed
    assert sorted(p.name for p in (root / "models" / "a").iterdir()) == [
        f"{generation + 1}.jsonl",
        f"{generation + 2}.jsonl",
    ]


def test_a_reader_two_commits_behind_reads_the_type_as_it_is_now(two_types: Project) -> None:
    two_types.close()
    held = Project.open(two_types.root).store.read()  # names only: no type read yet
    mlops = str(Path(sys.executable).with_name("mlops"))
    for version in ("2.0.0", "1.1.0"):  # another process
        subprocess.run([mlops, "-C", str(two_types.root), "promote", "a", version], check=True)
    assert not (two_types.root / "models" / "a" / f"{held.model_files['a'][0]}.jsonl").exists()
    assert held.models["a"].champion == "1.1.0"


def test_a_model_type_file_with_a_bad_line_is_an_error_naming_file_and_key(
    two_types: Project,
) -> None:
    root = two_types.root
    path = type_file(root, "a")
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    row["traffic_percentage"] = 250
    path.write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")
    two_types.close()
    with pytest.raises(StateError, match=r"\.jsonl: models\.a\.versions\.1\.0\.0"):
        Project.open(root).registry.get_champion("a")


def test_a_file_cut_short_is_an_error(two_types: Project) -> None:
    path = type_file(two_types.root, "a")
    path.write_bytes(path.read_bytes()[:-5])
    two_types.close()
    with pytest.raises(StateError, match="not a whole model type file"):
        Project.open(two_types.root).registry.get_champion("a")


def test_many_lines_with_the_digest_are_read_and_a_changed_one_is_checked(
    tmp_path: Path,
) -> None:
    """Past 64 new lines the digest vouches for the file; an edit breaks the digest, so every
    line is checked again."""
    project = Project.init(tmp_path / "p")
    versions = {f"1.{i}.0": record() for i in range(100)}
    versions["1.99.0"].traffic_percentage = 100.0
    with project.store.transaction() as txn:
        txn.state.models["big"] = ModelType("big", "1.99.0", [], versions)
    project.close()
    assert Project.open(project.root).registry.get_champion("big").version == "1.99.0"
    project.close()
    path = type_file(project.root, "big")
    path.write_text(path.read_text().replace('"traffic_percentage":0.0', '"traffic_percentage":-1', 1))
    with pytest.raises(StateError, match="traffic_percentage"):
        Project.open(project.root).registry.get_champion("big")


def test_listing_pages_over_types_in_name_then_semver_order(two_types: Project) -> None:
    registry = two_types.registry
    every = [(v.model_type, v.version) for v in registry.list_versions()]
    assert every == [
        ("a", "1.0.0"), ("a", "1.1.0"), ("a", "2.0.0"),
        ("b", "1.0.0"), ("b", "1.1.0"), ("b", "2.0.0"),
    ]
    pages = [
        [(v.model_type, v.version) for v in registry.list_versions(limit=4, offset=offset)]
        for offset in (0, 4, 8)
    ]
    assert pages == [every[:4], every[4:], []]
    assert [v.version for v in registry.list_versions("b", limit=1, offset=1)] == ["1.1.0"]
    assert registry.list_versions(limit=0) == []  # 0 is a page, the bound is below it
    for bad, said in (({"offset": -1}, "offset must be >= 0, not -1"),
                      ({"limit": -2}, "limit must be >= 0, not -2")):
        with pytest.raises(ValidationError, match=f"^{said}$"):
            registry.list_versions(**bad)  # type: ignore[arg-type]
    code, out, _ = cli(two_types.root, "list", "--limit", "2", "--offset", "2", "--json")
    assert code == 0
    assert [(r["model_type"], r["version"]) for r in json.loads(out)] == every[2:4]


def test_a_page_reads_only_the_types_it_covers(two_types: Project) -> None:
    two_types.close()
    type_file(two_types.root, "b").write_bytes(b"broken\n")
    project = Project.open(two_types.root)
    assert [v.version for v in project.registry.list_versions(limit=3)] == [
        "1.0.0", "1.1.0", "2.0.0",
    ]
    with pytest.raises(StateError):
        project.registry.list_versions(limit=1, offset=3)


def test_a_copy_to_change_reads_its_own_types_and_says_which_changed() -> None:
    reads: list[str] = []
    source = {"a": ModelType("a", None, [], {"1.0.0": record()}), "b": ModelType("b")}

    def load(name: str) -> ModelType:
        reads.append(name)
        return source[name]

    held = Models(names=["a", "b"], load=load, sizes={"a": 1, "b": 0})
    assert (len(held), "b" in held, reads) == (2, True, [])
    assert held.size("a") == 1 and reads == []
    changed = copy.deepcopy(held)
    assert changed == held and changed.changed(held) == {}
    changed["a"].versions["1.0.0"].traffic_percentage = 100.0
    assert source["a"].versions["1.0.0"].traffic_percentage == 0.0  # the copy's own
    assert list(changed.changed(held)) == ["a"]
    assert changed != held
    changed["c"] = ModelType("c")
    assert list(changed.changed(held)) == ["a", "c"]
    assert "b" not in reads  # never read: b is the same file on both sides


pg_server = fixtures.pg_server
pg_url = fixtures.pg_url


@pytest.mark.postgres
def test_a_command_on_one_type_reads_only_that_types_rows_in_postgresql(pg_url: str) -> None:
    import psycopg

    project = Project.init(pg_url)
    for name in ("a", "b"):
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion(name, v, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "a", treatment_version="1.1.0"))
    project.store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # b's rows: reading them fails
        conn.execute("UPDATE versions SET traffic_percentage = 500 WHERE model_type = 'b'")
    for args in (
        ("champion", "a"),
        ("register", "a", "2.0.0", "--path", "/m"),
        ("ab", "assign", "a", "user-1"),
        ("ab", "finalize", "t", "rollback"),
        ("promote", "a", "2.0.0"),
        ("list", "a"),
    ):
        code, _, err = cli(pg_url, *args)
        assert code == 0, (args, err)
    code, _, err = cli(pg_url, "champion", "b")
    assert code == 1 and "models.b.versions" in err and "traffic_percentage" in err, err
    again = Project.open(pg_url)
    assert again.registry.get_champion("a").version == "2.0.0"
    assert [v.version for v in again.registry.list_versions("a", limit=2, offset=1)] == [
        "1.1.0", "2.0.0",
    ]
    again.store.close()
