"""`mlops webhook ...` and `mlops alias ...` through the real entry point, on a directory:
secrets kept apart at mode 0600, bad input refused whole, a change that outlives its receiver,
dead letters shown, and the outbox's commit rule after a crash."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

from mlops_cli import ModelVersion, Project

from .conftest import Run, assert_one_error_line, snapshot
from .webhook_receiver import closed_port_url, receiver

Cli = Callable[..., Run]


def two_versions(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m.pt"))
    project.registry.register_version(ModelVersion("gnn", "1.1.0", model_path="m.pt"))


def test_the_secret_is_printed_once_and_kept_at_mode_0600_outside_the_registry(
    cli: Cli, project: Project
) -> None:
    run = cli("webhook", "add", "https://hooks.example.com/x", "--events", "promoted", "--json")
    assert run.exit_code == 0, run.stderr
    added = run.json()
    secret_file = project.root / "webhook-secrets.json"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert json.loads(secret_file.read_text()) == {added["id"]: added["secret"]}
    assert added["secret"] not in (project.root / "registry.yaml").read_text()
    listed = cli("webhook", "list", "--json").json()
    assert listed == [{k: v for k, v in added.items() if k != "secret"}]
    assert added["secret"] not in cli("webhook", "list").stdout
    secret_file.chmod(0o644)  # widened by hand: the next write narrows it again
    cli("webhook", "add", "https://hooks.example.com/y", "--events", "*")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert cli("webhook", "remove", added["id"]).exit_code == 0
    assert added["id"] not in json.loads(secret_file.read_text())


def test_bad_webhook_input_is_one_error_line_and_changes_no_byte(
    cli: Cli, project: Project
) -> None:
    two_versions(project)
    assert cli("webhook", "add", "https://ok.example.com/", "--events", "*").exit_code == 0
    before = snapshot(project.root)
    for args, words in (
        (["webhook", "add", "ftp://example.com/x", "--events", "*"], ["webhook URL"]),
        (["webhook", "add", "not a url", "--events", "*"], ["webhook URL"]),
        (["webhook", "add", "https://user:s3cret@e.example.com/", "--events", "*"],
         ["'https://***@e.example.com/'"]),
        (["webhook", "add", "https://e.example.com/", "--events", "promoted,nope"],
         ["unknown event kind", "nope"]),
        (["webhook", "add", "https://e.example.com/", "--events", "*", "--model-type", "x"],
         ["unknown model type"]),
        (["webhook", "remove", "wh-123"], ["unknown webhook"]),
        (["alias", "set", "gnn", "2024-q1", "1.0.0"], ["alias"]),
    ):
        run = cli(*args)
        assert_one_error_line(run, *words)
        assert "s3cret" not in run.stderr
        assert snapshot(project.root) == before, args


def test_a_change_succeeds_with_its_receiver_down_and_says_so_on_stderr(
    cli: Cli, project: Project
) -> None:
    two_versions(project)
    assert cli("webhook", "add", closed_port_url(), "--events", "*").exit_code == 0
    run = cli("alias", "set", "gnn", "shadow", "1.1.0")
    assert run.exit_code == 0
    assert run.stdout == "gnn alias shadow -> 1.1.0\n"
    assert run.stderr.startswith(
        "note: 1 event delivery failed (retried later): `mlops webhook deliveries` shows them\n"
    )
    assert project.registry.get_version_by_alias("gnn", "shadow").version == "1.1.0"
    shown = cli("webhook", "deliveries", "--json").json()
    assert [(d["event"], d["status"], d["attempt"]) for d in shown] == [("alias_set", "failed", 1)]


def test_a_dead_letter_is_shown_by_webhook_deliveries(cli: Cli, project: Project) -> None:
    two_versions(project)
    assert cli("config", "set", "webhooks.max_attempts", "1").exit_code == 0
    with receiver(always_fail=True) as got:
        assert cli("webhook", "add", got.url, "--events", "alias_set").exit_code == 0
        moved = cli("alias", "set", "gnn", "shadow", "1.1.0")
    assert moved.exit_code == 0
    assert "note: 1 event delivery dead-lettered (not retried): " in moved.stderr
    assert cli("webhook", "deliveries", "--status", "bogus").exit_code == 2  # a usage error
    dead = cli("webhook", "deliveries", "--status", "dead", "--json").json()
    assert [(d["event"], d["seq"], d["attempt"], d["error"]) for d in dead] == [
        ("alias_set", 1, 1, "HTTP 500")
    ]
    table = cli("webhook", "deliveries").stdout
    assert "dead" in table and "HTTP 500" in table


def test_webhook_deliver_continues_where_the_change_left_off(cli: Cli, project: Project) -> None:
    two_versions(project)
    assert cli("config", "set", "webhooks.drain_s", "0").exit_code == 0
    with receiver() as got:
        assert cli("webhook", "add", got.url, "--events", "*").exit_code == 0
        assert cli("alias", "set", "gnn", "shadow", "1.1.0").exit_code == 0
        assert got.requests == []  # drain_s 0: the change delivered nothing
        run = cli("webhook", "deliver", "--json")
        assert run.exit_code == 0
        assert run.json()["delivered"] == 1 and run.json()["pending"] == 0
    assert got.accepted[0].doc["event"] == "alias_set"


def test_outbox_lines_of_a_commit_that_never_happened_are_not_sent(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    two_versions(project)
    project.set_setting("webhooks.drain_s", "0")
    with receiver() as got:
        project.webhooks.add(got.url, "*")
        project.registry.set_alias("gnn", "shadow", "1.1.0")
        outbox = project.root / "outbox" / "events.jsonl"
        committed = outbox.stat().st_size
        # what a crash after the outbox append and before the registry replace leaves
        with outbox.open("ab") as f:
            f.write(b'{"n":2,"id":"ghost","model_type":"gnn","seq":2,"event":"promoted",'
                    b'"ts":null,"data":{}}\n')
        assert [e["id"] for e in project.store.outbox_read(0, 10)] != ["ghost"]
        assert len(project.store.outbox_read(0, 10)) == 1
        project.registry.set_alias("gnn", "shadow", "1.0.0")  # the next commit cuts the line
        assert b"ghost" not in outbox.read_bytes()[committed:]
        project.webhooks.deliver(for_s=0)
    assert [(r.doc["seq"], r.doc["data"]["version"]) for r in got.accepted] == [
        (1, "1.1.0"), (2, "1.0.0")
    ]


def test_reading_the_outbox_after_any_number_finds_exactly_the_later_entries(
    tmp_path: Path,
) -> None:
    """The directory store finds where to start by a binary search over the committed bytes:
    every boundary, across many blocks of the search (entries of uneven length)."""
    project = Project.init(tmp_path / "p")
    two_versions(project)
    project.set_setting("webhooks.drain_s", "0")
    project.webhooks.add("https://hooks.example.com/x", "*")
    for i in range(300):
        project.registry.set_alias("gnn", f"a{i}" + "x" * (i % 37), "1.0.0")
    assert (project.root / "outbox" / "events.jsonl").stat().st_size > 8 * 8192
    for after in (0, 1, 2, 57, 149, 150, 151, 298, 299, 300, 301):
        found = [e["n"] for e in project.store.outbox_read(after, 1000)]
        assert found == list(range(after + 1, 301)), after
    assert [e["n"] for e in project.store.outbox_read(100, 5)] == [101, 102, 103, 104, 105]
