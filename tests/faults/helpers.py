"""Shared pieces of the fault and load suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

from mlops_cli import ABTestConfig, ModelVersion, Project

MLOPS = str(Path(sys.executable).with_name("mlops"))
STRESS = os.environ.get("MLOPS_STRESS") == "1"


def scale(quick: int, stress: int) -> int:
    """The quick size in `make test`, the full one in `make stress`."""
    return stress if STRESS else quick


def ab_project(root: Path, traffic: float = 50) -> Project:
    project = Project.init(root)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    project.ab.start_test(
        ABTestConfig("t", "gnn", treatment_version="1.1.0", treatment_traffic_pct=traffic)
    )
    return project


def requests_jsonl(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    variants = np.where(rng.random(n) < 0.5, "treatment", "control")
    return b"".join(
        orjson.dumps(
            {
                "variant": str(v),
                "inference_time_ms": float(t),
                "confidence": float(c),
                "error": bool(e),
            }
        )
        + b"\n"
        for v, t, c, e in zip(
            variants,
            rng.uniform(1, 200, n),
            rng.uniform(0, 1, n),
            rng.random(n) < 0.05,
            strict=True,
        )
    )


def samples_jsonl(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return b"".join(
        orjson.dumps({"prediction": float(p), "confidence": float(c)}) + b"\n"
        for p, c in zip(rng.normal(0, 1, n), rng.uniform(0, 1, n), strict=True)
    )


def mlops(
    root: Path, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    run = subprocess.run([MLOPS, "-C", str(root), *args], input=input, capture_output=True)
    if check and run.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)}: {run.stderr.decode()}")
    return run


def whole_lines(path: Path) -> list[dict[str, object]]:
    """Every complete line of a log, each parsed (a torn tail is allowed and left out)."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    return [orjson.loads(line) for line in data[:end].splitlines()]


def kill_at(log: Path, cut: int, others: int = 0) -> int:
    """Leave a log and its batch journal as a kill of the batch being appended would, with
    the log's first `cut` bytes written (a torn tail): the journal keeps the entries written
    before those bytes (an attempt's start; after each chunk, the lines of the batch written
    so far) and loses the rest and the batch's end. `others`: lines before the cut that are
    not the batch's. Returns the batch's whole lines left."""
    from mlops_cli import jsonl

    data = log.read_bytes()
    with open(log, "r+b") as f:
        f.truncate(cut)
    held = data[:cut].count(b"\n") - others
    journal = jsonl.journal_path(log)
    kept = []
    for line in journal.read_bytes().splitlines(keepends=True):
        entry = orjson.loads(line)
        if "start" in entry and entry["start"] >= cut:
            continue  # an attempt that had not started
        if "sha256" in entry and (entry.get("done") or entry["lines"] > held):
            continue  # written after its chunk, which the kill cut
        kept.append(line)
    journal.write_bytes(b"".join(kept))
    return held
