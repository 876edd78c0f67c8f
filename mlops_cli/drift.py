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
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import CapError, Source
from .errors import GateError, HookError, ValidationError
from .hooks import run_hook as run_bounded_hook
from .limits import SIZE_MAX, require_all_finite
from .records import plain_number, validate_sample
from .results import MappingResult
from .state import Level
from .store.base import BatchResult, Store, drift_stream
from .timeutil import format_ts, stamp

if TYPE_CHECKING:
    import numpy as np

LEVELS = tuple(level.value for level in Level)


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
    """The level name of a score (see state.Level.of)."""
    return Level.of(score, thresholds).value


RECOMMENDATIONS = {
    "ok": "No action: live predictions match the reference.",
    "monitor": "Watch this model: its predictions are drifting, still below the retrain level.",
    "retrain": "Retrain this model on recent data: drift is above the retrain threshold.",
    "critical": "Retrain now and consider rolling back: drift is critical.",
}


@dataclass
class DriftReport(MappingResult):
    """The seed's drift report of one model version, with the figures behind it."""

    model_type: str
    model_version: str
    status: str  # active or insufficient_data
    current_drift_score: float | None
    avg_drift_7d: float | None
    alert_triggered: bool
    level: str | None
    recommendation: str
    components: dict[str, float | None]
    ks_pvalue: float | None
    n_reference: int
    n_window: int
    checked_at: str
    skipped_lines: int = 0
    torn_bytes: int = 0
    hooks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DriftDetector:
    """Reference set, production log and check history of one model version."""

    def __init__(self, store: Store, model_type: str, model_version: str) -> None:
        self.store = store
        self.model_type = model_type
        self.model_version = model_version
        self.reference = drift_stream(model_type, model_version, "reference")
        self.production = drift_stream(model_type, model_version, "production")
        self.checks = drift_stream(model_type, model_version, "checks")

    def __repr__(self) -> str:
        return f"DriftDetector({self.model_type!r}, {self.model_version!r})"

    @property
    def _drift(self) -> dict[str, Any]:
        return self.store.read().settings.drift

    def _require_version(self) -> None:
        state = self.store.read()
        model = state.models.get(self.model_type)
        if model is None or self.model_version not in model.versions:
            state.version(self.model_type, self.model_version)  # raises the precise error

    # -- samples -----------------------------------------------------------------------------

    def _sample(self, prediction: float, confidence: float, ts: str | None) -> dict[str, Any]:
        self._require_version()
        doc = {
            "ts": ts or stamp(self.store.clock()),
            "prediction": plain_number(prediction),
            "confidence": plain_number(confidence),
        }
        return validate_sample(doc)

    def add_reference_sample(
        self, prediction: float, confidence: float, ts: str | None = None
    ) -> None:
        """Add one sample to the reference set (refused once it holds `reference_size`)."""
        doc = self._sample(prediction, confidence, ts)
        cap = int(self._drift["reference_size"])
        held = self.store.count(self.reference)
        if held + 1 > cap:
            raise ValidationError(self._cap_message(held, 1, cap, replace=False))
        self.store.append(self.reference, doc)

    def add_production_sample(
        self, prediction: float, confidence: float, ts: str | None = None
    ) -> None:
        """Record one live prediction (cheap: one appended line)."""
        self.store.append(self.production, self._sample(prediction, confidence, ts))

    def set_reference(
        self,
        data: Source,
        replace: bool = False,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> int:
        """Add a JSONL batch to the reference set, all or nothing; `replace` starts it anew.
        Returns the samples added (0 for a batch recorded before: see add_reference)."""
        return self.add_reference(data, replace, progress, batch_id).recorded

    def add_reference(
        self,
        data: Source,
        replace: bool = False,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Add a batch (bytes, or a binary stream) to the reference set, streamed, all or
        nothing and once per batch id (bytes default to their hash, a stream to none);
        `replace` starts the set anew with it. Past drift.reference_size it is refused whole."""
        self._require_version()
        cap = int(self._drift["reference_size"])
        try:
            if replace:
                count = self.store.replace(self.reference, data, validate_sample, cap=cap)
                return BatchResult(batch_id or "", count, 0)
            return self.store.append_batch(
                self.reference, data, validate_sample, batch_id, progress, cap=cap
            )
        except CapError as exc:
            raise ValidationError(
                self._cap_message(exc.held, exc.adding, cap, replace=replace)
            ) from None

    def record_batch(
        self,
        data: Source,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Record production samples all or nothing, exactly once per batch id (see batch.py)."""
        self._require_version()
        return self.store.append_batch(
            self.production, data, validate_sample, batch_id, progress
        )

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

    # -- checks ------------------------------------------------------------------------------

    def check(self, window: int | None = None, skip_invalid: bool = False) -> DriftReport:
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
        ref = self.store.samples(
            self.reference, first=int(drift["reference_size"]), skip_invalid=skip_invalid
        )
        production_end = self.store.position(self.production)
        win = self.store.samples(self.production, last=window, skip_invalid=skip_invalid)
        n_ref, n_win = len(ref), len(win)
        row: dict[str, Any] = {
            "ts": format_ts(self.store.clock()),
            "status": "insufficient_data",
            "score": None,
            "level": None,
            "components": None,
            "ks_pvalue": None,
            "n_reference": n_ref,
            "n_window": n_win,
            "window": window,
            "reference_end": self.store.position(self.reference),
            "production_end": production_end,
            "skipped_lines": ref.skipped + win.skipped,
            "torn_bytes": win.torn_bytes,
        }
        hooks: list[dict[str, Any]] = []
        if min(n_ref, n_win) >= int(drift["min_samples"]):
            parts = components(
                ref.prediction,
                ref.confidence,
                win.prediction,
                win.confidence,
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
        self.store.append(self.checks, row)
        report = self._report(row)
        report.hooks = hooks
        return report

    def _run_hooks(self, score: float, level: str) -> list[dict[str, Any]]:
        """Run the hook of every level the check reached; a failure is an error."""
        drift = self._drift
        results = []
        reached = [lv for lv in Level.alerting() if Level(level) >= lv]
        for hook_level in reached:
            command = drift["hooks"].get(hook_level.value)
            if not command:
                continue
            env = {
                **os.environ,
                "MLOPS_MODEL_TYPE": self.model_type,
                "MLOPS_MODEL_VERSION": self.model_version,
                "MLOPS_DRIFT_SCORE": f"{score:.6f}",
                "MLOPS_DRIFT_LEVEL": level,
                "MLOPS_PROJECT_DIR": self.store.location,
            }
            timeout = float(drift["hook_timeout_s"])
            where = (
                f"drift hook for {hook_level.value} ({command!r}) of {self.model_type} "
                f"{self.model_version}, score {score:.3f} ({level})"
            )
            cwd = Path(self.store.location) if os.path.isdir(self.store.location) else None
            code, stdout, stderr = run_hook(command, env, cwd, timeout)
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
                {
                    "level": hook_level.value,
                    "command": command,
                    "exit_code": 0,
                    "output": stdout[-2000:],
                }
            )
        return results

    def _report(self, row: dict[str, Any]) -> DriftReport:
        active = row["status"] == "active"
        score = row["score"]
        drift = self._drift
        if active:
            recommendation = RECOMMENDATIONS[row["level"]]
        else:
            recommendation = (
                f"Collect more samples: {row['n_reference']} reference and "
                f"{row['n_window']} window samples, {drift['min_samples']} needed in each."
            )
        return DriftReport(
            model_type=self.model_type,
            model_version=self.model_version,
            status=row["status"],
            current_drift_score=score,
            avg_drift_7d=self.average(days=7),
            alert_triggered=bool(active and score > drift["thresholds"]["retrain"]),
            level=row["level"],
            recommendation=recommendation,
            components=row["components"]
            or {"statistical": None, "performance": None, "distribution": None},
            ks_pvalue=row["ks_pvalue"],
            n_reference=row["n_reference"],
            n_window=row["n_window"],
            checked_at=row["ts"],
            skipped_lines=row.get("skipped_lines", 0),
            torn_bytes=row.get("torn_bytes", 0),
        )

    def history(self, days: float | None = None) -> list[dict[str, Any]]:
        """Checks, oldest first; with `days`, only those of the last `days` days."""
        if days is None:
            return self.store.history(self.checks)
        return self.store.history(self.checks, since=self.store.clock() - timedelta(days=days))

    def average(self, days: float = 7) -> float | None:
        scores = [r["score"] for r in self.history(days) if r["status"] == "active"]
        return sum(scores) / len(scores) if scores else None

    def get_drift_report(self) -> DriftReport:
        """The latest check, checking first when samples arrived since (never stale)."""
        self._require_version()
        last = self.store.history(self.checks, limit=1)
        if last and not self._stale(last[0]):
            return self._report(last[0])
        return self.check()

    def _stale(self, row: dict[str, Any]) -> bool:
        """Whether samples arrived (or settings changed) since the check `row`."""
        return (
            row.get("production_end") != self.store.position(self.production)
            or row.get("reference_end") != self.store.position(self.reference)
            or row.get("window") != self._drift["window_size"]
        )

    def detect_drift(self) -> float | None:
        """Check now and return the score (None while data is insufficient)."""
        return self.check().current_drift_score

    def has_reference(self) -> bool:
        return self.store.count(self.reference) > 0

    def last_check(self) -> dict[str, Any] | None:
        """The latest recorded check row, if any."""
        rows = self.store.history(self.checks, limit=1)
        return rows[0] if rows else None


class DriftMonitor:
    """The drift detectors of a project, and checks across all of them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._detectors: dict[tuple[str, str], DriftDetector] = {}

    def detector(self, model_type: str, version: str) -> DriftDetector:
        """The drift detector of one model version (one object per version)."""
        key = (model_type, version)
        detector = self._detectors.get(key)
        if detector is None:
            detector = self._detectors[key] = DriftDetector(self.store, model_type, version)
        return detector

    def detectors(self) -> dict[tuple[str, str], DriftDetector]:
        """A detector for every registered version that has a reference set."""
        out = {}
        for model_type, model in sorted(self.store.read().models.items()):
            for version in model.versions:
                detector = self.detector(model_type, version)
                if detector.has_reference():
                    out[(model_type, version)] = detector
        return out

    def check_all(self, window: int | None = None, skip_invalid: bool = False) -> list[DriftReport]:
        """Check every version with a reference set."""
        return [d.check(window, skip_invalid) for d in self.detectors().values()]


def parse_level(value: str | None) -> Level | None:
    """A `--fail-on` level: monitor, retrain or critical."""
    if value is None:
        return None
    if value not in [lv.value for lv in Level.alerting()]:
        raise ValidationError(f"--fail-on takes monitor, retrain or critical, not {value!r}")
    return Level(value)


def gate(reports: list[DriftReport], fail_on: Level | None) -> None:
    """Raise GateError (exit 3) when a report is at `fail_on` or above."""
    if fail_on is None:
        return
    worst = [r for r in reports if r.level and Level(r.level) >= fail_on]
    if worst:
        names = ", ".join(f"{r.model_type} {r.model_version} ({r.level})" for r in worst)
        raise GateError(f"drift at or above {fail_on.value}: {names}")


def run_hook(
    command: str, env: dict[str, str], cwd: Path | None, timeout: float
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
