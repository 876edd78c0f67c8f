"""The SQL an engine runs for a source, in one text for DuckDB and Spark SQL.

Every identifier comes from the source's declaration and is quoted by the engine's dialect
(after it was found in the engine's schema); every value is a named parameter. The A/B query
returns one row per arm: the request moments, and over users the ratio sums (M_u, D_u) of
errors, confidence, inference time and slow requests (time above the tail threshold), so the
engine groups per user and then per arm and only a few numbers come back; with each arm's
greatest distance of a value from the middle of its range (a missing value as -1, NaN the
greatest), so a row out of range is found by one aggregate per column rather than a per-row
test (which cost DuckDB half again the query's time). Those aggregates are left out when
DuckDB's Parquet footers prove every value present and in range (`footer_check`): at
100,000,000 requests they were a sixth of the query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Dialect(NamedTuple):
    """How an engine spells an identifier, a parameter and a 95th percentile."""

    quote: Callable[[str], str]
    param: Callable[[str], str]
    percentile: str  # a format with {x}: type 7 (linear) percentile at 0.95
    timestamp: str  # a format with {p}: a parameter holding an ISO text, as a timestamp


def _duck_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _spark_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


DUCKDB = Dialect(
    _duck_quote, lambda n: f"${n}", "quantile_cont({x}, 0.95)", "CAST({p} AS TIMESTAMPTZ)"
)
SPARK = Dialect(_spark_quote, lambda n: f":{n}", "percentile({x}, 0.95)", "CAST({p} AS TIMESTAMP)")


class Query(NamedTuple):
    sql: str
    params: dict[str, Any]


def where(
    dialect: Dialect, filters: dict[str, Any], extra: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """`WHERE ...` of column = value pairs, each value a parameter (and `extra` conditions)."""
    params: dict[str, Any] = {}
    parts = list(extra or [])
    for i, (column, value) in enumerate(filters.items()):
        params[f"f{i}"] = value
        parts.append(f"{dialect.quote(column)} = {dialect.param(f'f{i}')}")
    return ("WHERE " + " AND ".join(parts) if parts else ""), params


# Per user (and arm): D = requests; the metrics summed; the request-level squares. Errors
# are counted (0 or 1, checked by the footers or `e_dev`): a count keeps 8 bytes per user
# where DuckDB's integer sum keeps a 128-bit state (16 MB less at 1,000,000 users).
_PER_USER = """
  SELECT variant, user_id, count(*) AS d, count(*) FILTER (WHERE err = 1) AS e, sum(conf) AS c,
    sum(conf * conf) AS cc, sum(t) AS t, sum(t * t) AS tt,
    count(*) FILTER (WHERE t > {tau}) AS s{devs}
  FROM base GROUP BY variant, user_id"""
# The check of every row: each column's greatest distance from the middle of its range, and
# the rows without a ts (`no_ts`, kept by the time bounds when checking).
_DEVS = """,
    max(abs(coalesce(conf, -1.0) - 0.5)) AS c_dev,
    max(abs(coalesce(t, -1.0) - 5000000.0)) AS t_dev,
    count(*) FILTER (WHERE no_ts) AS z"""

AB_FIELDS = (
    "variant", "n", "errors", "confidence_sum", "confidence_sum_squares", "time_sum",
    "time_sum_squares", "slow", "anonymous", "anonymous_slow", "users", "d_sum",
    "d_sum_squares", "e_sq", "e_d", "c_sq", "c_d", "t_sq", "t_d", "s_sq", "s_d", "e_sum",
    "c_sum", "t_sum", "c_dev", "t_dev", "e_dev", "no_ts",
)


def _span(
    dialect: Dialect, ts: str, since: str | None, until: str | None, before: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """The time conditions of a test's requests: `ts >= since` (its start: a lake holds
    history from before the test), `ts <= until` (its end), `ts < before`; each a parameter."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    bounds = (("since", ">=", since), ("until", "<=", until), ("before", "<", before))
    for name, op, value in bounds:
        if value is not None:
            parts.append(
                f"{dialect.quote(ts)} {op} {dialect.timestamp.format(p=dialect.param(name))}"
            )
            params[name] = value
    return parts, params


def ab_sums(
    cols: dict[str, str], filters: dict[str, Any], dialect: Dialect, relation: str,
    tau: float | None, until: str | None, integer_error: bool = False, since: str | None = None,
    check: bool = True,
) -> Query:
    """One row per arm (AB_FIELDS): the sums every A/B decision needs, over the requests
    stamped from `since` to `until` (ISO; None: unbounded). `cols` maps our names to the
    source's columns (resolved against its schema: optional ones only when present).
    With `check`, the rows without a `ts` are kept and counted (`no_ts`: never left out
    silently by the time bounds); `check=False` leaves the range check and that count out
    (they come back NULL): for files whose footers prove every value in range and present."""
    q = dialect.quote
    err = f"CAST({q(cols['error'])} AS INT)" if "error" in cols else "0"
    user = f"CAST({q(cols['user_id'])} AS STRING)" if "user_id" in cols else "CAST(NULL AS STRING)"
    extra, params = _span(dialect, cols["ts"], since, until)
    no_ts = ""
    if check:
        no_ts = f", {q(cols['ts'])} IS NULL AS no_ts"
        if extra:
            extra = [f"({' AND '.join(extra)} OR {q(cols['ts'])} IS NULL)"]
    clause, fparams = where(dialect, filters, extra)
    params.update(fparams)
    params["tau"] = float(tau) if tau is not None else 0.0
    # A boolean error column cannot leave {0, 1}; an integer one is checked like the values.
    err_dev = ",\n    max(abs(coalesce(err, 0) - 0.5)) AS e_dev" if integer_error else ""
    devs = _DEVS + err_dev if check else ""
    named = "FILTER (WHERE user_id IS NOT NULL)"
    anonymous = "FILTER (WHERE user_id IS NULL)"
    arm_devs = "max(c_dev), max(t_dev), " + ("max(e_dev)" if integer_error else "0.5")
    arm_devs += ", sum(z)"
    if not check:
        arm_devs = ", ".join(["CAST(NULL AS DOUBLE)"] * 4)
    sql = f"""
WITH base AS (
  SELECT CAST({q(cols['variant'])} AS STRING) AS variant, {user} AS user_id,
    CAST({q(cols['confidence'])} AS DOUBLE) AS conf,
    CAST({q(cols['inference_time_ms'])} AS DOUBLE) AS t, {err} AS err{no_ts}
  FROM {relation} {clause}
), per_user AS ({_PER_USER.format(tau=dialect.param('tau'), devs=devs)}
)
SELECT variant, sum(d), sum(e), sum(c), sum(cc), sum(t), sum(tt), sum(s),
  coalesce(sum(d) {anonymous}, 0), coalesce(sum(s) {anonymous}, 0),
  count(*) {named}, coalesce(sum(d) {named}, 0), coalesce(sum(d * d) {named}, 0),
  coalesce(sum(e * e) {named}, 0), coalesce(sum(e * d) {named}, 0),
  coalesce(sum(c * c) {named}, 0), coalesce(sum(c * d) {named}, 0),
  coalesce(sum(t * t) {named}, 0), coalesce(sum(t * d) {named}, 0),
  coalesce(sum(s * s) {named}, 0), coalesce(sum(s * d) {named}, 0),
  coalesce(sum(e) {named}, 0), coalesce(sum(c) {named}, 0), coalesce(sum(t) {named}, 0),
  {arm_devs}
FROM per_user GROUP BY variant ORDER BY variant"""
    return Query(sql, params)


def footer_check(
    dialect: Dialect, bounds: dict[str, tuple[float, float] | None]
) -> Query:
    """DuckDB, from the Parquet footers alone: the row groups of all files, and per column
    of `bounds` (name: low, high; or None: any value) the row groups whose statistics show
    no NULL and a min and max within the bounds (a footer without statistics, or with a NaN
    bound, shows none)."""
    p = dialect.param
    params: dict[str, Any] = {}
    parts = []
    for i, (column, bound) in enumerate(bounds.items()):
        params[f"c{i}"] = column
        within = ""
        if bound is not None:
            params.update({f"lo{i}": float(bound[0]), f"hi{i}": float(bound[1])})
            within = (
                f" AND TRY_CAST(coalesce(stats_min_value, stats_min) AS DOUBLE) >= {p(f'lo{i}')}"
                f" AND TRY_CAST(coalesce(stats_max_value, stats_max) AS DOUBLE) <= {p(f'hi{i}')}"
            )
        parts.append(
            f"count(*) FILTER (WHERE path_in_schema = {p(f'c{i}')} AND stats_null_count = 0"
            f"{within})"
        )
    groups = f"(SELECT coalesce(sum(num_row_groups), 0) FROM parquet_file_metadata({p('files')}))"
    sql = f"SELECT {groups}, {', '.join(parts)} FROM parquet_metadata({p('files')})"
    return Query(sql, params)


def first_day(
    cols: dict[str, str], filters: dict[str, Any], dialect: Dialect, relation: str, limit: str,
    since: str | None = None,
) -> Query:
    """The count and the 95th percentile (type 7) of the control requests from `since` (the
    test's start; None: unbounded) to before `limit`."""
    q = dialect.quote
    span, params = _span(dialect, cols["ts"], since, None, limit)
    extra = [f"CAST({q(cols['variant'])} AS STRING) = 'control'", *span]
    clause, fparams = where(dialect, filters, extra)
    params.update(fparams)
    t = f"CAST({q(cols['inference_time_ms'])} AS DOUBLE)"
    sql = f"SELECT count(*), {dialect.percentile.format(x=t)} FROM {relation} {clause}"
    return Query(sql, params)


def samples(
    cols: dict[str, str], filters: dict[str, Any], dialect: Dialect, relation: str, n: int,
    last: bool,
) -> Query:
    """The first or last `n` samples by `ts`, ties broken by `seq` when the source has it
    (else by the values, so the set is the same on every run), oldest first; with the
    count of rows that are not valid samples among them (null, out of range)."""
    q = dialect.quote
    keys = [q(cols["ts"])] + ([q(cols["seq"])] if "seq" in cols else [])
    order = "DESC" if last else "ASC"
    clause, params = where(dialect, filters)
    picked = ", ".join(f"{k} AS k{i}" for i, k in enumerate(keys))
    names = [f"k{i}" for i in range(len(keys))] + ["prediction", "confidence"]
    inner = (
        f"SELECT CAST({q(cols['prediction'])} AS DOUBLE) AS prediction, "
        f"CAST({q(cols['confidence'])} AS DOUBLE) AS confidence, {picked} "
        f"FROM {relation} {clause}"
    )
    down = ", ".join(f"{k} {order}" for k in names)
    up = ", ".join(f"{k} ASC" for k in names)
    sql = (
        f"SELECT prediction, confidence FROM (SELECT * FROM ({inner}) AS s "
        f"ORDER BY {down} LIMIT {int(n)}) AS w ORDER BY {up}"
    )
    return Query(sql, params)


def overview(filters: dict[str, Any], dialect: Dialect, relation: str, ts: str | None) -> Query:
    """Rows and the time range a source's filter selects."""
    clause, params = where(dialect, filters)
    span = f", min({dialect.quote(ts)}), max({dialect.quote(ts)})" if ts else ", NULL, NULL"
    return Query(f"SELECT count(*){span} FROM {relation} {clause}", params)
