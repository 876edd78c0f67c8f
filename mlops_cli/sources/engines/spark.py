"""Spark tables or Parquet paths through a SparkSession (the `spark` extra, Java 17+).

A caller may hand mlops its own session (`use_session`); else the first Spark source starts
one on its `master` (default `local[*]`) with the settings that work offline on a small
machine, kept for the process (a session costs seconds to start)."""

from __future__ import annotations

import hashlib
from typing import Any

from ...errors import MissingExtraError, ServiceError, ValidationError
from ..queries import SPARK, Query
from ..spec import Source

EXTRA = "pip install '.[spark]' in a checkout of mlops, and Java 17 or 21 (docs/engines.md)"
_session: Any = None


def use_session(session: Any) -> None:
    """Run Spark sources through this SparkSession (None: start one when needed)."""
    global _session
    _session = session


def session(master: str | None) -> Any:
    """The session Spark sources use: the caller's, or one started here."""
    global _session
    if _session is not None:
        return _session
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingExtraError(
            f"source engine spark needs the {exc.name} package: {EXTRA}"
        ) from None
    builder = (
        SparkSession.builder.master(master or "local[*]")
        .appName("mlops")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
    )
    try:
        _session = builder.getOrCreate()
    except Exception as exc:  # Java missing, a master that cannot be reached: one clean line
        raise ServiceError(
            f"spark: cannot start a session on {master or 'local[*]'}: {_first_line(exc)}"
        ) from None
    return _session


class SparkEngine:
    """A source read through the shared SparkSession."""

    dialect = SPARK

    def __init__(self, source: Source) -> None:
        self.where = source.describe()
        self._spark = session(source.master)
        if source.table is not None:
            self.relation = ".".join(SPARK.quote(p) for p in source.table.split("."))
            return
        path = source.path or ""
        view = "mlops_source_" + hashlib.sha256(path.encode()).hexdigest()[:16]
        try:
            reader = self._spark.read
            if "*" not in path:  # a folder of partitions: its Parquet files, no inferred columns
                reader = (
                    reader.option("recursiveFileLookup", "true")
                    .option("pathGlobFilter", "*.parquet")
                    .option("mergeSchema", "true")
                )
            reader.parquet(path).createOrReplaceTempView(view)
        except Exception as exc:
            raise ServiceError(f"source {self.where}: {_first_line(exc)}") from None
        self.relation = SPARK.quote(view)

    def _frame(self, query: Query) -> Any:
        try:
            return self._spark.sql(query.sql, args=query.params or None)
        except Exception as exc:
            raise ValidationError(f"source {self.where}: {_first_line(exc)}") from None

    def schema(self) -> dict[str, str]:
        frame = self._frame(Query(f"SELECT * FROM {self.relation}", {}))
        return {f.name: f.dataType.simpleString() for f in frame.schema.fields}

    def footer_proves(self, bounds: dict[str, tuple[float, float] | None]) -> bool:
        """Spark: never from the footers (the query checks every value)."""
        return False

    def rows(self, query: Query) -> list[tuple[Any, ...]]:
        frame = self._frame(query)
        try:
            return [tuple(r) for r in frame.collect()]
        except Exception as exc:
            raise ServiceError(f"source {self.where}: {_first_line(exc)}") from None

    def columns(self, query: Query) -> dict[str, Any]:
        frame = self._frame(query)
        try:
            table = frame.toArrow()
        except Exception as exc:
            raise ServiceError(f"source {self.where}: {_first_line(exc)}") from None
        return {name: table.column(name).to_numpy() for name in table.column_names}

    def close(self) -> None:
        """The session stays for the next source (it is the process's)."""


def _first_line(exc: BaseException) -> str:
    """The line that says what went wrong (a Java error's own message, not the call's)."""
    lines = [line.strip(" :") for line in str(exc).strip().splitlines() if line.strip(" :")]
    if len(lines) > 1 and lines[0].startswith("An error occurred while calling"):
        return lines[1]
    return lines[0] if lines else type(exc).__name__
