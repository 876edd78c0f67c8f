"""The spool: buffered records that could not reach the server before the process ended.

A private directory (`MLOPS_SPOOL_DIR`, else `$XDG_STATE_HOME/mlops/spool`, else
`~/.local/state/mlops/spool`; mode 0700, files 0600) holds one file per process that exited with
the server away, named by a hash of the store's URL (its password left out), so the next open of
the same URL finds it. Each line is one chunk: its stream, its batch id and its rows, so a replay
of a chunk that had in fact been committed is skipped (`batches`), and a replay cut short is
simply replayed again. Records the server refused are kept beside them (`*.rejected.jsonl`),
never replayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .connection import redact
from .rows import route

SPOOL_ENV = "MLOPS_SPOOL_DIR"
FLUSH_PREFIX = "flush:"  # the batch ids of the buffer's chunks (a record written once each)


@dataclass(eq=False)
class Chunk:
    """Records of one stream written in one transaction under one batch id."""

    stream: str
    rows: list[tuple[Any, ...]]
    batch_id: str = field(default_factory=lambda: f"{FLUSH_PREFIX}{uuid.uuid4().hex}")


def spool_dir() -> Path:
    """Where spooled records go (see the module docstring)."""
    chosen = os.environ.get(SPOOL_ENV)
    if chosen:
        return Path(chosen).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mlops" / "spool"


def url_key(url: str) -> str:
    """The name spooled files of a store share: the same database under another password is
    the same store."""
    return hashlib.sha256(redact(url).encode()).hexdigest()[:16]


def _private_dir(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def _row_json(row: tuple[Any, ...]) -> list[Any]:
    return [v.isoformat() if isinstance(v, datetime) else v for v in row]


def _row_from_json(values: list[Any], ts_at: int) -> tuple[Any, ...]:
    """A row as it was buffered: its ts (at `ts_at`, by its table's columns) a datetime again."""
    row = list(values)
    row[ts_at] = datetime.fromisoformat(row[ts_at])
    return tuple(row)


def write_spool(folder: Path, url: str, chunks: list[Chunk]) -> Path:
    """Write chunks to a new private file (complete, or not there at all); its path."""
    _private_dir(folder)
    name = f"{url_key(url)}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    partial = folder / f"{name}.partial"
    final = folder / f"{name}.jsonl"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                line = {"stream": chunk.stream, "batch_id": chunk.batch_id}
                line["rows"] = [_row_json(r) for r in chunk.rows]  # type: ignore[assignment]
                out.write(orjson.dumps(line) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return final


def reject(folder: Path, url: str, chunk: Chunk, reason: str) -> Path:
    """Keep a record the server refused (one JSON line with the reason); the file's path."""
    _private_dir(folder)
    path = folder / f"{url_key(url)}.rejected.jsonl"
    line = {"stream": chunk.stream, "reason": reason, "rows": [_row_json(r) for r in chunk.rows]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(orjson.dumps(line, default=str) + b"\n")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_spooled(folder: Path, url: str) -> Iterator[tuple[Path, list[Chunk]]]:
    """The spooled files of this store, each claimed (renamed) so that one process replays it;
    a claim whose process died is taken over. The caller deletes a file once replayed, or
    gives it back with `release`."""
    if not folder.is_dir():
        return
    key = url_key(url)
    for path in sorted(folder.glob(f"{key}.*")):
        parts = path.name.split(".")
        if path.name.endswith(".jsonl") and len(parts) == 4:  # key.pid.rand.jsonl
            base = path.name[: -len(".jsonl")]
        elif len(parts) == 5 and parts[3] == "replaying" and not _alive(int(parts[4])):
            base = ".".join(parts[:3])
        else:
            continue
        claimed = folder / f"{base}.replaying.{os.getpid()}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue  # another process claimed it first
        chunks = []
        with open(claimed, "rb") as f:
            for line in f:
                doc = orjson.loads(line)
                ts_at = route(doc["stream"])[0].columns.index("ts")
                rows = [_row_from_json(values, ts_at) for values in doc["rows"]]
                chunks.append(Chunk(doc["stream"], rows, doc["batch_id"]))
        yield claimed, chunks


def release(claimed: Path) -> None:
    """Give a claimed file back for a later replay."""
    base = claimed.name.split(".replaying.")[0]
    os.rename(claimed, claimed.with_name(f"{base}.jsonl"))
