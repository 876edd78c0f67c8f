"""Sources: an A/B test's requests or a version's drift samples read where they already live
(Parquet through DuckDB, Spark tables or paths), as the same sufficient statistics the
project's own logs give (DESIGN section 15, docs/engines.md).

The engine does the arithmetic: one query per evaluation returns a row per arm (request
moments, ratio sums over users, the tail guardrail's slow counts); a drift check reads only
its window and the reference as two Arrow columns each. Nothing here decides: the decision
function is the one every origin of the numbers feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from ..limits import CONFIDENCE, INFERENCE_TIME_MS
from ..moments import Moments
from ..stats import RatioSums
from ..tail import TailSums
from .engines import Engine, open_engine
from .queries import AB_FIELDS, Query, ab_sums, first_day, overview, samples
from .spec import (
    AB_OPTIONAL,
    AB_REQUIRED,
    DRIFT_OPTIONAL,
    DRIFT_REQUIRED,
    OUR_COLUMNS,
    Source,
    load,
)

__all__ = [
    "ArmSums",
    "Source",
    "SourceSums",
    "ab_sums_of",
    "check_ab",
    "check_drift",
    "describe",
    "drift_samples",
    "first_day_p95",
    "load",
    "use_spark_session",
]

VARIANTS = ("control", "treatment")


def use_spark_session(session: Any) -> None:
    """Run Spark sources through the caller's SparkSession (None: mlops starts one)."""
    from .engines.spark import use_session

    use_session(session)


def kind(type_name: str) -> str:
    """An engine's type name as one of: string, integer, number, boolean, timestamp, other."""
    t = type_name.strip().lower()
    if t in ("varchar", "string", "text") or t.startswith(("varchar", "char")):
        return "string"
    if t in {
        "tinyint", "smallint", "int", "integer", "bigint", "hugeint", "long", "short", "byte",
        "utinyint", "usmallint", "uinteger", "ubigint", "uhugeint",
    }:
        return "integer"
    if t in ("double", "float", "real") or t.startswith("decimal"):
        return "number"
    if t == "boolean":
        return "boolean"
    if t.startswith("timestamp"):
        return "timestamp"
    return "other"


_ACCEPTS = {
    "string": {"string"},
    "string or integer": {"string", "integer"},
    "number": {"number", "integer"},
    "boolean or integer": {"boolean", "integer"},
    "timestamp": {"timestamp"},
    "integer": {"integer"},
}


def resolve(
    source: Source, schema: dict[str, str], required: Iterable[str], optional: Iterable[str],
    filters: Iterable[str] = (),
) -> dict[str, str]:
    """Our names -> the source's columns, checked against its schema: a required column (or a
    mapped one) that is missing, or a column of the wrong type, is a ValidationError; an
    optional column is read when the source has it."""
    cols: dict[str, str] = {}
    for ours in [*required, *optional]:
        theirs = source.column(ours)
        if theirs not in schema:
            if ours in required or ours in source.columns:
                mapped = f" (columns.{ours})" if ours in source.columns else ""
                raise ValidationError(
                    f"source {source.describe()}: no column {theirs!r}{mapped} for {ours}; "
                    f"it has {', '.join(list(schema)[:20])}"
                )
            continue
        found = kind(schema[theirs])
        wanted = OUR_COLUMNS[ours]
        if found not in _ACCEPTS[wanted]:
            raise ValidationError(
                f"source {source.describe()}: column {theirs!r} ({ours}) is {schema[theirs]}, "
                f"not a {wanted}"
            )
        cols[ours] = theirs
    for column in filters:
        if column not in schema:
            raise ValidationError(f"source {source.describe()}: no column {column!r} to filter on")
    return cols


# -- A/B tests ---------------------------------------------------------------------------------


@dataclass
class ArmSums:
    """One arm of a source's requests: the request moments, the per-user ratio sums of each
    metric and the tail guardrail's slow counts."""

    moments: Moments
    errors: RatioSums
    confidence: RatioSums
    inference_time_ms: RatioSums
    tail: TailSums
    anonymous: int


@dataclass
class SourceSums:
    """What one evaluation's query returned, per arm."""

    arms: dict[str, ArmSums]

    @property
    def unit(self) -> str:
        """`user` when every request carried a user id (as `UserTotals.unit`)."""
        named = any(a.confidence.users for a in self.arms.values())
        anonymous = any(a.anonymous for a in self.arms.values())
        return "user" if named and not anonymous else "request"


def _empty_arm() -> ArmSums:
    zero = RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return ArmSums(Moments(), zero, zero, zero, TailSums(0, 0, 0, zero), 0)


def ab_sums_of(
    source: Source, tau: float | None, until: str | None = None, since: str | None = None
) -> SourceSums:
    """Per arm, the sums an A/B decision needs, in one query (`tau`: the tail threshold, or
    None while it is not known; `since` and `until`: ISO times, the test's start and end,
    requests stamped before or after them left out: a lake holds history from before the
    test). A row that is not a valid request (a variant other than control/treatment, a
    value out of range or missing, no ts) is an error with the count, never skipped."""
    engine = open_engine(source)
    try:
        schema = engine.schema()
        cols = resolve(source, schema, AB_REQUIRED, AB_OPTIONAL, source.filter)
        integer_error = "error" in cols and kind(schema[cols["error"]]) == "integer"
        checked = ["confidence", "inference_time_ms"] + (["error"] if integer_error else [])
        bounds: dict[str, tuple[float, float] | None] = {cols[c]: _BOUNDS[c] for c in checked}
        proven = engine.footer_proves({**bounds, cols["ts"]: None})
        rows = engine.rows(
            ab_sums(
                cols, source.filter, engine.dialect, engine.relation, tau, until,
                integer_error, since, check=not proven,
            )
        )
    finally:
        engine.close()
    arms = {v: _empty_arm() for v in VARIANTS}
    wrong = []
    for row in rows:
        doc = dict(zip(AB_FIELDS, row, strict=True))
        if doc["variant"] not in VARIANTS:
            wrong.append(f"{_rows(doc['n'])} of variant {doc['variant']!r}")
            continue
        if proven:  # in range and present by the footers: only a NaN is left, and sums it
            nan = float("nan")
            doc["c_dev"] = nan if math.isnan(float(doc["confidence_sum"])) else 0.0
            doc["t_dev"] = nan if math.isnan(float(doc["time_sum"])) else 0.0
            doc["e_dev"] = 0.0
            doc["no_ts"] = 0
        wrong += _out_of_range(doc)
        if doc["no_ts"]:
            wrong.append(f"{_rows(doc['no_ts'])} of {doc['variant']} without a ts")
        arms[doc["variant"]] = _arm(doc)
    if wrong:
        raise ValidationError(
            f"source {source.describe()}: rows that are not valid requests: "
            f"{'; '.join(wrong[:4])} (variant control or treatment, confidence in [0, 1], "
            "inference_time_ms in [0, 1e7], error 0 or 1, a ts, none missing); fix them or "
            "narrow the filter"
        )
    return SourceSums(arms)


def _rows(count: Any) -> str:
    return f"{int(count):,} {'row' if int(count) == 1 else 'rows'}"


_BOUNDS = {
    "confidence": (CONFIDENCE.low, CONFIDENCE.high),
    "inference_time_ms": (INFERENCE_TIME_MS.low, INFERENCE_TIME_MS.high),
    "error": (0.0, 1.0),
}


def _out_of_range(doc: dict[str, Any]) -> list[str]:
    """An arm's columns with a value outside their bounds, missing, or NaN: the greatest
    |value - middle| of each must be at most half the range (NaN compares false)."""
    out = []
    for name, key in (("confidence", "c_dev"), ("inference_time_ms", "t_dev"), ("error", "e_dev")):
        bound = _BOUNDS[name]
        half = (bound[1] - bound[0]) / 2
        if not float(doc[key]) <= half:
            out.append(f"a {doc['variant']} {name} outside [{bound[0]:g}, {bound[1]:g}] or missing")
    return out


def _arm(doc: dict[str, Any]) -> ArmSums:
    n = int(doc["n"])
    moments = Moments(
        n, int(doc["errors"]), float(doc["confidence_sum"]),
        float(doc["confidence_sum_squares"]), float(doc["time_sum"]),
        float(doc["time_sum_squares"]),
    )
    users, d, dd = int(doc["users"]), float(doc["d_sum"]), float(doc["d_sum_squares"])
    anonymous = int(doc["anonymous"])

    def ratio(m_sum: float, m_sq: str, m_d: str) -> RatioSums:
        return RatioSums(users, m_sum, float(doc[m_sq]), d, dd, float(doc[m_d]))

    slow = int(doc["slow"])
    anonymous_slow = int(doc["anonymous_slow"])
    return ArmSums(
        moments,
        ratio(float(doc["e_sum"]), "e_sq", "e_d"),
        ratio(float(doc["c_sum"]), "c_sq", "c_d"),
        ratio(float(doc["t_sum"]), "t_sq", "t_d"),
        TailSums(n, slow, anonymous, ratio(float(slow - anonymous_slow), "s_sq", "s_d")),
        anonymous,
    )


def check_ab(source: Source) -> dict[str, str]:
    """Our names -> the source's columns for A/B requests, from its schema alone (no scan):
    a missing extra, an unreachable engine, a missing column or a wrong type is an error."""
    engine = open_engine(source)
    try:
        return resolve(source, engine.schema(), AB_REQUIRED, AB_OPTIONAL, source.filter)
    finally:
        engine.close()


def check_drift(source: Source) -> dict[str, str]:
    """As `check_ab`, for drift samples (and the reference filter's columns)."""
    engine = open_engine(source)
    try:
        keys = [*source.filter, *(source.reference or {})]
        return resolve(source, engine.schema(), DRIFT_REQUIRED, DRIFT_OPTIONAL, keys)
    finally:
        engine.close()


def first_day_p95(
    source: Source, limit: str, since: str | None = None
) -> tuple[int, float | None]:
    """How many control requests a source holds from `since` (ISO: the test's start) to
    before `limit` (ISO) and their 95th percentile (type 7, as `tail.p95`): where a test's
    tail threshold comes from."""
    engine = open_engine(source)
    try:
        cols = resolve(source, engine.schema(), AB_REQUIRED, (), source.filter)
        ((count, p95),) = engine.rows(
            first_day(cols, source.filter, engine.dialect, engine.relation, limit, since)
        )
    finally:
        engine.close()
    return int(count), (float(p95) if p95 is not None else None)


# -- drift -------------------------------------------------------------------------------------


def drift_samples(
    source: Source, reference: int | None, window: int
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the reference: the first `reference` samples of the source's `reference` filter, or
    None when the source declares none; the window: the last `window` samples of its
    `filter`), each as {"prediction", "confidence"} numpy arrays, oldest first."""
    engine = open_engine(source)
    try:
        keys = [*source.filter, *(source.reference or {})]
        cols = resolve(source, engine.schema(), DRIFT_REQUIRED, DRIFT_OPTIONAL, keys)
        ref = None
        if source.reference is not None and reference is not None:
            ref = _checked(source, engine, samples(
                cols, source.reference, engine.dialect, engine.relation, reference, last=False
            ))
        win = _checked(source, engine, samples(
            cols, source.filter, engine.dialect, engine.relation, window, last=True
        ))
    finally:
        engine.close()
    return ref, win


def _checked(source: Source, engine: Engine, query: Query) -> dict[str, Any]:
    import numpy as np

    from ..limits import CONFIDENCE, PREDICTION

    got = engine.columns(query)
    out = {}
    for name, bound in (("prediction", PREDICTION), ("confidence", CONFIDENCE)):
        values = np.asarray(got[name], dtype=float)  # a null becomes NaN
        bad = ~((values >= bound.low) & (values <= bound.high))
        if bad.any():
            raise ValidationError(
                f"source {source.describe()}: {int(bad.sum()):,} samples have a {name} that is "
                f"missing or outside [{bound.low:g}, {bound.high:g}]"
            )
        out[name] = values
    return out


# -- source check ------------------------------------------------------------------------------


def describe(source: Source) -> dict[str, Any]:
    """What a source resolves to: its columns and types, our names it maps, and the rows and
    time range its filter selects (`mlops source check`)."""
    engine = open_engine(source)
    try:
        schema = engine.schema()
        cols = resolve(source, schema, (), tuple(OUR_COLUMNS), source.filter)
        if source.reference:
            resolve(source, schema, (), (), source.reference)
        ((rows, first, last),) = engine.rows(
            overview(source.filter, engine.dialect, engine.relation, cols.get("ts"))
        )
    finally:
        engine.close()
    return {
        "engine": source.engine,
        "source": source.describe(),
        "rows": int(rows),
        "columns": [{"name": k, "type": v} for k, v in schema.items()],
        "mapped": cols,
        "ab_ready": all(c in cols for c in AB_REQUIRED),
        "drift_ready": all(c in cols for c in DRIFT_REQUIRED),
        "ts_min": _iso(first),
        "ts_max": _iso(last),
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    iso = getattr(value, "isoformat", None)
    return str(iso()) if iso else str(value)
