"""`mlops store export --parquet DIR`: a project's logs as Parquet a lake can hold, so a growing
project can move its history out and declare it a source (docs/engines.md).

Layout: `DIR/stream=<name>/day=<YYYY-MM-DD>/part-0.parquet`, the stream name percent-encoded
(`/` is `%2F`, `+` is `%2B`), so every name is one safe path segment. Each file also holds
the `stream` and `day` columns themselves (readers need no partition discovery; ours turn it
off) and `seq`, the record's position in its stream, which breaks ties of `ts` in a window.
Requests and samples get typed columns (`variant`, `user_id`, `confidence`,
`inference_time_ms`, `error`, `prediction`); any other record (events, checks) keeps its
fields as JSON text in `record`. The export is written beside DIR and renamed into place
whole: a failure leaves no DIR.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import MissingExtraError, ValidationError
from ..store.base import Store
from ..timeutil import parse_ts

TYPED = {
    "variant": "string",
    "user_id": "string",
    "confidence": "float64",
    "inference_time_ms": "float64",
    "error": "bool",
    "prediction": "float64",
}
ROWS_PER_GROUP = 100_000


@dataclass
class Exported:
    """What an export wrote: records per stream and the files."""

    target: str
    records: dict[str, int]
    files: int

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "records": self.records, "files": self.files}


def stream_dir(stream: str) -> str:
    """A stream's partition folder name: `stream=` and the name, percent-encoded."""
    return "stream=" + quote(stream, safe="")


def _moment(ts: Any) -> datetime:
    moment = ts if isinstance(ts, datetime) else parse_ts(str(ts))
    return moment.astimezone(timezone.utc)


def export_parquet(store: Store, target: str | Path) -> Exported:
    """Write every stream of a store as Parquet under `target` (a new or empty folder)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError(
            "store export --parquet needs pyarrow: pip install '.[duckdb]' in a checkout of mlops"
        ) from None
    out = Path(target)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValidationError(f"{out} exists and is not an empty folder; export into a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    counts: dict[str, int] = {}
    files = 0
    try:
        for stream in sorted(store.streams()):
            written, n = _write_stream(pa, pq, store, stream, work / stream_dir(stream))
            counts[stream] = n
            files += written
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Exported(str(out), counts, files)


def _write_stream(pa: Any, pq: Any, store: Store, stream: str, folder: Path) -> tuple[int, int]:
    """One stream's records, a file per day, streamed a chunk at a time."""
    writers: dict[date, Any] = {}
    seq = 0
    try:
        for chunk in store.scan(stream):
            by_day: dict[date, list[Row]] = {}
            for record in chunk:
                moment = _moment(record.get("ts"))
                by_day.setdefault(moment.date(), []).append((seq, moment, record))
                seq += 1
            for day, rows in by_day.items():
                table = _table(pa, stream, day, rows)
                writer = writers.get(day)
                if writer is None:
                    where = folder / f"day={day.isoformat()}"
                    where.mkdir(parents=True, exist_ok=True)
                    writer = writers[day] = pq.ParquetWriter(where / "part-0.parquet", table.schema)
                writer.write_table(table, row_group_size=ROWS_PER_GROUP)
    finally:
        for writer in writers.values():
            writer.close()
    return len(writers), seq


Row = tuple[int, datetime, dict[str, Any]]  # seq, ts, the record


def _table(pa: Any, stream: str, day: date, rows: list[Row]) -> Any:
    import orjson

    columns: dict[str, Any] = {
        "stream": pa.array([stream] * len(rows), pa.string()),
        "day": pa.array([day] * len(rows), pa.date32()),
        "seq": pa.array([r[0] for r in rows], pa.int64()),
        "ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
    }
    kind = stream.split("/", 1)[0]
    sample = stream.startswith("drift/") and stream.rsplit("/", 1)[-1] in (
        "reference", "production",
    )
    if kind in ("ab", "metrics") or sample:
        names = ("prediction", "confidence") if sample else (
            "variant", "user_id", "confidence", "inference_time_ms", "error"
        )
        for name in names:
            values = [r[2].get(name) for r in rows]
            if name == "user_id":
                values = [None if v is None else str(v) for v in values]
            if name == "error":
                values = [bool(v) for v in values]
            columns[name] = pa.array(values, TYPED[name])
    else:
        columns["record"] = pa.array(
            [orjson.dumps({k: v for k, v in r[2].items() if k != "ts"}, default=str).decode()
             for r in rows],
            pa.string(),
        )
    return pa.table(columns)
