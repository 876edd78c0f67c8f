"""Drift of live predictions against a reference set: the combined score, history, hooks.

score = w_S * S + w_P * P + w_Q * Q, each component in [0, 1]:
- S: the two-sample Kolmogorov-Smirnov statistic D of the predictions;
- P: the relative fall in mean confidence, scaled so a 20% fall is 1 (a rise is 0);
- Q: the shift of the mean in reference standard deviations, or the change of spread
  (|ln(sd ratio)| / ln 2: doubled or halved is 1), whichever is larger.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from . import jsonl
from .batch import BatchResult, append_batch, check_ts, validate_batch
from .errors import HookError, StateError, ValidationError
from .hooks import run_hook as run_bounded_hook
from .limits import PREDICTION_ABS_MAX as PRED_MAX
from .limits import SIZE_MAX, require_all_finite
from .registry import check_finite

if TYPE_CHECKING:
    import numpy as np

    from .project import Project

LEVELS = ("ok", "monitor", "retrain", "critical")
SAMPLE_FIELDS = {"prediction", "confidence", "ts"}
NUMBER = (int, float)


def validate_sample(doc: Any, where: str = "") -> dict[str, Any]:
    """A sample {prediction, confidence[, ts]}: both finite, confidence in [0, 1]."""
    if type(doc) is dict and doc.keys() <= SAMPLE_FIELDS and "ts" not in doc:
        # The common case, checked without building any message.
        p: Any = doc.get("prediction")
        c: Any = doc.get("confidence")
        if type(p) in NUMBER and -PRED_MAX <= p <= PRED_MAX and type(c) in NUMBER and 0 <= c <= 1:
            return doc
    if not isinstance(doc, dict):
        raise ValidationError(f"{where}expected a JSON object")
    unknown = set(doc) - SAMPLE_FIELDS
    if unknown:
        raise ValidationError(f"{where}unknown field {sorted(unknown)[0]!r}")
    for key in ("prediction", "confidence"):
        if key not in doc:
            raise ValidationError(f"{where}missing {key!r}")
    check_finite(f"{where}prediction", doc["prediction"], -PRED_MAX, PRED_MAX)
    check_finite(f"{where}confidence", doc["confidence"], 0, 1)
    if "ts" in doc:
        check_ts(doc["ts"], where)
    return doc


@dataclass(frozen=True)
class Components:
    statistical: float
    performance: float
    distribution: float
    ks_pvalue: float


def components(
    ref_pred: np.ndarray,
    ref_conf: np.ndarray,
    win_pred: np.ndarray,
    win_conf: np.ndarray,
    performance_scale: float = 0.2,
    distribution_scale: float = 1.0,
) -> Components:
    """The three score components (pure: arrays in, numbers out)."""
    import numpy as np

    from .stats import ks_two_sample

    statistic, pvalue = ks_two_sample(ref_pred, win_pred)
    conf_r, conf_p = float(np.mean(ref_conf)), float(np.mean(win_conf))
    performance = (conf_r - conf_p) / conf_r / performance_scale if conf_r > 0 else 0.0
    mean_r, mean_p = float(np.mean(ref_pred)), float(np.mean(win_pred))
    sd_r, sd_p = float(np.std(ref_pred, ddof=1)), float(np.std(win_pred, ddof=1))
    if sd_r > 0:
        shift = abs(mean_p - mean_r) / sd_r / distribution_scale
        spread = abs(math.log(sd_p / sd_r)) / math.log(2) if sd_p > 0 else 1.0
    else:  # a constant reference: any change at all is full drift
        shift = 0.0 if mean_p == mean_r else 1.0
        spread = 0.0 if sd_p == 0 else 1.0
    return Components(
        statistical=statistic,
        performance=_clip(performance),
        distribution=_clip(max(shift, spread)),
        ks_pvalue=pvalue,
    )


def _clip(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def combine(c: Components, weights: dict[str, float]) -> float:
    return (
        weights["statistical"] * c.statistical
        + weights["performance"] * c.performance
        + weights["distribution"] * c.distribution
    )


def level_of(score: float, thresholds: dict[str, float]) -> str:
    """ok <= monitor threshold < monitor <= retrain threshold < retrain <= critical < critical."""
    if score > thresholds["critical"]:
        return "critical"
    if score > thresholds["retrain"]:
        return "retrain"
    if score > thresholds["monitor"]:
        return "monitor"
    return "ok"


RECOMMENDATIONS = {
    "ok": "No action: live predictions match the reference.",
    "monitor": "Watch this model: its predictions are drifting, still below the retrain level.",
    "retrain": "Retrain this model on recent data: drift is above the retrain threshold.",
    "critical": "Retrain now and consider rolling back: drift is critical.",
}


def read_columns(
    path: Path, start: int, stop: int | None, limit: int, skip_invalid: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """Predictions and confidences of at most `limit` lines from `start`, a chunk at a time.

    Returns the arrays and the number of malformed lines skipped (only with `skip_invalid`;
    otherwise a malformed line is an error naming its line).
    """
    import numpy as np

    pred, conf = np.empty(limit), np.empty(limit)
    n = skipped = 0
    for chunk in jsonl.read_span(path, start, stop, skip_invalid):
        skipped += len(chunk.skipped)
        rows = chunk.records[: limit - n]
        try:
            pred[n : n + len(rows)] = [r["prediction"] for r in rows]
            conf[n : n + len(rows)] = [r["confidence"] for r in rows]
        except (KeyError, TypeError, ValueError):
            good = []
            for i, row in enumerate(rows):
                try:
                    good.append(validate_sample(row))
                except ValidationError as exc:
                    if not skip_invalid:
                        line = jsonl.lines_before(path, start) + chunk.line_of(i)
                        raise StateError(
                            f"{path}: line {line} is not a valid sample ({exc}); fix or remove "
                            "it, or pass --skip-invalid"
                        ) from None
                    skipped += 1
            rows = good
            pred[n : n + len(rows)] = [r["prediction"] for r in rows]
            conf[n : n + len(rows)] = [r["confidence"] for r in rows]
        n += len(rows)
        if n >= limit:
            break
    return pred[:n], conf[:n], skipped


class DriftDetector:
    """Reference set, production log and check history of one model version."""

    def __init__(
        self,
        project: Project,
        model_type: str,
        model_version: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.project = project
        self.model_type = model_type
        self.model_version = model_version
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        directory = project.drift_dir(model_type, model_version)
        self.reference_path = directory / "reference.jsonl"
        self.production_path = directory / "production.jsonl"
        self.checks_path = directory / "checks.jsonl"
        self._reference_seen = (0, 0, 0)  # (inode, offset, lines) counted so far

    def __repr__(self) -> str:
        return f"DriftDetector({self.model_type!r}, {self.model_version!r})"

    @property
    def _drift(self) -> dict[str, Any]:
        return self.project.settings["drift"]  # type: ignore[no-any-return]

    def _require_version(self) -> None:
        state = self.project.state()
        model = state["models"].get(self.model_type)
        if model is None or self.model_version not in model["versions"]:
            self.project.registry._record(state, self.model_type, self.model_version)

    # -- samples -----------------------------------------------------------------------------

    def _sample_line(self, prediction: float, confidence: float, ts: str | None) -> bytes:
        self._require_version()
        doc = {"ts": ts or jsonl.utc_now(), "prediction": prediction, "confidence": confidence}
        validate_sample(doc)
        return orjson.dumps(doc) + b"\n"

    def add_reference_sample(
        self, prediction: float, confidence: float, ts: str | None = None
    ) -> None:
        """Add one sample to the reference set (refused once it holds `reference_size`)."""
        line = self._sample_line(prediction, confidence, ts)
        self.project.append_log(self.reference_path, line, precheck=self._cap_check(1))

    def add_production_sample(
        self, prediction: float, confidence: float, ts: str | None = None
    ) -> None:
        """Record one live prediction (cheap: one appended line)."""
        line = self._sample_line(prediction, confidence, ts)
        self.project.append_log(self.production_path, line)

    def set_reference(
        self, data: bytes, replace: bool = False, progress: Callable[[int], None] | None = None
    ) -> int:
        """Add a JSONL batch to the reference set, all or nothing; `replace` starts it anew."""
        self._require_version()
        payload, count = validate_batch(data, validate_sample, progress)
        cap = int(self._drift["reference_size"])
        if replace:
            if count > cap:
                raise ValidationError(self._cap_message(0, count, cap, replace=True))
            from . import safefs

            with jsonl.locked_log(
                self.reference_path, self.project._lock_timeout(), root=self.project.root
            ):
                safefs.atomic_replace(self.project.root, self.reference_path, payload)
            return count
        self.project.append_log(
            self.reference_path, payload, fsync=True, precheck=self._cap_check(count)
        )
        return count

    def record_batch(
        self,
        data: bytes,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Record production samples all or nothing, exactly once per batch id (see batch.py)."""
        self._require_version()
        return append_batch(
            self.production_path,
            data,
            validate_sample,
            self.project._lock_timeout(),
            batch_id,
            progress,
            root=self.project.root,
        )

    def _cap_check(self, adding: int) -> Callable[[int], None]:
        cap = int(self._drift["reference_size"])

        def check(fd: int) -> None:
            held = self._count_reference(fd)
            if held + adding > cap:
                raise ValidationError(self._cap_message(held, adding, cap, replace=False))

        return check

    def _cap_message(self, held: int, adding: int, cap: int, replace: bool) -> str:
        if replace:
            return (
                f"the new reference holds {adding} samples, more than drift.reference_size "
                f"{cap}; send at most {cap}, or raise the setting"
            )
        return (
            f"the reference of {self.model_type} {self.model_version} holds {held} of "
            f"{cap} samples (drift.reference_size); adding {adding} would exceed it: use "
            "--replace to start a new reference, or raise the setting"
        )

    def _count_reference(self, fd: int) -> int:
        """Lines in the reference, counting only bytes not counted before (under its lock)."""
        st = os.fstat(fd)
        inode, offset, lines = self._reference_seen
        if inode != st.st_ino or offset > st.st_size:
            inode, offset, lines = st.st_ino, 0, 0
        while offset < st.st_size:
            block = os.pread(fd, min(1 << 20, st.st_size - offset), offset)
            lines += block.count(b"\n")
            offset += len(block)
        self._reference_seen = (inode, offset, lines)
        return lines

    # -- checks ------------------------------------------------------------------------------

    def check(self, window: int | None = None, skip_invalid: bool = False) -> dict[str, Any]:
        """Score the window against the reference, run hooks, append to the history.

        A malformed sample line is an error, or with `skip_invalid` skipped and counted.
        """
        self._require_version()
        drift = self._drift
        window = int(window or drift["window_size"])
        if window < 2:
            raise ValidationError(f"--window must be at least 2, not {window}")
        if window > SIZE_MAX:
            raise ValidationError(f"--window must be at most {SIZE_MAX:,}, not {window}")
        ref_pred, ref_conf, ref_skipped = read_columns(
            self.reference_path, 0, None, int(drift["reference_size"]), skip_invalid
        )
        start, production_end, torn = jsonl.tail_span(self.production_path, window)
        win_pred, win_conf, win_skipped = read_columns(
            self.production_path, start, production_end, window, skip_invalid
        )
        n_ref, n_win = len(ref_pred), len(win_pred)
        row: dict[str, Any] = {
            "ts": self.clock().isoformat().replace("+00:00", "Z"),
            "status": "insufficient_data",
            "score": None,
            "level": None,
            "components": None,
            "ks_pvalue": None,
            "n_reference": n_ref,
            "n_window": n_win,
            "window": window,
            "reference_end": jsonl.tail_span(self.reference_path, 0)[1],
            "production_end": production_end,
            "skipped_lines": ref_skipped + win_skipped,
            "torn_bytes": torn,
        }
        hooks: list[dict[str, Any]] = []
        if min(n_ref, n_win) >= int(drift["min_samples"]):
            parts = components(
                ref_pred,
                ref_conf,
                win_pred,
                win_conf,
                drift["performance_scale"],
                drift["distribution_scale"],
            )
            score = combine(parts, drift["weights"])
            # Never recorded, exported or hooked on: a statistic that is not finite.
            require_all_finite(
                {
                    "score": score,
                    "statistical": parts.statistical,
                    "performance": parts.performance,
                    "distribution": parts.distribution,
                    "ks_pvalue": parts.ks_pvalue,
                },
                f"the reference and window of {self.model_type} {self.model_version}",
            )
            level = level_of(score, drift["thresholds"])
            row.update(
                status="active",
                score=score,
                level=level,
                ks_pvalue=parts.ks_pvalue,
                components={
                    "statistical": parts.statistical,
                    "performance": parts.performance,
                    "distribution": parts.distribution,
                },
            )
            hooks = self._run_hooks(score, level)
        self.project.append_log(self.checks_path, orjson.dumps(row) + b"\n")
        report = self._report(row)
        report["hooks"] = hooks
        return report

    def _run_hooks(self, score: float, level: str) -> list[dict[str, Any]]:
        """Run the hook of every level the check reached; a failure is an error."""
        drift = self._drift
        results = []
        reached = LEVELS[1 : LEVELS.index(level) + 1] if level != "ok" else ()
        for hook_level in reached:
            command = drift["hooks"].get(hook_level)
            if not command:
                continue
            env = {
                **os.environ,
                "MLOPS_MODEL_TYPE": self.model_type,
                "MLOPS_MODEL_VERSION": self.model_version,
                "MLOPS_DRIFT_SCORE": f"{score:.6f}",
                "MLOPS_DRIFT_LEVEL": level,
                "MLOPS_PROJECT_DIR": str(self.project.root),
            }
            timeout = float(drift["hook_timeout_s"])
            where = (
                f"drift hook for {hook_level} ({command!r}) of {self.model_type} "
                f"{self.model_version}, score {score:.3f} ({level})"
            )
            code, stdout, stderr = run_hook(command, env, self.project.root, timeout)
            if code is None:
                raise HookError(
                    f"{where} timed out after {timeout:g} s (drift.hook_timeout_s); "
                    "the check was not recorded, so the next check runs it again"
                )
            if code != 0:
                last = (stderr or stdout).strip().splitlines()[-1:] or [""]
                raise HookError(
                    f"{where} failed with exit code {code}: {last[0]}; "
                    "the check was not recorded, so the next check runs it again"
                )
            results.append(
                {"level": hook_level, "command": command, "exit_code": 0, "output": stdout[-2000:]}
            )
        return results

    def _report(self, row: dict[str, Any]) -> dict[str, Any]:
        active = row["status"] == "active"
        score = row["score"]
        thresholds = self._drift["thresholds"]
        if active:
            recommendation = RECOMMENDATIONS[row["level"]]
        else:
            need = self._drift["min_samples"]
            recommendation = (
                f"Collect more samples: {row['n_reference']} reference and "
                f"{row['n_window']} window samples, {need} needed in each."
            )
        return {
            "model_type": self.model_type,
            "model_version": self.model_version,
            "status": row["status"],
            "current_drift_score": score,
            "avg_drift_7d": self.average(days=7),
            "alert_triggered": bool(active and score > thresholds["retrain"]),
            "level": row["level"],
            "recommendation": recommendation,
            "components": row["components"]
            or {"statistical": None, "performance": None, "distribution": None},
            "ks_pvalue": row["ks_pvalue"],
            "n_reference": row["n_reference"],
            "n_window": row["n_window"],
            "checked_at": row["ts"],
            "skipped_lines": row.get("skipped_lines", 0),
            "torn_bytes": row.get("torn_bytes", 0),
        }

    def history(self, days: float | None = None) -> list[dict[str, Any]]:
        """Checks, oldest first; with `days`, only those of the last `days` days."""
        if days is None:
            return jsonl.read_from(self.checks_path).records
        since = self.clock() - timedelta(days=days)
        count = 256
        while True:
            rows = jsonl.tail(self.checks_path, count).records
            if len(rows) < count or _when(rows[0]) < since:
                return [r for r in rows if _when(r) >= since]
            count *= 4

    def average(self, days: float = 7) -> float | None:
        scores = [r["score"] for r in self.history(days) if r["status"] == "active"]
        return sum(scores) / len(scores) if scores else None

    def get_drift_report(self) -> dict[str, Any]:
        """The latest check, checking first when samples arrived since (never stale)."""
        self._require_version()
        last = jsonl.tail(self.checks_path, 1).records
        if last and not self._stale(last[0]):
            report = self._report(last[0])
            report["hooks"] = []
            return report
        return self.check()

    def _stale(self, row: dict[str, Any]) -> bool:
        """Whether samples arrived (or settings changed) since the check `row`."""
        return (
            row.get("production_end") != jsonl.tail_span(self.production_path, 0)[1]
            or row.get("reference_end") != jsonl.tail_span(self.reference_path, 0)[1]
            or row.get("window") != self._drift["window_size"]
        )

    def detect_drift(self) -> float | None:
        """Check now and return the score (None while data is insufficient)."""
        score: float | None = self.check()["current_drift_score"]
        return score

    def has_reference(self) -> bool:
        return self.reference_path.is_file() and self.reference_path.stat().st_size > 0


def run_hook(
    command: str, env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int | None, str, str]:
    """hooks.run_hook in the old shape: (exit code or None on timeout, output tail, "").

    The output is stdout and stderr together, its last 2,000 characters, decoded with
    replacement; the deadline holds whatever the hook's children do.
    """
    outcome = run_bounded_hook(command, env, timeout, cwd=cwd)
    if outcome.timed_out:
        return None, "", ""
    if not outcome.command_ran:
        return 127, "", outcome.output
    return outcome.returncode, outcome.output, ""


def _when(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00"))
