"""DuckDB over Parquet paths, in this process (the `duckdb` extra)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Any

from ...errors import MissingExtraError, ServiceError, ValidationError
from ..queries import DUCKDB, Query, footer_check
from ..spec import Source

EXTRA = "pip install '.[duckdb]' in a checkout of mlops (see docs/engines.md)"


class DuckDBEngine:
    """One in-memory DuckDB connection reading the source's Parquet files."""

    dialect = DUCKDB

    def __init__(self, source: Source) -> None:
        try:
            import duckdb
        except ImportError as exc:
            raise MissingExtraError(
                f"source engine duckdb needs the {exc.name} package: {EXTRA}"
            ) from None
        # Drift windows come back as Arrow columns: found now, imported only then.
        if importlib.util.find_spec("pyarrow") is None:
            raise MissingExtraError(f"source engine duckdb needs the pyarrow package: {EXTRA}")
        self._duckdb = duckdb
        path = source.path or ""
        self._files = os.path.join(path, "**", "*.parquet") if os.path.isdir(path) else path
        self.where = source.describe()
        config: dict[str, Any] = {}
        if source.threads is not None:
            config["threads"] = source.threads
        if source.memory_limit is not None:  # beyond it DuckDB spills to a temp folder
            config["memory_limit"] = source.memory_limit
            config["temp_directory"] = os.path.join(tempfile.gettempdir(), "mlops-duckdb")
        try:
            self._con = duckdb.connect(":memory:", config=config)
            self._con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error as exc:
            raise ValidationError(f"source {self.where}: {_first_line(exc)}") from None
        self.relation = "read_parquet($files, hive_partitioning = false, union_by_name = true)"

    def _run(self, query: Query, relation: bool = False) -> Any:
        params = {**query.params, "files": self._files}
        try:
            if relation:  # a relation hands its rows to Arrow without a copy
                return self._con.sql(query.sql, params=params)
            return self._con.execute(query.sql, params)
        except self._duckdb.IOException as exc:
            raise ServiceError(f"source {self.where}: {_first_line(exc)}") from None
        except self._duckdb.Error as exc:
            raise ValidationError(f"source {self.where}: {_first_line(exc)}") from None

    def schema(self) -> dict[str, str]:
        rows = self._run(Query(f"DESCRIBE SELECT * FROM {self.relation}", {})).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def footer_proves(self, bounds: dict[str, tuple[float, float] | None]) -> bool:
        """Whether the files' footers show every value of these columns present and within
        its bounds (name: low, high; None: any value) in every row group. NaN is left out
        of Parquet statistics, so it is not ruled out here (a sum over it is NaN)."""
        if not bounds:
            return True
        ((groups, *proven),) = self.rows(footer_check(self.dialect, bounds))
        return all(count == groups for count in proven)

    def rows(self, query: Query) -> list[tuple[Any, ...]]:
        return list(self._run(query).fetchall())

    def columns(self, query: Query) -> dict[str, Any]:
        result = self._run(query, relation=True)
        try:
            fetch = getattr(result, "to_arrow_table", None) or result.arrow  # 2.x, 1.x
            table = fetch()
        except self._duckdb.Error as exc:
            raise ValidationError(f"source {self.where}: {_first_line(exc)}") from None
        return {name: table.column(name).to_numpy() for name in table.column_names}

    def close(self) -> None:
        self._con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
