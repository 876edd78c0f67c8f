"""A realistic, deterministic end-to-end run: registry, a week-long A/B test, drift, export,
into an empty directory or an empty PostgreSQL store alike.

`run_demo` yields (step, data) events as it goes; `mlops demo` renders them.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from . import safefs
from .ab_testing import ABTestConfig
from .drift import DriftReport
from .errors import ConflictError, ValidationError
from .project import Project, is_url
from .registry import ModelVersion
from .timeutil import Clock

TEST = "gnn_v2.2_test"
REQUESTS_PER_DAY = 1500
SAMPLES_PER_DAY = 2000
DRIFT_FROM_DAY = 3
# Days of the drift story: the alert fires on the last (seed 7). The demo's clock starts this
# many days (plus the A/B week) back, so its last check is the present: the project it leaves
# behind is not stale.
DRIFT_DAYS = 4


def demo_location(where: str | None) -> tuple[Path | str, Path]:
    """The demo's project location and the directory for its files (model weights, the hook's
    log, the Prometheus textfile). A directory (created; must be empty) holds both; for a
    `postgresql://` URL the files go to a new temporary directory that is left behind; no
    argument: a new temporary directory."""
    if where is None:
        temporary = Path(tempfile.mkdtemp(prefix="mlops-demo-"))
        return temporary, temporary
    if is_url(where):
        return where, Path(tempfile.mkdtemp(prefix="mlops-demo-files-"))
    root = Path(where).expanduser().absolute()
    if root.exists() and any(root.iterdir()):
        raise ValidationError(f"{root} is not empty; give the demo a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    return root, root


def _init_project(location: Path | str, clock: Clock) -> Project:
    """A new project at `location`. A PostgreSQL store may exist already (`mlops db upgrade`,
    `mlops init`) but must hold no model and no record: the demo never touches real data."""
    if not is_url(location):
        return Project.init(location, clock=clock)
    try:
        return Project.init(location, clock=clock)
    except ConflictError:
        existing = Project.open(location)
        try:
            empty = not existing.state().models and not existing.store.streams()
        finally:
            existing.store.close()
        if not empty:
            raise ValidationError(
                f"{existing.location} holds a project with data; give the demo an empty "
                "database"
            ) from None
        return Project.init(location, force=True, clock=clock)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def run_demo(
    location: Path | str, files: Path | None = None, seed: int = 7
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run the demo into an empty project at `location` (a directory or a URL); its files go
    to `files` (the directory itself by default)."""
    if files is None:
        if not isinstance(location, Path):
            raise ValueError("a URL project needs a directory for the demo's files")
        files = location
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(days=7 + DRIFT_DAYS)  # the A/B week, then the drift days
    clock = {"now": start}
    project = _init_project(location, lambda: clock["now"])
    try:
        yield from _run(project, location, files, seed, start, clock)
    finally:
        project.store.close()  # a PostgreSQL store flushes its buffer and disconnects


def _run(
    project: Project,
    location: Path | str,
    root: Path,
    seed: int,
    start: datetime,
    clock: dict[str, datetime],
) -> Iterator[tuple[str, dict[str, Any]]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    yield "init", {"root": project.location, "files": str(root)}

    models = root / "models"
    models.mkdir()
    for version, layers in (("v2.1.0", 3), ("v2.2.0", 4)):
        path = models / f"gnn_{version}.pt"
        path.write_bytes(f"GraphSAGE weights, {layers} layers".encode())
        mv = project.registry.register_version(
            ModelVersion(
                model_type="gnn",
                version=version,
                model_path=str(path),
                config={"architecture": "GraphSAGE", "hidden_dim": 256, "num_layers": layers},
                description=f"{layers}-layer GraphSAGE",
            )
        )
        yield "registered", {"version": mv.version, "champion": mv.is_champion}
    log = shlex.quote(str(root / "retrain-requests.log"))
    hook = f'echo "retrain $MLOPS_MODEL_TYPE $MLOPS_MODEL_VERSION at $MLOPS_DRIFT_SCORE" >> {log}'
    project.set_setting("drift.hooks.retrain", hook)
    project.set_setting("drift.reference_size", "5000")
    project.set_setting("drift.window_size", str(SAMPLES_PER_DAY))

    # -- the A/B week ----------------------------------------------------------------------
    project.ab.start_test(
        ABTestConfig(
            name=TEST,
            model_type="gnn",
            control_version="v2.1.0",
            treatment_version="v2.2.0",
            treatment_traffic_pct=10,
            duration_days=7,
            min_requests=1000,
            max_error_rate_increase=0.05,
            min_confidence_improvement=0.02,
            # the deeper model is about 5% slower, which the team accepts: no harm unless
            # clearly more than 10% slower (and promotion needs it within the 10% margin)
            harm_tolerance={"inference_time_ms": 0.10},
        )
    )
    yield "ab_started", {"test": TEST}
    user = 0
    for day in range(1, 8):
        lines = []
        for i in range(REQUESTS_PER_DAY):
            user += 1
            variant = project.ab.assign_variant("gnn", f"user{user}")["name"]
            treated = variant == "treatment"
            ts = start + timedelta(days=day - 1, seconds=i * 86400 / REQUESTS_PER_DAY)
            lines.append(
                orjson.dumps(
                    {
                        "ts": _iso(ts),
                        "variant": variant,
                        "user_id": f"user{user}",
                        "inference_time_ms": float(rng.normal(112, 12)),  # as fast as the champion
                        "confidence": float(
                            np.clip(rng.normal(0.83 if treated else 0.80, 0.1), 0, 1)
                        ),
                        "error": bool(rng.random() < (0.018 if treated else 0.02)),
                    }
                )
            )
        project.ab.record_batch(TEST, b"\n".join(lines))
        clock["now"] = start + timedelta(days=day)
        evaluation = project.ab.evaluate_test(TEST)
        yield "ab_day", {"day": day, "evaluation": evaluation}
    project.ab.finalize_test(TEST, "promote")
    champion = project.registry.require_champion("gnn")
    yield "ab_finalized", {"champion": champion.version, "evaluation": evaluation}

    # -- the drift week --------------------------------------------------------------------
    detector = project.drift_detector("gnn", champion.version)
    ab_end = start + timedelta(days=7)
    reference = b"".join(
        orjson.dumps({"ts": _iso(ab_end), "prediction": float(p), "confidence": float(c)}) + b"\n"
        for p, c in zip(
            rng.normal(0.0, 1.0, 5000), np.clip(rng.normal(0.85, 0.06, 5000), 0, 1), strict=True
        )
    )
    detector.set_reference(reference)
    yield "reference", {"samples": 5000, "version": champion.version}
    report: DriftReport | None = None
    for day in range(1, DRIFT_DAYS + 1):
        drifting_days = max(0, day - DRIFT_FROM_DAY + 1)
        shift = drifting_days * 0.3
        conf_mean = 0.85 * (1 - drifting_days * 0.04)
        day_start = ab_end + timedelta(days=day - 1)
        detector.record_batch(
            b"".join(
                orjson.dumps(
                    {
                        "ts": _iso(day_start + timedelta(seconds=i * 43)),
                        "prediction": float(p),
                        "confidence": float(c),
                    }
                )
                + b"\n"
                for i, (p, c) in enumerate(
                    zip(
                        rng.normal(shift, 1.0 + shift / 3, SAMPLES_PER_DAY),
                        np.clip(rng.normal(conf_mean, 0.06, SAMPLES_PER_DAY), 0, 1),
                        strict=True,
                    )
                )
            )
        )
        clock["now"] = day_start + timedelta(days=1)
        report = detector.check()
        yield "drift_day", {"day": day, "report": report}
        if report.alert_triggered:
            break

    # -- Prometheus ------------------------------------------------------------------------
    from .prometheus import write_textfile

    textfile = root / "metrics" / "mlops.prom"
    textfile.parent.mkdir()
    write_textfile(project, textfile)
    exported = safefs.read_file(textfile).decode()  # (no link or FIFO: the safe-open path)
    drift_lines = [line for line in exported.splitlines() if line.startswith("model_drift_score")]
    yield "exported", {"textfile": str(textfile), "lines": drift_lines}
    retrain_log = root / "retrain-requests.log"
    yield (
        "done",
        {
            "root": project.location,
            "files": str(root),
            "champion": champion.version,
            "ab_decision": evaluation.decision,
            "ab_requests": evaluation.requests,
            "confidence_diff": evaluation.metrics["confidence_diff"]["estimate"],
            "drift_level": report.level if report else None,
            "drift_score": report.current_drift_score if report else None,
            "hook_log": safefs.read_file(retrain_log).decode().strip()
            if retrain_log.exists()
            else "",
            "location": command_location(location),
            "commands": explore_commands(location),
        },
    )


def command_location(location: Path | str) -> str:
    """The location as `-C` takes it; a URL without its password (libpq then reads it from
    PGPASSWORD or ~/.pgpass), so no printed command carries a secret."""
    if isinstance(location, Path):
        return str(location)
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1@", location)


def explore_commands(location: Path | str) -> list[str]:
    c = f"mlops -C {shlex.quote(command_location(location))}"
    return [
        f"{c} list",
        f"{c} history gnn",
        f"{c} ab evaluate {TEST}",
        f"{c} drift report gnn v2.2.0",
        f"{c} metrics export",
        f"{c} config list",
    ]
