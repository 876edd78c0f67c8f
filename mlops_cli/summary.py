"""Running sufficient statistics over a log, cached with the byte offset they cover.

Reading a summary reads only the lines appended since the cached offset, so repeated
evaluations cost what is new, not the whole history.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from operator import mul
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import jsonl, safefs
from .errors import SKIP_INVALID, MlopsError, StateError
from .limits import CONFIDENCE, INFERENCE_TIME_MS
from .moments import Moments

if TYPE_CHECKING:
    from .decision import UserTotals
    from .tail import TailSums


@dataclass
class Summary:
    """Per-key Moments of a log (key "all", or the A/B variant) and what they cover."""

    arms: dict[str, Moments] = field(default_factory=dict)
    offset: int = 0
    lines: int = 0
    inode: int = 0
    torn_bytes: int = 0
    skipped: list[int] = field(default_factory=list)
    users: UserTotals | None = None  # per-user totals, when asked for (A/B logs)

    def arm(self, key: str) -> Moments:
        return self.arms.get(key) or Moments()


def _finite_moments(m: Moments) -> bool:
    values = asdict(m).values()
    return all(type(v) in (int, float) and math.isfinite(v) for v in values)


def _cache_path(log: Path) -> Path:
    return log.with_name(f".{log.name}.summary.json")


def _covered_tail(log: Path, offset: int) -> str:
    """A fingerprint of the bytes a cache covers, to recognise the same content on the next
    read: the last 256 bytes and 16 samples spread through the rest (a line rewritten in place
    in the middle of the log changes it, at the cost of 17 small reads)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    with os.fdopen(safefs.open_file_for_read(log), "rb") as f:
        for k in range(16):
            f.seek(offset * k // 16)
            digest.update(f.read(min(64, offset)))
        f.seek(max(0, offset - 256))
        digest.update(f.read(min(offset, 256)))
    return digest.hexdigest()


def _load_cache(log: Path, st: os.stat_result, per_user: bool, until: str | None) -> Summary:
    inode, size = st.st_ino, st.st_size
    fresh = Summary(inode=inode, users=_new_totals() if per_user else None)
    try:
        doc = jsonl.loads(safefs.read_file(_cache_path(log)))
        if (per_user and "users" not in doc) or doc.get("until") != until:
            return fresh
        summary = Summary(
            arms={k: Moments(**v) for k, v in doc["arms"].items()},
            offset=int(doc["offset"]),
            lines=int(doc["lines"]),
            inode=int(doc["inode"]),
            users=_totals_from(doc["users"]) if per_user else None,
        )
        # The log was replaced, cut, or cut and written again (a batch undone on a full disk):
        # start over rather than trust sums of lines that are gone.
        if (
            summary.inode != inode
            or not all(_finite_moments(m) for m in summary.arms.values())  # a poisoned cache
            or summary.offset > size
            # the same size but written since: changed in place
            or (doc.get("size") == size and doc.get("mtime_ns") != st.st_mtime_ns)
            or doc["tail"] != _covered_tail(log, summary.offset)
        ):
            return fresh
    except (
        OSError,
        MlopsError,  # a link or FIFO planted where the cache goes: recompute
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ):
        return fresh
    return summary


def summarize(
    log: Path,
    key_field: str | None,
    skip_invalid: bool = False,
    keys: tuple[str, ...] | None = None,
    per_user: bool = False,
    until: str | None = None,
) -> Summary:
    """Moments of a log's records grouped by `key_field` (or all under "all"), incrementally;
    with `per_user`, also per-user totals of each key (A/B logs, by `user_id`); with `until`
    (a `stamp`), only the records whose `ts` is not later (a finalized test's final figures).

    A record that is not a request (a missing or non-numeric field, a key outside `keys`) is
    an error naming the file and line, or is skipped and counted with `skip_invalid`.
    """
    try:
        st = os.stat(log)
    except FileNotFoundError:
        return Summary(users=_new_totals() if per_user else None)
    summary = _load_cache(log, st, per_user, until)
    start = summary.offset
    for chunk in jsonl.read_chunks(log, summary.offset, summary.lines + 1, skip_invalid):
        summary.skipped += chunk.skipped
        if chunk.records:
            records = chunk.records
            if until is not None:
                records = [r for r in records if not _later(r, until)]
            try:
                counts = fold(summary.arms, records, key_field, keys)
                good = records
            except (KeyError, TypeError, ValueError):
                good = []
                for i, record in enumerate(chunk.records):
                    if _is_request(record, key_field, keys):
                        if until is None or not _later(record, until):
                            good.append(record)
                    elif skip_invalid:
                        summary.skipped.append(chunk.line_of(i))
                    else:
                        raise StateError(
                            f"{log}: line {chunk.line_of(i)} is not a valid record (a field is "
                            f"missing, of the wrong type or out of bounds); {SKIP_INVALID}"
                        ) from None
                counts = fold(summary.arms, good, key_field, keys)
            if summary.users is not None and key_field is not None:
                fold_users(summary.users, good, key_field, counts)
        summary.offset = chunk.end
        summary.lines += chunk.lines
        summary.torn_bytes = chunk.torn_bytes
    if summary.offset > start and not summary.skipped:
        _save_cache(log, summary, st, until)
    return summary


def _later(record: dict[str, Any], until: str) -> bool:
    """Whether a record's `ts` is later than `until` (a `stamp`). The writers' stamps compare
    as text; another spelling (an offset, no fraction) is parsed. A record without a valid
    `ts` is not later (its validation names it)."""
    ts = record.get("ts")
    if type(ts) is not str:
        return False
    if len(ts) == 27 and ts[-1] == "Z":
        return ts > until
    from .timeutil import parse_ts, stamp

    try:
        return stamp(parse_ts(ts)) > until
    except (ValueError, OverflowError):
        return False


_CONF_LOW, _CONF_HIGH = CONFIDENCE.low, CONFIDENCE.high
_MS_LOW, _MS_HIGH = INFERENCE_TIME_MS.low, INFERENCE_TIME_MS.high
_USER_ID_TYPES = {str, int, type(None)}  # None: anonymous (as no user_id at all)


def _is_request(
    record: dict[str, Any], key_field: str | None, keys: tuple[str, ...] | None
) -> bool:
    """Whether a stored record is a request as the writers validate one: its numbers within
    their bounds (limits.py), its error a boolean, its user_id (if any) a string or a whole
    number, and its key one of `keys`."""
    number = (int, float)
    conf: Any = record.get("confidence")
    ms: Any = record.get("inference_time_ms")
    return (
        type(conf) in number
        and _CONF_LOW <= conf <= _CONF_HIGH
        and type(ms) in number
        and _MS_LOW <= ms <= _MS_HIGH
        and type(record.get("error", False)) is bool
        and type(record.get("user_id")) in _USER_ID_TYPES
        and (
            key_field is None
            or (keys is None and key_field in record)
            or record.get(key_field) in (keys or ())
        )
    )


def fold(
    arms: dict[str, Moments],
    records: list[dict[str, Any]],
    key_field: str | None,
    keys: tuple[str, ...] | None = None,
) -> dict[str, int]:
    """Add records to the per-key moments (column sums at C speed, no per-record calls).

    All sums are computed before any is added, so a bad record leaves `arms` unchanged.
    """
    if key_field is None:
        groups = {"all": records}
    else:
        groups = {}
        for r in records:
            key = r[key_field]
            group = groups.get(key)
            if group is None:
                groups[key] = [r]
            else:
                group.append(r)
        if keys is not None and not groups.keys() <= set(keys):
            raise ValueError(f"{key_field} outside {keys}")
    if not {type(r.get("user_id")) for r in records} <= _USER_ID_TYPES:
        raise TypeError("user_id must be a string or a whole number")
    sums = []
    for key, rows in groups.items():
        conf = [r["confidence"] for r in rows]
        ms = [r["inference_time_ms"] for r in rows]
        errors = [r.get("error", False) for r in rows]
        if not all(type(e) is bool for e in errors):
            raise TypeError("error must be true or false")
        if not (
            min(conf) >= _CONF_LOW and max(conf) <= _CONF_HIGH
            and min(ms) >= _MS_LOW and max(ms) <= _MS_HIGH
        ):
            raise ValueError("a value out of its bounds")
        sums.append(
            (
                key,
                len(rows),
                errors.count(True),
                sum(conf),
                sum(map(mul, conf, conf)),
                sum(ms),
                sum(map(mul, ms, ms)),
            )
        )
    for key, n, errs, cs, css, ts, tss in sums:
        m = arms.get(key)
        if m is None:
            m = arms[key] = Moments()
        m.n += n
        m.errors += errs
        m.confidence_sum += cs
        m.confidence_sum_squares += css
        m.time_sum += ts
        m.time_sum_squares += tss
    return {key: n for key, n, *_ in sums}


def _new_totals() -> UserTotals:
    from .decision import UserTotals  # only A/B logs keep per-user totals

    return UserTotals()


def _totals_from(doc: Any) -> UserTotals:
    from .decision import UserTotals

    return UserTotals.from_dict(doc)


def fold_users(
    totals: UserTotals,
    records: list[dict[str, Any]],
    key_field: str,
    counts: dict[str, int] | None = None,
) -> None:
    """Add records to per-user totals (a record without `user_id` is anonymous); `counts`,
    the records per key if known (fold returns them), spares counting them again."""
    if not any("user_id" in r for r in records):  # counted without numpy
        if counts is None:
            counts = dict(Counter(r[key_field] for r in records))
        for key, count in counts.items():
            totals.anonymous[key] += count
        return
    totals.add_columns(
        [r[key_field] for r in records],
        [r.get("user_id") for r in records],
        [r["inference_time_ms"] for r in records],
        [r["confidence"] for r in records],
        [r.get("error", False) for r in records],
    )


def _save_cache(log: Path, summary: Summary, st: os.stat_result, until: str | None) -> None:
    doc: dict[str, Any] = {
        "until": until,
        "offset": summary.offset,
        "lines": summary.lines,
        "inode": summary.inode,
        "size": st.st_size,  # the log as it was read: a later write of the same size is a change
        "mtime_ns": st.st_mtime_ns,
        "arms": {k: asdict(v) for k, v in summary.arms.items()},
    }
    if summary.users is not None:
        doc["users"] = summary.users.to_dict()
    try:
        doc["tail"] = _covered_tail(log, summary.offset)
    except (OSError, MlopsError):
        return
    path = _cache_path(log)
    # Derived data: a lost (or refused: a link planted there) cache is recomputed; no fsync.
    with contextlib.suppress(OSError, MlopsError):
        safefs.atomic_replace(path.parent, path.name, jsonl.dumps(doc), durable=False)



def _all_requests(records: list[dict[str, Any]], keys: tuple[str, ...]) -> bool:
    """Whether every record is a request of the keys (as `_is_request`), checked a field at
    a time over the block, so the common case costs no call per record."""
    number = {int, float}
    try:
        return (
            {r["variant"] for r in records} <= set(keys)
            and {type(r["inference_time_ms"]) for r in records} <= number
            and {type(r["confidence"]) for r in records} <= number
            and {type(r.get("error", False)) for r in records} <= {bool}
        )
    except (KeyError, TypeError):  # a missing field; an unhashable variant
        return False


def _tail_cache_path(log: Path) -> Path:
    return log.with_name(f".{log.name}.tail.json")


@dataclass
class _TailCounts:
    """The tail pass's running counts, per key, and the bytes of the log they cover."""

    offset: int = 0
    lines: int = 0
    users: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # id -> [slow, n]
    anonymous: dict[str, list[int]] = field(default_factory=dict)  # [slow, n]


def _load_tail_cache(
    log: Path, st: os.stat_result, threshold_ms: float, keys: tuple[str, ...], until: str | None
) -> _TailCounts:
    fresh = _TailCounts(
        users={k: {} for k in keys}, anonymous={k: [0, 0] for k in keys}
    )
    try:
        doc = jsonl.loads(safefs.read_file(_tail_cache_path(log)))
        found = _TailCounts(
            offset=int(doc["offset"]),
            lines=int(doc["lines"]),
            users={k: {str(u): [float(a), float(b)] for u, a, b in doc["users"][k]} for k in keys},
            anonymous={k: [int(doc["anonymous"][k][0]), int(doc["anonymous"][k][1])] for k in keys},
        )
        if (
            doc["threshold_ms"] != threshold_ms
            or doc["until"] != until
            or doc["keys"] != list(keys)
            or doc["inode"] != st.st_ino
            or found.offset > st.st_size
            or (doc["size"] == st.st_size and doc["mtime_ns"] != st.st_mtime_ns)
            or doc["tail"] != _covered_tail(log, found.offset)
        ):
            return fresh
    except (OSError, MlopsError, KeyError, TypeError, ValueError, AttributeError):
        return fresh
    return found


def _save_tail_cache(
    log: Path,
    counts: _TailCounts,
    st: os.stat_result,
    threshold_ms: float,
    keys: tuple[str, ...],
    until: str | None,
) -> None:
    doc = {
        "threshold_ms": threshold_ms,
        "until": until,
        "keys": list(keys),
        "offset": counts.offset,
        "lines": counts.lines,
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "users": {k: [[u, *v] for u, v in counts.users[k].items()] for k in keys},
        "anonymous": counts.anonymous,
    }
    try:
        doc["tail"] = _covered_tail(log, counts.offset)
    except (OSError, MlopsError):
        return
    path = _tail_cache_path(log)
    with contextlib.suppress(OSError, MlopsError):  # derived data, as the summary cache
        safefs.atomic_replace(path.parent, path.name, jsonl.dumps(doc), durable=False)


def _fold_tail(
    counts: _TailCounts, records: list[dict[str, Any]], threshold_ms: float
) -> None:
    """Add records (valid requests of the keys) to the slow counts; named users grouped in
    numpy, anonymous requests counted in Python (no numpy import for them)."""
    if not any("user_id" in r for r in records):  # all anonymous: counted without numpy
        pairs = Counter((r["variant"], r["inference_time_ms"] > threshold_ms) for r in records)
        for (key, is_slow), count in pairs.items():
            anon = counts.anonymous[key]
            anon[0] += count if is_slow else 0
            anon[1] += count
        return
    named = [r for r in records if r.get("user_id") is not None]
    for r in records:
        if r.get("user_id") is None:
            anon = counts.anonymous[r["variant"]]
            anon[0] += r["inference_time_ms"] > threshold_ms
            anon[1] += 1
    import numpy as np

    variant = np.array([r["variant"] for r in named])
    slow = np.array([r["inference_time_ms"] for r in named], dtype=float) > threshold_ms
    user = np.array([str(r["user_id"]) for r in named])
    for key, table in counts.users.items():
        mask = variant == key
        if not mask.any():
            continue
        unique, inverse = np.unique(user[mask], return_inverse=True)
        n = np.bincount(inverse.ravel(), minlength=len(unique))
        m = np.bincount(inverse.ravel(), slow[mask], minlength=len(unique))
        for uid, s, c in zip(unique.tolist(), m.tolist(), n.tolist(), strict=True):
            row = table.get(uid)
            if row is None:
                table[uid] = [s, float(c)]
            else:
                row[0] += s
                row[1] += c


def tail_counts(
    log: Path, threshold_ms: float, keys: tuple[str, ...], until: str | None = None
) -> dict[str, TailSums]:
    """Per key (A/B variant): requests, requests slower than `threshold_ms` (strictly above),
    and over named users the ratio sums of M_u = slow, D_u = requests (the tail-latency
    guardrail, tail.py). Its own pass over the log, incremental as `summarize`: the counts are
    cached beside the log with the offset they cover (per threshold and `until`), so an
    evaluation reads only what is new. A line that is not a request is left out here (the
    summary of the same log names or counts it). With `until`, only records whose `ts` is
    not later."""
    from .tail import EMPTY, sums_from_users

    try:
        st = os.stat(log)
    except FileNotFoundError:
        return dict.fromkeys(keys, EMPTY)
    counts = _load_tail_cache(log, st, threshold_ms, keys, until)
    start = counts.offset
    for chunk in jsonl.read_chunks(log, counts.offset, counts.lines + 1, skip_invalid=True):
        records = chunk.records
        if until is not None or not _all_requests(records, keys):
            records = [
                r
                for r in records
                if _is_request(r, "variant", keys) and (until is None or not _later(r, until))
            ]
        if records:
            _fold_tail(counts, records, threshold_ms)
        counts.offset = chunk.end
        counts.lines += chunk.lines
    if counts.offset > start:
        _save_tail_cache(log, counts, st, threshold_ms, keys, until)
    return {
        key: sums_from_users(list(counts.users[key].values()), tuple(counts.anonymous[key]))
        for key in keys
    }
