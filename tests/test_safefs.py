"""safefs: no write through a planted link, FIFO or directory; modes kept; stale temps removed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_cli import jsonl, safefs
from mlops_cli.errors import StateError, ValidationError


def snapshot(top: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `top`: its mode and content hash (or link target)."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p)
            else:
                digest = ""
            out[str(p.relative_to(top))] = (st.st_mode, digest)
    return out


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory outside the project that nothing may touch."""
    top = tmp_path / "canary"
    (top / "outdir").mkdir(parents=True)
    (top / "token.txt").write_bytes(b"secret-token-without-newline")
    (top / "outdir" / "keep.txt").write_bytes(b"keep\n")
    return top


@pytest.fixture
def root(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    return proj


def test_open_in_creates_directories_and_writes(root: Path) -> None:
    fd = safefs.open_in(root, "logs/ab/t.jsonl", safefs.APPEND_FLAGS)
    try:
        os.write(fd, b"x\n")
    finally:
        os.close(fd)
    assert (root / "logs" / "ab" / "t.jsonl").read_bytes() == b"x\n"


@pytest.mark.parametrize(
    ("plant", "rel", "named"),
    [
        ("file_link", "logs/ab/t.jsonl", "logs/ab/t.jsonl"),
        ("dangling_link", "logs/ab/t.jsonl", "logs/ab/t.jsonl"),
        ("dir_link", "logs/metrics/g/1.0.0.jsonl", "logs/metrics"),
        ("fifo", "logs/ab/t.jsonl", "logs/ab/t.jsonl"),
        ("directory", "logs/ab/t.jsonl", "logs/ab/t.jsonl"),
        ("file_as_dir", "logs/metrics/g/1.0.0.jsonl", "logs/metrics"),
    ],
)
def test_planted_paths_are_clean_errors_and_outside_is_untouched(
    root: Path, canary: Path, plant: str, rel: str, named: str
) -> None:
    target = root / named
    target.parent.mkdir(parents=True, exist_ok=True)
    if plant == "file_link":
        target.symlink_to(canary / "token.txt")
    elif plant == "dangling_link":
        target.symlink_to(canary / "created-through-link.txt")
    elif plant == "dir_link":
        target.symlink_to(canary / "outdir")
    elif plant == "fifo":
        os.mkfifo(target)
    elif plant == "directory":
        target.mkdir()
    elif plant == "file_as_dir":
        target.write_bytes(b"")
    before = snapshot(canary)
    for attempt in (
        lambda: safefs.open_in(root, rel, safefs.APPEND_FLAGS),
        lambda: safefs.open_append(root / rel, root),
        lambda: safefs.atomic_replace(root, rel, b"new\n"),
    ):
        with pytest.raises(StateError, match=f"^{named} \\(in the project\\)"):
            os.close(attempt())  # type: ignore[func-returns-value]
    assert snapshot(canary) == before


def test_log_writer_never_follows_links(root: Path, canary: Path) -> None:
    """Issue 12 case 1: an append through a link used to cut the token file outside."""
    (root / "logs" / "ab").mkdir(parents=True)
    (root / "logs" / "ab" / "t.jsonl").symlink_to(canary / "token.txt")
    (root / "logs" / "metrics").symlink_to(canary / "outdir")
    before = snapshot(canary)
    writer = jsonl.LogWriter()
    with pytest.raises(StateError, match=r"logs/ab/t.jsonl"):
        writer.append(root / "logs/ab/t.jsonl", b'{"a":1}\n', 1.0, root=root)
    with pytest.raises(StateError, match=r"^logs/metrics "):
        writer.append(root / "logs/metrics/g/1.0.0.jsonl", b'{"a":1}\n', 1.0, root=root)
    with pytest.raises(StateError, match=r"^logs/metrics "):
        writer.append_batch(root / "logs/metrics/g/1.0.0.jsonl", "b1", b"{}\n", "s", 1.0, root=root)
    with (
        pytest.raises(StateError, match=r"^logs/ab/t.jsonl "),
        jsonl.locked_log(root / "logs/ab/t.jsonl", 1.0, root=root),
    ):
        pass
    assert snapshot(canary) == before


def test_batch_journal_link_is_refused(root: Path, canary: Path) -> None:
    log = root / "logs" / "ab" / "t.jsonl"
    log.parent.mkdir(parents=True)
    jsonl.journal_path(log).symlink_to(canary / "token.txt")
    before = snapshot(canary)
    writer = jsonl.LogWriter()
    with pytest.raises(
        StateError, match=r"logs/ab/\.t\.jsonl\.batches\.jsonl \(in the project\) is a symbolic"
    ):
        writer.append_batch(log, "b1", b"{}\n", "s", 1.0, root=root)
    assert snapshot(canary) == before


def test_log_swapped_for_a_link_after_open_is_refused(root: Path, canary: Path) -> None:
    """A cached descriptor is not reused once the path became a link: reopen, then refuse."""
    log = root / "logs" / "ab" / "t.jsonl"
    writer = jsonl.LogWriter()
    writer.append(log, b"{}\n", 1.0, root=root)
    log.unlink()
    log.symlink_to(canary / "token.txt")
    before = snapshot(canary)
    with pytest.raises(StateError, match="symbolic link"):
        writer.append(log, b"{}\n", 1.0, root=root)
    writer.forget(log)
    assert snapshot(canary) == before


def test_atomic_replace_keeps_mode(root: Path) -> None:
    path = root / "registry.yaml"
    path.write_bytes(b"old\n")
    path.chmod(0o600)
    safefs.atomic_replace(root, "registry.yaml", b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    safefs.atomic_replace(root, path, b"newer\n")  # an absolute path inside the root
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_atomic_replace_new_file_gets_default_mode(root: Path) -> None:
    old = os.umask(0o022)
    try:
        safefs.atomic_replace(root, "sub/dir/f.prom", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "sub/dir/f.prom").stat().st_mode) == 0o644
    assert not [p for p in (root / "sub/dir").iterdir() if p.name.endswith(".tmp")]


def test_atomic_replace_refuses_symlinked_target(root: Path, canary: Path) -> None:
    (root / "registry.yaml").symlink_to(canary / "token.txt")
    before = snapshot(canary)
    with pytest.raises(StateError, match=r"^registry.yaml .*symbolic link"):
        safefs.atomic_replace(root, "registry.yaml", b"new\n")
    assert (root / "registry.yaml").is_symlink()  # refused, not silently replaced
    assert snapshot(canary) == before


def test_atomic_replace_long_name_stays_within_name_max(root: Path) -> None:
    """Issue 12 case 10: a 251-byte name used to get a temp name past 255 bytes."""
    name = "n" * 251
    safefs.atomic_replace(root, name, b"x")
    assert (root / name).read_bytes() == b"x"
    assert len(safefs.temp_name(name, 4_000_000)) <= safefs.NAME_MAX


def test_atomic_replace_over_planted_temp_link(root: Path, canary: Path) -> None:
    """A link planted under our own temp name is removed, never written through."""
    (root / safefs.temp_name("registry.yaml")).symlink_to(canary / "token.txt")
    before = snapshot(canary)
    safefs.atomic_replace(root, "registry.yaml", b"new\n")
    assert (root / "registry.yaml").read_bytes() == b"new\n"
    assert snapshot(canary) == before


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_temps_of_dead_writers_only(root: Path, canary: Path) -> None:
    dead = _dead_pid()
    stale = root / safefs.temp_name("registry.yaml", dead)
    stale.write_bytes(b"half")
    live = root / safefs.temp_name("registry.yaml", os.getpid())
    live.write_bytes(b"mine")
    stale_link = root / safefs.temp_name("x" * 251, dead)
    stale_link.symlink_to(canary / "token.txt")
    stale_dir = root / safefs.temp_name("events.jsonl", dead)
    stale_dir.mkdir()
    before = snapshot(canary)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert safefs.remove_stale_temps(fd, "registry.yaml") == 1
        assert safefs.remove_stale_temps(fd, "x" * 251) == 1
        assert safefs.remove_stale_temps(fd, "events.jsonl") == 0  # a directory: left alone
    finally:
        os.close(fd)
    assert not stale.exists() and live.exists() and not stale_link.is_symlink()
    assert stale_dir.is_dir()
    assert snapshot(canary) == before


def test_escaping_relpaths_are_refused(root: Path) -> None:
    for bad in ("../x", "a/../../x", "", "/etc/passwd", "."):
        with pytest.raises(ValidationError):
            safefs.split_relpath(root, bad)


def test_fifo_never_blocks(root: Path) -> None:
    """A FIFO at a write path fails at once (a plain open for writing would block)."""
    os.mkfifo(root / "events.jsonl")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from mlops_cli import safefs\n"
            "try:\n    safefs.open_in(Path(sys.argv[1]), 'events.jsonl', 1)\n"
            "except Exception as e:\n    print(type(e).__name__, e)",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=120,  # (a FIFO opened without the check would block forever)
    )
    assert proc.stdout.startswith("StateError events.jsonl (in the project) is a FIFO")


def test_registry_write_keeps_mode_and_refuses_a_link(tmp_path: Path, canary: Path) -> None:
    """Issue 12 case 11: chmod 600 registry.yaml became 0644; a linked one was replaced."""
    from mlops_cli import ModelVersion, Project

    project = Project.init(tmp_path / "p")
    project.registry_path.chmod(0o600)
    project.registry.register_version(ModelVersion("g", "1.0.0", model_path="/m"))
    assert stat.S_IMODE(project.registry_path.stat().st_mode) == 0o600

    outside = canary / "registry.yaml"
    outside.write_bytes(project.registry_path.read_bytes())
    project.registry_path.unlink()
    project.registry_path.symlink_to(outside)
    before = snapshot(canary)
    with pytest.raises(StateError, match=r"^registry\.yaml \(in the project\) is a symbolic link"):
        Project.open(project.root).registry.register_version(
            ModelVersion("g", "1.1.0", model_path="/m")
        )
    assert project.registry_path.is_symlink()
    assert snapshot(canary) == before


def test_open_read_refuses_links_and_fifos_and_creates_nothing(root: Path, canary: Path) -> None:
    (root / "logs").mkdir()
    (root / "logs" / "ok.jsonl").write_bytes(b"{}\n")
    fd = safefs.open_read(root, "logs/ok.jsonl")
    try:
        assert os.read(fd, 10) == b"{}\n"
    finally:
        os.close(fd)
    os.mkfifo(root / "logs" / "fifo.jsonl")
    (root / "logs" / "link.jsonl").symlink_to(canary / "token.txt")
    with pytest.raises(StateError, match="is a FIFO"):
        safefs.open_read(root, "logs/fifo.jsonl")
    with pytest.raises(StateError, match="is a symbolic link"):
        safefs.open_read(root, "logs/link.jsonl")
    with pytest.raises(FileNotFoundError):
        safefs.open_read(root, "logs/drift/g/1.0.0/reference.jsonl")
    assert not (root / "logs" / "drift").exists()


def test_check_path(root: Path, canary: Path) -> None:
    assert safefs.check_path(root, ".mlops.lock") is False
    assert safefs.check_path(root, "logs/ab/t.jsonl") is False
    assert not (root / "logs").exists()
    (root / ".mlops.lock").symlink_to(canary / "token.txt")
    with pytest.raises(StateError, match=r"^\.mlops\.lock \(in the project\) is a symbolic link"):
        safefs.check_path(root, ".mlops.lock")
    (root / "logs").symlink_to(canary / "outdir")
    with pytest.raises(StateError, match=r"^logs \(in the project\) is a symbolic link"):
        safefs.check_path(root, "logs/ab/t.jsonl")
    (root / "events.jsonl").write_bytes(b"")
    assert safefs.check_path(root, "events.jsonl") is True


def test_atomic_replace_not_durable_for_caches(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(safefs.os, "fsync", synced.append)
    safefs.atomic_replace(root, "logs/.summary.json", b"{}", durable=False)
    assert synced == [] and (root / "logs/.summary.json").read_bytes() == b"{}"
    safefs.atomic_replace(root, "registry.yaml", b"x")
    assert len(synced) == 2  # the file, then its directory


def test_a_hard_link_is_refused_for_writes_and_read_as_it_is(root: Path, canary: Path) -> None:
    """A hard link is a regular file: appending to it (or cutting its torn tail) would change
    the file outside the project that shares its data."""
    (root / "logs").mkdir()
    os.link(canary / "token.txt", root / "logs" / "t.jsonl")
    before = snapshot(canary)
    for flags in (safefs.APPEND_FLAGS, os.O_WRONLY, os.O_RDWR):
        with pytest.raises(StateError, match=r"^logs/t\.jsonl \(in the project\) has 2 hard links"):
            safefs.open_in(root, "logs/t.jsonl", flags)
    with pytest.raises(StateError, match="cp -al"):
        jsonl.WRITER.append(root / "logs" / "t.jsonl", b"{}\n", 1.0, root=root)
    with (
        pytest.raises(StateError, match="give it its own copy"),
        jsonl.locked_log(root / "logs" / "t.jsonl", 1.0, root=root),
    ):
        pass
    with pytest.raises(StateError, match=r"^\.mlops\.lock \(in the project\) has 2 hard links"):
        os.link(canary / "outdir" / "keep.txt", root / ".mlops.lock")
        safefs.check_path(root, ".mlops.lock")
    assert snapshot(canary) == before
    fd = safefs.open_read(root, "logs/t.jsonl")  # reading changes nothing: allowed
    os.close(fd)


def test_atomic_replace_refuses_a_hard_linked_target(root: Path, canary: Path) -> None:
    os.link(canary / "token.txt", root / "registry.yaml")
    with pytest.raises(StateError, match=r"^registry\.yaml \(in the project\) has 2 hard links"):
        safefs.atomic_replace(root, "registry.yaml", b"new")
    assert (root / "registry.yaml").read_bytes() == b"secret-token-without-newline"
    assert os.stat(root / "registry.yaml").st_nlink == 2  # not parted from its other path
    (canary / "token.txt").unlink()  # one link left: an ordinary file again
    safefs.atomic_replace(root, "registry.yaml", b"new")
    assert (root / "registry.yaml").read_bytes() == b"new"


def test_a_log_linked_after_it_was_opened_is_refused(root: Path, canary: Path) -> None:
    """The writer keeps a log's descriptor open: a hard link made later is seen at the next
    append, before anything is written."""
    writer = jsonl.LogWriter()
    log = root / "logs" / "t.jsonl"
    writer.append(log, b"{}\n", 1.0, root=root)
    os.link(log, canary / "backup.jsonl")
    with pytest.raises(StateError, match=r"^logs/t\.jsonl \(in the project\) has 2 hard links"):
        writer.append(log, b"{}\n", 1.0, root=root)
    with pytest.raises(StateError, match="has 2 hard links"):
        writer.append_stream(log, "b1", lambda _stamp: iter([b"{}\n"]), 1.0, root=root)
    assert (canary / "backup.jsonl").read_bytes() == b"{}\n"
