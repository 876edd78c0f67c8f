"""The engines a source can name, behind one small interface (`Engine`), each importing its
library only when a source needs it; a missing extra is a MissingExtraError."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..spec import Source

if TYPE_CHECKING:
    from ..queries import Dialect, Query


class Engine(Protocol):
    """Runs the queries of one source: its schema, a few rows, or Arrow columns."""

    dialect: Dialect
    relation: str  # the FROM item the queries read

    def schema(self) -> dict[str, str]:
        """Column name -> the engine's type name, in the source's order."""

    def footer_proves(self, bounds: dict[str, tuple[float, float] | None]) -> bool:
        """True only when the source's file footers show every value of these columns
        (name: low, high; None: any value) present and in range, NaN aside; False when they
        cannot tell."""

    def rows(self, query: Query) -> list[tuple[Any, ...]]:
        """The rows of a query (a few: sums, counts)."""

    def columns(self, query: Query) -> dict[str, Any]:
        """A query's result as numpy arrays by column, read through Arrow."""

    def close(self) -> None: ...


def open_engine(source: Source) -> Engine:
    """The engine a source names, connected (DuckDB in process; Spark through the session
    `spark.use_session` set, or one it starts on the source's `master`)."""
    if source.engine == "duckdb":
        from .duckdb import DuckDBEngine

        return DuckDBEngine(source)
    from .spark import SparkEngine

    return SparkEngine(source)
