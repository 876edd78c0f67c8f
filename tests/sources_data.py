"""Requests and drift samples generated once, written both as a project's log and as Parquet,
and their sums computed independently with numpy (never by the code under test)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mlops_cli import ModelVersion, Project

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def requests(n: int = 6000, users: int = 400, seed: int = 7, anonymous: bool = False) -> dict[str, Any]:
    """Columns of n requests over 3 days: users assigned 50/50, the treatment slower in its
    tail and more confident."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n)
    arm = (user % 2).astype(bool)  # treatment for odd users
    conf = np.clip(rng.normal(0.70 + 0.03 * arm, 0.1), 0, 1)
    time = 100 * np.exp(rng.normal(0, 0.3 + 0.2 * arm) - (0.3 + 0.2 * arm) ** 2 / 2)
    err = rng.random(n) < 0.02
    seconds = np.sort(rng.uniform(0, 3 * 86400, n))
    ts = [T0 + timedelta(seconds=float(s)) for s in seconds]
    ids: list[str | None] = [f"u{u}" for u in user]
    if anonymous:
        ids[::7] = [None] * len(ids[::7])
    return {
        "variant": np.where(arm, "treatment", "control"),
        "user_id": ids,
        "confidence": conf,
        "inference_time_ms": time,
        "error": err,
        "ts": ts,
        "seq": np.arange(n),
    }


def jsonl(cols: dict[str, Any]) -> bytes:
    import orjson

    lines = []
    for i in range(len(cols["variant"])):
        doc = {
            "variant": str(cols["variant"][i]),
            "confidence": float(cols["confidence"][i]),
            "inference_time_ms": float(cols["inference_time_ms"][i]),
            "error": bool(cols["error"][i]),
            "ts": iso(cols["ts"][i]),
        }
        if cols["user_id"][i] is not None:
            doc["user_id"] = cols["user_id"][i]
        lines.append(orjson.dumps(doc))
    return b"\n".join(lines) + b"\n"


def write_parquet(cols: dict[str, Any], path: Path, rename: dict[str, str] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rename = rename or {}
    table = pa.table(
        {
            rename.get(k, k): (
                pa.array(v, pa.timestamp("us", tz="UTC")) if k == "ts" else pa.array(v)
            )
            for k, v in cols.items()
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=1000)
    return path


def expected_sums(cols: dict[str, Any], tau: float) -> dict[str, dict[str, float]]:
    """Per arm with numpy: request moments and per-user ratio sums (M, D) of each metric."""
    out = {}
    ids = np.array([u if u is not None else "" for u in cols["user_id"]])
    for arm in ("control", "treatment"):
        m = np.asarray(cols["variant"]) == arm
        c = cols["confidence"][m]
        t = cols["inference_time_ms"][m]
        e = cols["error"][m].astype(float)
        s = (t > tau).astype(float)
        _, inv = np.unique(ids[m], return_inverse=True)
        d_u = np.bincount(inv).astype(float)
        doc = {
            "n": float(m.sum()), "errors": e.sum(), "confidence_sum": c.sum(),
            "confidence_sum_squares": (c * c).sum(), "time_sum": t.sum(),
            "time_sum_squares": (t * t).sum(), "slow": s.sum(), "users": float(len(d_u)),
            "d_sum_squares": (d_u * d_u).sum(),
        }
        for name, v in (("errors", e), ("confidence", c), ("time", t), ("slow", s)):
            m_u = np.bincount(inv, weights=v)
            doc[f"{name}_m2"] = (m_u * m_u).sum()
            doc[f"{name}_md"] = (m_u * d_u).sum()
        out[arm] = doc
    return out


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def same_numbers(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ: floats beyond 1e-9 relative, anything else at all."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in same_numbers(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in same_numbers(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if close(a, float(b)) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def drift_rows(reference: int = 2000, production: int = 5000, seed: int = 3) -> dict[str, Any]:
    """Reference then production samples (a shifted window), several samples per second so
    `ts` ties, with `stream` naming each set and `seq` their order within it."""
    rng = np.random.default_rng(seed)
    pred = np.concatenate([rng.normal(0, 1, reference), rng.normal(0.3, 1.2, production)])
    conf = np.concatenate([rng.beta(8, 2, reference), rng.beta(7, 2, production)])
    n = reference + production
    ts = [T0 + timedelta(seconds=i // 4) for i in range(n)]
    stream = ["drift/gnn/1.0.0/reference"] * reference + ["drift/gnn/1.0.0/production"] * production
    seq = np.concatenate([np.arange(reference), np.arange(production)])
    return {"stream": stream, "prediction": pred, "confidence": conf, "ts": ts, "seq": seq}


def sample_lines(cols: dict[str, Any], which: str) -> bytes:
    import orjson

    return b"".join(
        orjson.dumps({"prediction": float(p), "confidence": float(c), "ts": iso(t)}) + b"\n"
        for s, p, c, t in zip(cols["stream"], cols["prediction"], cols["confidence"], cols["ts"], strict=True)
        if s.endswith(which)
    )


def drift_project(root: Path, cols: dict[str, Any]) -> Project:
    """A project with gnn 1.0.0 and 1.1.0, the drift rows' reference and production samples
    recorded on 1.0.0 (for comparing with 1.1.0 reading the same rows from a source)."""
    project = Project.init(root)
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="m.pt"))
    own = project.drift_detector("gnn", "1.0.0")
    own.add_reference(sample_lines(cols, "reference"))
    own.record_batch(sample_lines(cols, "production"))
    return project


def with_history(cols: dict[str, Any], n: int = 600, seed: int = 11) -> dict[str, Any]:
    """`cols` after `n` requests stamped in the day before T0 (a lake's history from before
    a test that starts at T0): slow, unconfident and failing, so counting them moves every
    sum, the first-day threshold and the decision."""
    rng = np.random.default_rng(seed)
    before = {
        "variant": np.where(np.arange(n) % 2 == 1, "treatment", "control"),
        "user_id": [f"u{u}" for u in rng.integers(0, 50, n)],
        "confidence": rng.uniform(0.0, 0.2, n),
        "inference_time_ms": rng.uniform(5000.0, 9000.0, n),
        "error": rng.random(n) < 0.5,
        "ts": [T0 - timedelta(seconds=float(s)) for s in np.sort(rng.uniform(1, 86400, n))[::-1]],
        "seq": -np.arange(n, 0, -1),
    }
    return {
        k: list(before[k]) + list(v) if k in ("user_id", "ts") else np.concatenate([before[k], v])
        for k, v in cols.items()
    }
