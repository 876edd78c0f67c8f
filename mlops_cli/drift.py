"""Drift of live predictions against a reference set: the combined score, history, hooks.

score = w_S * S + w_P * P + w_Q * Q, each component in [0, 1]:
- S: the two-sample Kolmogorov-Smirnov statistic D of the predictions;
- P: the relative fall in mean confidence, scaled so a 20% fall is 1 (a rise is 0);
- Q: the shift of the mean in reference standard deviations, or the change of spread
  (|ln(sd ratio)| / ln 2: doubled or halved is 1), whichever is larger.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import CapError, Source
from .errors import (
    SKIP_INVALID,
    ConflictError,
    GateError,
    HookError,
    MlopsError,
    StateError,
    ValidationError,
)
from .limits import SIZE_MAX, require_all_finite
from .records import plain_number, plain_sample, validate_sample
from .results import MappingResult
from .state import Level, RegistryState
from .store.base import BatchResult, Rows, Samples, Store, drift_stream, skipped_of
from .timeutil import format_ts, stamp_now

if TYPE_CHECKING:
    import numpy as np

    from . import sources

LEVELS = tuple(level.value for level in Level)
INSUFFICIENT = "insufficient_data"
OUTPUT_TAIL = 2000  # characters of a hook's output kept in the report
FEATURE_FIGURES = "_feature_figures"  # a measured row's full feature figures (not recorded)


@dataclass(frozen=True)
class Components:
    statistical: float
    performance: float
    distribution: float
    ks_pvalue: float
    # The effects and p-values behind the component alarms (see `alarms`).
    wasserstein: float = 0.0  # Wasserstein-1 distance of the predictions / reference sd
    confidence_fall: float = 0.0  # (mean conf_r - mean conf_p) / mean conf_r
    confidence_pvalue: float = 1.0  # one-sided: the window's mean confidence is lower
    spread_log_ratio: float = 0.0  # |ln(sd_p / sd_r)| of the predictions
    spread_pvalue: float = 1.0  # rank test of the absolute deviations from the joint median


ALARM_FLOORS = {
    "predictions": 0.1,  # Wasserstein-1 / reference sd: Evidently's default drift threshold
    "confidence": 0.03,  # relative fall of the mean confidence
    "spread": math.log(1.25),  # |ln(sd ratio)|: a quarter more spread, or a fifth less
}
"""The effect a component's alarm needs besides its p-value below `drift.alarm_alpha`."""
ALARMS = tuple(ALARM_FLOORS)
SPREAD_EFFECT_MAX = 700.0  # |ln(sd ratio)| when one side is constant and the other not


def components(
    ref_pred: np.ndarray,
    ref_conf: np.ndarray,
    win_pred: np.ndarray,
    win_conf: np.ndarray,
    performance_scale: float = 0.2,
    distribution_scale: float = 1.0,
    win_sorted: np.ndarray | None = None,
) -> Components:
    """The three score components and the alarms' effects and p-values (pure: arrays in,
    numbers out). `win_sorted`: the window's predictions sorted, when the caller has them."""
    import numpy as np

    from .ks import ks_two_sample_pvalue, merge_sorted, merged_ecdf_distances

    # One sort of each sample and one merge serve the KS statistic, Wasserstein-1 and the
    # spread test.
    ref_sorted = np.sort(ref_pred)
    if win_sorted is None:
        win_sorted = np.sort(win_pred)
    merged, from_ref = merge_sorted(ref_sorted, win_sorted)
    statistic, distance = merged_ecdf_distances(merged, from_ref)
    statistic, pvalue = ks_two_sample_pvalue(len(ref_sorted), len(win_sorted), statistic)
    conf_r, conf_p = float(np.mean(ref_conf)), float(np.mean(win_conf))
    fall = (conf_r - conf_p) / conf_r if conf_r > 0 else 0.0
    performance = fall / performance_scale
    mean_r, mean_p = float(np.mean(ref_pred)), float(np.mean(win_pred))
    sd_r, sd_p = _sd(ref_pred), _sd(win_pred)
    if sd_r > 0:
        shift = abs(mean_p - mean_r) / sd_r / distribution_scale
        spread = abs(math.log(sd_p / sd_r)) / math.log(2) if sd_p > 0 else 1.0
    else:  # a constant reference: any change at all is full drift
        shift = 0.0 if mean_p == mean_r else 1.0
        spread = 0.0 if sd_p == 0 else 1.0
    if sd_r > 0 and sd_p > 0:
        log_ratio = abs(math.log(sd_p / sd_r))
    else:
        log_ratio = 0.0 if sd_r == sd_p else SPREAD_EFFECT_MAX
    return Components(
        statistical=statistic,
        performance=_clip(performance),
        distribution=_clip(max(shift, spread)),
        ks_pvalue=pvalue,
        wasserstein=distance / sd_r if sd_r > 0 else distance,
        confidence_fall=fall,
        confidence_pvalue=_z_pvalue(conf_r, conf_p, ref_conf, win_conf, one_sided=True),
        spread_log_ratio=log_ratio,
        spread_pvalue=_spread_pvalue(ref_sorted, win_sorted, merged),
    )


def _z_pvalue(mean_r: float, mean_p: float, ref: Any, win: Any, one_sided: bool) -> float:
    """The large-sample (Welch) z test of mean_r - mean_p: one-sided for a fall of the
    window's mean, else two-sided. Both sides hold at least `drift.min_samples` (100)."""
    se = math.sqrt(_var(ref) / len(ref) + _var(win) / len(win))
    diff = mean_r - mean_p
    if se == 0:
        return 1.0 if (diff <= 0 if one_sided else diff == 0) else 0.0
    z = diff / se
    return 0.5 * math.erfc(z / math.sqrt(2)) if one_sided else math.erfc(abs(z) / math.sqrt(2))


def _spread_pvalue(ref_sorted: Any, win_sorted: Any, merged: Any = None) -> float:
    """A distribution-free test of equal spread: the Mann-Whitney-Wilcoxon test (normal
    approximation, ties corrected, two-sided) of the absolute deviations from the median of
    both samples together (Fligner and Killeen 1976). Without drift all the values are
    exchangeable and so are their deviations from a centre that depends on all of them alike:
    the test holds its level whatever the shape, heavy tails and skew included. (Deviations
    from each sample's own median are not exchangeable on a skewed distribution: that test
    fires 3% of no-drift checks at p < 0.001 on lognormal data.) A shift of the mean alone
    also moves these deviations; the alarm's floor on the sd ratio keeps it to spread.
    `merged`: both samples in one sorted array, when the caller has it."""
    import numpy as np

    from .ks import merge_sorted

    if merged is None:
        merged = merge_sorted(ref_sorted, win_sorted)[0]
    centre = _median(merged)
    dev_r, dev_p = _sorted_deviations(ref_sorted, centre), _sorted_deviations(win_sorted, centre)
    n1, n2 = len(dev_r), len(dev_p)
    total = n1 + n2
    pooled = np.concatenate((dev_r, dev_p))
    pooled.sort(kind="stable")  # two sorted runs: merged in one pass
    distinct = pooled[1:] != pooled[:-1]
    # U counts the pairs where the reference's deviation is the larger, a tie as half
    below = float(np.searchsorted(dev_p, dev_r, side="left").sum())
    if distinct.all():  # no tie anywhere
        u, ties = below, 0.0
    else:
        not_above = float(np.searchsorted(dev_p, dev_r, side="right").sum())
        u = (below + not_above) / 2
        starts = np.flatnonzero(np.concatenate(([True], distinct, [True])))
        runs = np.diff(starts).astype(np.float64)
        ties = float(np.sum(runs**3 - runs))
    variance = n1 * n2 / 12.0 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2.0) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def _sorted_deviations(sorted_values: Any, centre: float) -> Any:
    """|x - centre| in ascending order, from sorted x: two sorted runs, merged."""
    import numpy as np

    cut = int(np.searchsorted(sorted_values, centre, side="left"))
    out = np.empty(len(sorted_values))
    np.subtract(centre, sorted_values[:cut][::-1], out=out[:cut])
    np.subtract(sorted_values[cut:], centre, out=out[cut:])
    out.sort(kind="stable")
    return out


def _median(sorted_values: Any) -> float:
    n = len(sorted_values)
    return float(sorted_values[n // 2] + sorted_values[(n - 1) // 2]) / 2


def _var(x: Any) -> float:
    import numpy as np

    return float(np.var(x, ddof=1)) if len(x) > 1 else 0.0


def alarms(c: Components | None, alpha: float) -> dict[str, dict[str, Any]]:
    """Each component's alarm: its p-value below `alpha` and its effect at or above its floor
    (`ALARM_FLOORS`). The keys are pinned: `alarm`, `effect`, `p_value`, `floor`; without
    figures (too few samples) effect and p-value are None and no alarm fires."""
    figures = {
        "predictions": (c.wasserstein, c.ks_pvalue) if c else None,
        "confidence": (c.confidence_fall, c.confidence_pvalue) if c else None,
        "spread": (c.spread_log_ratio, c.spread_pvalue) if c else None,
    }
    out: dict[str, dict[str, Any]] = {}
    for name, floor in ALARM_FLOORS.items():
        pair = figures[name]
        if pair is None:
            out[name] = {"alarm": False, "effect": None, "p_value": None, "floor": floor}
            continue
        effect, p_value = pair
        fired = p_value < alpha and effect >= floor
        out[name] = {"alarm": fired, "effect": effect, "p_value": p_value, "floor": floor}
    return out


def fired(alarm_figures: dict[str, dict[str, Any]] | None) -> list[str]:
    """The names of the alarms that fired."""
    return [k for k, v in (alarm_figures or {}).items() if v.get("alarm")]


def _sd(x: np.ndarray) -> float:
    import numpy as np

    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


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


def level_with_alarms(level: str, alarm_figures: dict[str, dict[str, Any]]) -> str:
    """The score's level, raised to at least `retrain` when a component's alarm fired."""
    if fired(alarm_figures) and Level(level) < Level.RETRAIN:
        return Level.RETRAIN.value
    return level


RECOMMENDATIONS = {
    "ok": "No action: live predictions match the reference.",
    "monitor": "Watch this model: its predictions are drifting, still below the retrain level.",
    "retrain": "Retrain this model on recent data: drift is above the retrain threshold.",
    "critical": "Retrain now and consider rolling back: drift is critical.",
}
RAISED_BY_ALARM = (
    "Retrain this model on recent data: a drift alarm fired, though the score is below the "
    "retrain threshold."
)


@dataclass
class HookOutcome(MappingResult):
    """What one level's hook did for one version (the command itself is never recorded)."""

    level: str
    ok: bool
    exit_code: int | None  # None when it timed out
    timed_out: bool
    output: str  # the tail of its stdout and stderr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftReport(MappingResult):
    """The seed's drift report of one model version, with the figures behind it."""

    model_type: str
    model_version: str
    status: str  # active or insufficient_data
    current_drift_score: float  # 0.0 while data is insufficient (the seed formats it)
    avg_drift_7d: float | None
    alert_triggered: bool
    level: str  # a Level, or insufficient_data
    recommendation: str
    components: dict[str, float | None]
    ks_pvalue: float | None
    n_reference: int
    n_window: int
    checked_at: str
    skipped_lines: int = 0
    torn_bytes: int = 0
    hooks: list[HookOutcome] = field(default_factory=list)
    # Per component (predictions, confidence, spread): alarm, effect, p_value, floor.
    alarms: dict[str, dict[str, Any]] = field(default_factory=lambda: alarms(None, 0.0))
    # Per input feature (feature_drift.check_features): kind, alarm, score, drift, missing,
    # type_change (each alarm, effect, p_value, floor) and quality; the features whose alarm
    # fired (they raise the level to at least retrain; the score stays the output's).
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    drifted_features: list[str] = field(default_factory=list)
    drifted_feature_share: float | None = None
    new_features: list[str] = field(default_factory=list)
    feature_alpha: float | None = None  # each feature test's level: alarm_alpha / tests

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def hooks_failed(self) -> list[HookOutcome]:
        return [h for h in self.hooks if not h.ok]

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
        self._registered_in: RegistryState | None = None  # a snapshot that holds the version
        self._warned_full = False

    def __repr__(self) -> str:
        return f"DriftDetector({self.model_type!r}, {self.model_version!r})"

    @property
    def _drift(self) -> dict[str, Any]:
        return self.store.read().settings.drift

    def _require_version(self) -> None:
        model = self.store.snapshot().models.get(self.model_type)
        if model is None or self.model_version not in model.versions:  # or registered since
            self.store.read().version(self.model_type, self.model_version)  # or the error

    # -- samples -----------------------------------------------------------------------------

    def _sample(
        self,
        prediction: float,
        confidence: float,
        ts: str | None,
        features: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._require_version()
        doc: dict[str, Any] = {
            "ts": ts or stamp_now(self.store.clock),
            "prediction": plain_number(prediction),
            "confidence": plain_number(confidence),
        }
        if features is not None:
            doc["features"] = features
        return validate_sample(doc, judge_ts=ts is not None)

    def add_reference_sample(
        self,
        prediction: float,
        confidence: float,
        ts: str | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one sample (with its input features, if given) to the reference set; once it
        holds `reference_size`, the sample is ignored with one warning per detector (the seed
        fills "the first 10k samples")."""
        doc = self._sample(prediction, confidence, ts, features)
        cap = int(self._drift["reference_size"])
        if self.store.count(self.reference) >= cap:
            if not self._warned_full:
                self._warned_full = True
                warnings.warn(
                    f"the reference of {self.model_type} {self.model_version} is full "
                    f"({cap} samples, drift.reference_size): further reference samples are "
                    "ignored",
                    stacklevel=2,
                )
            return
        self.store.append(self.reference, doc)

    def add_production_sample(
        self,
        prediction: float,
        confidence: float,
        ts: str | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one live prediction, with the input features the model read if given
        (cheap: one appended line)."""
        store = self.store
        state = store.snapshot()
        if state is not self._registered_in:  # checked once per snapshot
            self._require_version()
            self._refuse_if_sourced()
            self._registered_in = state
        if ts is not None or features is not None or not plain_sample(prediction, confidence):
            store.append(self.production, self._sample(prediction, confidence, ts, features))
            return
        store.append(
            self.production,
            {"ts": stamp_now(store.clock), "prediction": prediction, "confidence": confidence},
        )

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
                result = BatchResult(batch_id or "", count, 0)
            else:
                result = self.store.append_batch(
                    self.reference, data, validate_sample, batch_id, progress, cap=cap
                )
        except CapError as exc:
            raise ValidationError(
                self._cap_message(exc.held, exc.adding, cap, replace=replace),
                cli={"replace=True": "--replace"},
            ) from None
        # Profiled once, when the reference is set. The batch is committed: a profile that
        # fails is made again by the next read, which says what failed.
        with contextlib.suppress(MlopsError, ValueError, TypeError):
            self.feature_profile()
        return result

    def feature_profile(self, skip_invalid: bool = False) -> dict[str, Any]:
        """The reference's feature profile (feature_drift.profile), kept beside the reference
        and computed again only when the reference changed since (a derived cache).
        `skip_invalid`: malformed reference lines are skipped (read-only views), not errors."""
        from .feature_drift import profile_chunks

        position = self.store.position(self.reference)
        first = int(self._drift["reference_size"])
        kept = self.store.load_profile(self.reference)
        if kept is not None and (kept.get("position"), kept.get("first")) == (position, first):
            return kept
        doc = {
            "position": position,
            "first": first,  # drift.reference_size when it was made: a change profiles again
            **profile_chunks(
                self.store.feature_chunks(self.reference, first=first, skip_invalid=skip_invalid),
                lenient=skip_invalid,
            ),
        }
        self.store.save_profile(self.reference, doc)
        return doc

    def feature_histograms(self, window: int | None = None) -> dict[str, dict[str, Any]]:
        """Each input feature's reference (from its profile) and window distributions
        (feature_drift.histogram), for the dashboard; empty without features."""
        from .feature_drift import Split, gather, histogram, join_gathered

        prof = self.feature_profile(skip_invalid=True)  # a view: bad lines left out
        if not prof["features"]:
            return {}
        size = int(self._drift["window_size"]) if window is None else window
        splits, n = self.store.fold_features(
            self.production, size, True, partial(gather, lenient=True), join_gathered
        )
        return {
            name: histogram(ref, splits.get(name) or Split([None] * n))
            for name, ref in prof["features"].items()
        }

    def record_batch(
        self,
        data: Source,
        progress: Callable[[int], None] | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Record production samples all or nothing, exactly once per batch id (see batch.py)."""
        self._require_version()
        self._refuse_if_sourced()
        return self.store.append_batch(self.production, data, validate_sample, batch_id, progress)

    def source(self) -> sources.Source | None:
        """Where this version's drift samples live, when not in the project (`set_source`)."""
        model = self.store.snapshot().models.get(self.model_type)
        rec = model.versions.get(self.model_version) if model else None
        if rec is None:
            rec = self.store.read().version(self.model_type, self.model_version)
        if rec.drift_source is None:
            return None
        from .sources.spec import Source as SourceSpec

        where = f"the drift source of {self.model_type} {self.model_version}"
        return SourceSpec.from_doc(rec.drift_source, where)

    def _refuse_if_sourced(self) -> None:
        found = self.source()
        if found is not None:
            raise ConflictError(
                f"{self.model_type} {self.model_version} reads its production samples from a "
                f"source ({found.describe()}); write them there, or `mlops drift source "
                f"{self.model_type} {self.model_version} --off`"
            )

    def set_source(self, source: sources.Source | None) -> sources.Source | None:
        """Read this version's production window (and its reference, when the source
        declares a `reference` filter) from a source; None reads the project's samples
        again. The source is checked first (columns and types); audited as `drift_source`."""
        if source is not None:
            from .sources import check_drift

            check_drift(source)
        with self.store.transaction() as txn:
            rec = txn.state.version(self.model_type, self.model_version)
            doc = source.to_doc() if source is not None else None
            if rec.drift_source != doc:
                rec.drift_source = doc
                txn.event(
                    "drift_source",
                    model_type=self.model_type,
                    version=self.model_version,
                    source=source.describe() if source is not None else None,
                )
        return source

    def _cap_message(self, held: int, adding: int, cap: int, replace: bool) -> str:
        if replace:
            return (
                f"the new reference holds {adding} samples, more than drift.reference_size "
                f"{cap}; send at most {cap}, or raise the setting"
            )
        return (
            f"the reference of {self.model_type} {self.model_version} holds {held} of "
            f"{cap} samples (drift.reference_size); adding {adding} would exceed it: use "
            "replace=True to start a new reference, or raise the setting"
        )

    # -- checks ------------------------------------------------------------------------------

    def _measure(self, window: int | None, skip_invalid: bool) -> dict[str, Any]:
        """The current figures as a check row (read-only: nothing is recorded)."""
        self._require_version()
        drift = self._drift
        size = int(drift["window_size"]) if window is None else window
        if isinstance(size, bool) or not 1 <= size <= SIZE_MAX:
            raise ValidationError(
                f"window must be between 1 and {SIZE_MAX:,}, not {size}",
                cli={"window must": "--window must"},
            )
        production_end = self.store.position(self.production)
        ref, win = self._samples(int(drift["reference_size"]), size, skip_invalid)
        n_ref, n_win = len(ref), len(win)
        row: dict[str, Any] = {
            "ts": format_ts(self.store.clock()),
            "status": INSUFFICIENT,
            "score": 0.0,
            "level": INSUFFICIENT,
            "components": None,
            "alarms": alarms(None, 0.0),
            "ks_pvalue": None,
            "n_reference": n_ref,
            "n_window": n_win,
            "window": size,
            "reference_end": self.store.position(self.reference),
            "production_end": production_end,
            "skipped_lines": ref.skipped + win.skipped,
            "torn_bytes": win.torn_bytes,
        }
        if min(n_ref, n_win) >= int(drift["min_samples"]):
            parts = components(
                ref.prediction,
                ref.confidence,
                win.prediction,
                win.confidence,
                drift["performance_scale"],
                drift["distribution_scale"],
                win.sorted_prediction,
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
                    "wasserstein": parts.wasserstein,
                    "confidence_fall": parts.confidence_fall,
                    "confidence_pvalue": parts.confidence_pvalue,
                    "spread_log_ratio": parts.spread_log_ratio,
                    "spread_pvalue": parts.spread_pvalue,
                },
                f"the reference and window of {self.model_type} {self.model_version}",
            )
            figures = alarms(parts, float(drift["alarm_alpha"]))
            row.update(
                status="active",
                score=score,
                level=level_with_alarms(level_of(score, drift["thresholds"]), figures),
                alarms=figures,
                ks_pvalue=parts.ks_pvalue,
                components={
                    "statistical": parts.statistical,
                    "performance": parts.performance,
                    "distribution": parts.distribution,
                },
            )
        self._measure_features(row, size, skip_invalid)
        return row

    def _measure_features(self, row: dict[str, Any], size: int, skip_invalid: bool) -> None:
        """The input features' figures (feature_drift.check_features) of the window against
        the reference's profile, into the row: their alarms raise an active check's level to
        at least `retrain`; the score stays the output's."""
        prof = self.feature_profile(skip_invalid)
        if not prof["features"]:
            return
        from .feature_drift import check_gathered, gather_ordered, join_gathered

        drift = self._drift
        splits, n = self.store.fold_features(
            self.production, size, skip_invalid, partial(gather_ordered, lenient=skip_invalid),
            join_gathered,
        )
        found = check_gathered(
            prof, splits, n, float(drift["alarm_alpha"]), int(drift["min_samples"]), beside=True
        )
        row["features"] = {
            "drifted": found["drifted"],
            "drifted_share": found["drifted_share"],
            "tested": len(found["features"]),
            # per feature [score, alarm]: what the export reads (capped there)
            "scores": {
                name: [f["score"], int(f["alarm"])] for name, f in found["features"].items()
            },
        }
        row[FEATURE_FIGURES] = found
        if row["status"] == "active" and found["drifted"] and Level(row["level"]) < Level.RETRAIN:
            row["level"] = Level.RETRAIN.value

    def _samples(self, first: int, last: int, skip_invalid: bool) -> tuple[Samples, Samples]:
        """The reference (its first `first` samples) and the window (the last `last`): from
        the project's streams, or the window (and the reference, when declared) pulled from
        the version's source as Arrow columns, the last by `ts` with ties by `seq`."""
        found = self.source()
        if found is None:
            return self.store.reference_and_window(
                self.reference, first, self.production, last, skip_invalid
            )
        from .sources import drift_samples

        ref_cols, win_cols = drift_samples(
            found, first if found.reference is not None else None, last
        )
        win = Samples(win_cols["prediction"], win_cols["confidence"])
        if ref_cols is None:
            ref = self.store.samples(self.reference, first=first, skip_invalid=skip_invalid)
        else:
            ref = Samples(ref_cols["prediction"], ref_cols["confidence"])
        return ref, win

    def check(self, window: int | None = None, skip_invalid: bool = False) -> DriftReport:
        """Score the window against the reference, record the check, then run the hooks of
        the levels this version entered (see `_fire_hooks`).

        The check is recorded whatever its hooks do; their outcomes are in `report.hooks`.
        A malformed sample line is an error, or with `skip_invalid` skipped and counted.
        """
        row = self._measure(window, skip_invalid)
        # The history is read (and a malformed row refused) before anything is recorded.
        recent = self.history(7, skip_invalid)
        previous = self.last_check(skip_invalid)
        if row["status"] == "active":
            row["entries"] = entries_of(Level(row["level"]), previous)
        elif previous and previous.get("entries"):
            row["entries"] = previous["entries"]  # too few samples to say it left a level
        self.store.append(self.checks, {k: v for k, v in row.items() if k != FEATURE_FIGURES})
        if row["status"] == "active":
            self._audit_entry(row, previous)
        report = self._report(row, [*recent, row])
        report.skipped_lines += recent.skipped  # (the row keeps the samples' count)
        if row["status"] == "active" and self._drift["hooks"]:
            report.hooks = self._fire_hooks(row)
        return report

    def _audit_entry(self, row: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Audit a check that entered alerting levels (`drift_level_entered`, an event out):
        once per entry across concurrent checkers (the entry's name, as for hooks, claimed
        for ENTRY_CLAIM_S)."""
        before = (previous or {}).get("entries") or {}
        entered = [lv for lv, entry in row["entries"].items() if before.get(lv) != entry]
        if not entered:
            return
        top = entered[-1]  # (alerting levels in order: the highest entered)
        key = f"drift-level/{self.model_type}/{self.model_version}/{top}/{row['entries'][top]}"
        if not self.store.claim(key, ENTRY_CLAIM_S):
            return
        with self.store.transaction() as txn:
            txn.event(
                "drift_level_entered",
                model_type=self.model_type,
                version=self.model_version,
                level=row["level"],
                entered=entered,
                score=row["score"],
            )

    def _fire_hooks(self, row: dict[str, Any]) -> list[HookOutcome]:
        """Run the hook of each level the check is at or above, once per entry into that level.

        An entry is named by the last check below the level before it (`entries_of`), so every
        checker that sees this version in the level names it alike, and `store.claim` lets one
        of them fire per `hook_cooldown_s`. A claim is taken before the hook runs: a failed
        hook is reported, not retried, and never makes another level's hook fire again.
        """
        drift = self._drift
        outcomes = []
        for level_name, entry in row["entries"].items():
            command = drift["hooks"].get(level_name)
            if not command:
                continue
            key = f"drift-hook/{self.model_type}/{self.model_version}/{level_name}/{entry}"
            if not self.store.claim(key, float(drift["hook_cooldown_s"])):
                continue
            env = {
                **os.environ,
                "MLOPS_MODEL_TYPE": self.model_type,
                "MLOPS_MODEL_VERSION": self.model_version,
                "MLOPS_DRIFT_SCORE": f"{row['score']:.6f}",
                "MLOPS_DRIFT_LEVEL": row["level"],
                "MLOPS_DRIFTED_FEATURES": ",".join((row.get("features") or {}).get("drifted", [])),
                "MLOPS_PROJECT_DIR": self.store.location,
            }
            outcome = call_hook(command, env, float(drift["hook_timeout_s"]), self.store.location)
            outcome.level = level_name
            outcomes.append(outcome)
        return outcomes

    def _report(self, row: dict[str, Any], recent: list[dict[str, Any]]) -> DriftReport:
        active = row["status"] == "active"
        score = float(row["score"] or 0.0)
        drift = self._drift
        feature_figures: dict[str, Any] = row.get(FEATURE_FIGURES) or {}
        if active:
            recommendation = RECOMMENDATIONS[row["level"]]
            if row["level"] != level_of(score, drift["thresholds"]):  # raised by an alarm
                recommendation = RAISED_BY_ALARM
            if feature_figures.get("drifted"):
                recommendation += (
                    " Input features drifted: "
                    + ", ".join(feature_figures["drifted"][:10])
                    + (" and more" if len(feature_figures["drifted"]) > 10 else "")
                    + " (the score covers prediction and confidence; feature alarms raise "
                    "the level)."
                )
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
            avg_drift_7d=_mean_score(recent),
            alert_triggered=bool(
                active
                and (
                    score > drift["thresholds"]["retrain"]
                    or fired(row.get("alarms"))
                    or feature_figures.get("drifted")
                )
            ),
            level=row["level"] or INSUFFICIENT,
            recommendation=recommendation,
            components=row["components"]
            or {"statistical": None, "performance": None, "distribution": None},
            ks_pvalue=row["ks_pvalue"],
            n_reference=row["n_reference"],
            n_window=row["n_window"],
            checked_at=row["ts"],
            skipped_lines=row.get("skipped_lines", 0),
            torn_bytes=row.get("torn_bytes", 0),
            alarms=row.get("alarms") or alarms(None, 0.0),
            features=feature_figures.get("features", {}),
            drifted_features=feature_figures.get("drifted", []),
            drifted_feature_share=feature_figures.get("drifted_share"),
            new_features=feature_figures.get("new_features", []),
            feature_alpha=feature_figures.get("alpha_per_test"),
        )

    def history(self, days: float | None = None, skip_invalid: bool = False) -> Rows:
        """Checks, oldest first; with `days`, only those of the last `days` days. A record
        that is not a check is an error naming the stream, or skipped (and counted in the
        result's `skipped`) with `skip_invalid`."""
        since = None if days is None else self.store.clock() - timedelta(days=days)
        rows = self.store.history(self.checks, since=since, skip_invalid=skip_invalid)
        return self._checks_only(rows, skip_invalid)

    def _checks_only(self, rows: list[dict[str, Any]], skip_invalid: bool) -> Rows:
        """The rows that are checks, counting as skipped the lines and records that are not."""
        good = Rows(r for r in rows if _is_check(r))
        if len(good) < len(rows) and not skip_invalid:
            raise StateError(
                f"the drift checks of {self.model_type} {self.model_version} hold "
                f"{len(rows) - len(good)} record(s) that are not checks; "
                + SKIP_INVALID.replace("remove it", "remove them")
            )
        good.skipped = skipped_of(rows) + len(rows) - len(good)
        return good

    def average(self, days: float = 7, skip_invalid: bool = False) -> float | None:
        return _mean_score(self.history(days, skip_invalid))

    def get_drift_report(
        self, window: int | None = None, skip_invalid: bool = False
    ) -> DriftReport:
        """The current figures, computed read-only: no check is recorded and no hook runs
        (`avg_drift_7d` is the mean of the recorded checks of the last 7 days)."""
        recent = self.history(7, skip_invalid)
        report = self._report(self._measure(window, skip_invalid), recent)
        report.skipped_lines += recent.skipped
        return report

    def detect_drift(self) -> float:
        """Check now (recorded, hooks run) and return the score: 0.0 while data is
        insufficient, so the seed's `if drift_score > 0.3` always works. The score does not
        show component alarms: read `alert_triggered` (or the level) of `check()` for them."""
        return self.check().current_drift_score

    def has_reference(self) -> bool:
        """A reference set in the project, or a source that declares one."""
        if self.store.count(self.reference) > 0:
            return True
        found = self.source()
        return found is not None and found.reference is not None

    def last_check(self, skip_invalid: bool = False) -> dict[str, Any] | None:
        """The latest recorded check row, if any."""
        rows = self.latest_checks(1, skip_invalid)
        return rows[-1] if rows else None

    def latest_checks(self, count: int, skip_invalid: bool = False) -> Rows:
        """The last `count` recorded checks, oldest first (with `skip_invalid`, read past
        malformed lines and records that are not checks, and counted in `skipped`)."""
        want = count
        while True:
            read = self.store.history(self.checks, limit=want, skip_invalid=skip_invalid)
            rows = self._checks_only(read, skip_invalid)
            if len(rows) >= count or len(read) < want:
                kept = Rows(rows[-count:])
                kept.skipped = rows.skipped
                return kept
            want *= 4

    def samples_since(self, row: dict[str, Any]) -> bool:
        """Whether samples arrived (or the reference changed) after the check `row`: its
        score no longer describes the window."""
        return row.get("production_end") != self.store.position(self.production) or row.get(
            "reference_end"
        ) != self.store.position(self.reference)


def _is_check(row: dict[str, Any]) -> bool:
    """A recorded check: a status, a level, a numeric score and a time with a zone."""
    from .timeutil import parse_ts

    score = row.get("score")
    if not isinstance(row.get("status"), str) or not (
        score is None or (type(score) in (int, float) and math.isfinite(score))
    ):
        return False
    try:
        parse_ts(row.get("ts"))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


def _mean_score(rows: list[dict[str, Any]]) -> float | None:
    scores = [float(r["score"]) for r in rows if r["status"] == "active"]
    return sum(scores) / len(scores) if scores else None


# An entry into a level is audited once: its claim outlives any checker that could see it.
ENTRY_CLAIM_S = 10 * 365 * 86400.0


def entries_of(level: Level, previous: dict[str, Any] | None) -> dict[str, str]:
    """For each alerting level at or below `level`, the name of this version's entry into it.

    A level the previous check was also in keeps that check's entry; otherwise this check
    enters it, and the entry is named after the previous check (a digest of its row), which
    every concurrent checker reads alike.
    """
    before = previous.get("entries") or {} if previous else {}
    if previous is None:
        fresh = "start"
    else:
        doc = {k: v for k, v in previous.items() if k != "entries"}
        fresh = hashlib.sha256(repr(sorted(doc.items())).encode()).hexdigest()[:16]
    out = {}
    for lv in Level.alerting():
        if level >= lv:
            out[lv.value] = str(before.get(lv.value) or fresh)
    return out


class DriftMonitor:
    """The drift detectors of a project, and checks across the versions it monitors."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._detectors: dict[tuple[str, str], DriftDetector] = {}

    def detector(self, model_type: str, version: str) -> DriftDetector:
        """The drift detector of one model version (one object per version); `3.2.0` names
        the registered `v3.2.0`, so its samples never split across two spellings."""
        model = self.store.snapshot().models.get(model_type)
        if model is not None and version in model.versions:
            detector = self._detectors.get((model_type, version))
            if detector is not None:  # per request: no other work
                return detector
        else:  # another spelling, or registered since the snapshot: read the registry fresh
            model = self.store.read().models.get(model_type)
            if model is not None and version not in model.versions:
                version = model.same_as(version) or version
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

    def monitored(self) -> list[tuple[str, str]]:
        """The versions drift is watched on: those serving traffic (the champion, the arms
        of running tests) and those marked monitored; never a deprecated one."""
        state = self.store.read()
        serving = {
            (t.model_type, v)
            for t in state.running_tests().values()
            for v in (t.control_version, t.treatment_version)
        }
        out = []
        for model_type, model in sorted(state.models.items()):
            for version in model.sorted_versions():
                rec = model.versions[version]
                if rec.deprecated:
                    continue
                if rec.monitored or version == model.champion or (model_type, version) in serving:
                    out.append((model_type, version))
        return out

    def without_reference(self) -> list[tuple[str, str]]:
        """Monitored versions that `check_all` cannot check: they have no reference set yet."""
        return [(t, v) for t, v in self.monitored() if not self.detector(t, v).has_reference()]

    def check_all(self, window: int | None = None, skip_invalid: bool = False) -> list[DriftReport]:
        """Check every monitored version that has a reference set. A hook's failure is in its
        version's report; it never stops the other checks."""
        detectors = [self.detector(t, v) for t, v in self.monitored()]
        return [d.check(window, skip_invalid) for d in detectors if d.has_reference()]

    def set_monitored(self, model_type: str, version: str, on: bool = True) -> bool:
        """Mark a version monitored (checked by `--all` and exported even when it serves no
        traffic), or unmark it; returns the new flag. Audited as `monitored`/`unmonitored`."""
        with self.store.transaction() as txn:
            rec = txn.state.version(model_type, version)
            if on and rec.deprecated:
                raise ConflictError(
                    f"{model_type} {version} is deprecated: deprecated versions are not monitored"
                )
            if rec.monitored != on:
                rec.monitored = on
                txn.event(
                    "monitored" if on else "unmonitored",
                    model_type=model_type,
                    version=version,
                )
        return on


def parse_level(value: str | None) -> Level | None:
    """A `--fail-on` level: monitor, retrain or critical."""
    if value is None:
        return None
    if value not in [lv.value for lv in Level.alerting()]:
        raise ValidationError(f"--fail-on takes monitor, retrain or critical, not {value!r}")
    return Level(value)


def gate(reports: Iterable[DriftReport], fail_on: Level | None) -> None:
    """The verdict of a `drift check`: GateError (exit 3) when a report is at `fail_on` or
    above, whatever the hooks did; else HookError (exit 1) when any hook failed."""
    reports = list(reports)
    if fail_on is not None:
        worst = [r for r in reports if r.active and Level(r.level) >= fail_on]
        if worst:
            names = ", ".join(f"{r.model_type} {r.model_version} ({r.level})" for r in worst)
            raise GateError(f"drift at or above {fail_on.value}: {names}")
    failed = [(r, h) for r in reports for h in r.hooks_failed]
    if failed:
        names = ", ".join(
            f"{r.model_type} {r.model_version} {h.level} "
            + ("timed out (drift.hook_timeout_s)" if h.timed_out else f"exit code {h.exit_code}")
            for r, h in failed
        )
        raise HookError(f"drift hooks failed (the checks were recorded): {names}")


def call_hook(command: str, env: dict[str, str], timeout_s: float, location: str) -> HookOutcome:
    """Run one hook and say what it did (the one place that calls the hook runner: one overall
    deadline whatever its children do, the output's tail decoded with replacement)."""
    from .hooks import run_hook as run_bounded_hook

    cwd = Path(location) if os.path.isdir(location) else None
    ran = run_bounded_hook(command, env, timeout_s, cwd=cwd)
    return HookOutcome(
        level=env.get("MLOPS_DRIFT_LEVEL", ""),
        ok=ran.ok,
        exit_code=ran.returncode if ran.command_ran else 127,
        timed_out=ran.timed_out,
        output=ran.output[-OUTPUT_TAIL:],
    )
