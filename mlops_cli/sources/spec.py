"""A source's declaration: the YAML a user writes, validated into a `Source`.

```yaml
engine: duckdb                  # or spark
path: lake/requests/*.parquet   # a Parquet file, glob or directory (relative to this file)
# table: db.requests            # spark: a table instead of a path
# master: local[*]              # spark: the master URL of the session mlops starts
columns: {variant: arm, user_id: uid, ts: event_time}   # our name: theirs (else the same)
filter: {experiment: checkout-v2}                       # their column = value, bound
reference: {stream: drift/gnn/1.0.0/reference}          # drift: the reference's filter
```

Column names are checked against the engine's schema before any query and quoted; filter
values are bound as query parameters: nothing the file holds is ever spliced in as SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ValidationError

ENGINES = ("duckdb", "spark")
# Our names, and what each must be in the source.
OUR_COLUMNS = {
    "variant": "string",
    "user_id": "string or integer",
    "confidence": "number",
    "inference_time_ms": "number",
    "error": "boolean or integer",
    "ts": "timestamp",
    "prediction": "number",
    "seq": "integer",
}
AB_REQUIRED = ("variant", "confidence", "inference_time_ms", "ts")
AB_OPTIONAL = ("user_id", "error", "seq")
DRIFT_REQUIRED = ("prediction", "confidence", "ts")
DRIFT_OPTIONAL = ("seq",)
KEYS = (
    "engine", "path", "table", "master", "threads", "memory_limit", "columns", "filter",
    "reference",
)
_MEMORY = re.compile(r"^[1-9][0-9]{0,6} ?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
MAX_FILTERS = 32
MAX_TEXT = 4096
_MASTER = re.compile(r"^(local(\[(\*|[1-9][0-9]{0,3})\])?|(spark|k8s|yarn)[A-Za-z0-9:/._\-\[\]]*)$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Source:
    """Where a test's requests or a version's drift samples live, and how to read them."""

    engine: str
    path: str | None = None
    table: str | None = None
    master: str | None = None
    threads: int | None = None  # duckdb: threads (default: every core)
    memory_limit: str | None = None  # duckdb: such as 200MB (default: 80% of RAM)
    columns: dict[str, str] = field(default_factory=dict)
    filter: dict[str, Scalar] = field(default_factory=dict)
    reference: dict[str, Scalar] | None = None

    def column(self, ours: str) -> str:
        """Their name for one of our columns (the same name unless mapped)."""
        return self.columns.get(ours, ours)

    def to_doc(self) -> dict[str, Any]:
        """Plain data, as kept in the registry (`from_doc` reads it back)."""
        doc: dict[str, Any] = {"engine": self.engine}
        for key in ("path", "table", "master", "threads", "memory_limit"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.columns:
            doc["columns"] = dict(self.columns)
        if self.filter:
            doc["filter"] = dict(self.filter)
        if self.reference is not None:
            doc["reference"] = dict(self.reference)
        return doc

    def describe(self) -> str:
        where = self.path if self.path is not None else f"table {self.table}"
        return f"{self.engine} {where}"

    @classmethod
    def from_doc(cls, doc: Any, where: str = "source", base: Path | None = None) -> Source:
        """Validate a declaration; `base` resolves a relative `path` (the YAML's folder).
        Raises ValidationError naming `where` and the key."""
        if not isinstance(doc, dict):
            raise ValidationError(f"{where}: expected a mapping with `engine`, not {doc!r}")
        unknown = sorted(str(k) for k in set(doc) - set(KEYS))
        if unknown:
            raise ValidationError(
                f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(KEYS)})"
            )
        engine = doc.get("engine")
        if engine not in ENGINES:
            raise ValidationError(f"{where}: engine must be duckdb or spark, not {engine!r}")
        path = _text(doc.get("path"), where, "path")
        table = _text(doc.get("table"), where, "table")
        master = _text(doc.get("master"), where, "master")
        if (path is None) == (table is None):
            raise ValidationError(f"{where}: give exactly one of `path` and `table`")
        if table is not None and engine != "spark":
            raise ValidationError(f"{where}: `table` needs engine spark (duckdb reads a path)")
        if table is not None and not _TABLE.match(table):
            raise ValidationError(
                f"{where}: table must be a name such as db.requests, not {table!r}"
            )
        if master is not None:
            if engine != "spark":
                raise ValidationError(f"{where}: `master` is a spark setting")
            if not _MASTER.match(master):
                raise ValidationError(
                    f"{where}: master must be local[*], local[N] or a cluster URL, not {master!r}"
                )
        threads = doc.get("threads")
        if threads is not None and (
            engine != "duckdb" or isinstance(threads, bool) or not isinstance(threads, int)
            or not 1 <= threads <= 1024
        ):
            raise ValidationError(
                f"{where}: threads must be a duckdb count 1-1024, not {threads!r}"
            )
        memory = _text(doc.get("memory_limit"), where, "memory_limit")
        if memory is not None and (engine != "duckdb" or not _MEMORY.match(memory)):
            raise ValidationError(
                f"{where}: memory_limit must be a duckdb size such as 200MB, not {memory!r}"
            )
        if path is not None and "://" not in path:
            resolved = Path(path).expanduser()
            if not resolved.is_absolute() and base is not None:
                resolved = base / resolved
            path = str(resolved)
        columns = _columns(doc.get("columns"), where)
        filters = _filter(doc.get("filter"), where, "filter")
        reference = None
        if doc.get("reference") is not None:
            reference = _filter(doc["reference"], where, "reference")
        return cls(engine, path, table, master, threads, memory, columns, filters, reference)


def load(path: str | Path) -> Source:
    """Read and validate a source YAML file (bounded like every YAML from users)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read source file {file}: {exc.strerror or exc}") from None
    from ..yamlsafe import load_yaml  # (not at start-up: only a source file is YAML)

    doc = load_yaml(data, str(file))
    return Source.from_doc(doc, str(file), file.resolve().parent)


def _text(value: Any, where: str, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ValidationError(f"{where}: {key} must be non-empty text, not {value!r}")
    if "\x00" in value:
        raise ValidationError(f"{where}: {key} holds a NUL byte")
    return value


def _identifier(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
        raise ValidationError(f"{where}: {key} must name a column, not {value!r}")
    return value


def _columns(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: columns must map our names to yours, not {value!r}")
    out = {}
    for ours, theirs in value.items():
        if ours not in OUR_COLUMNS:
            raise ValidationError(
                f"{where}: columns: unknown name {ours!r} (ours: {', '.join(OUR_COLUMNS)})"
            )
        out[str(ours)] = _identifier(theirs, where, f"columns.{ours}")
    return out


def _filter(value: Any, where: str, key: str) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: {key} must map columns to values, not {value!r}")
    if len(value) > MAX_FILTERS:
        raise ValidationError(f"{where}: {key} has more than {MAX_FILTERS} columns")
    out: dict[str, Scalar] = {}
    for column, wanted in value.items():
        name = _identifier(column, where, f"{key} key")
        ok = isinstance(wanted, (bool, int, float)) or (
            isinstance(wanted, str) and len(wanted) <= MAX_TEXT and "\x00" not in wanted
        )
        if not ok or (isinstance(wanted, float) and wanted != wanted):
            raise ValidationError(
                f"{where}: {key}.{name} must be a text, number or boolean value, not {wanted!r}"
            )
        out[name] = wanted
    return out
