"""Prometheus exposition of the registry, A/B tests and drift scores (textfile or Pushgateway)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from .ab_testing import ABTestManager
from .drift import DriftMonitor
from .errors import ValidationError
from .feature_drift import capped
from .records import VARIANTS
from .registry import ModelRegistry
from .state import Level
from .store.base import ab_stream, metrics_stream
from .timeutil import parse_ts


class Monitored(Protocol):
    """What the export reads: a project's registry, A/B tests and drift detectors."""

    @property
    def registry(self) -> ModelRegistry: ...

    @property
    def ab(self) -> ABTestManager: ...

    @property
    def drift(self) -> DriftMonitor: ...


class ProjectCollector:
    """A prometheus-client collector that reads the project's state at collection time."""

    def __init__(self, project: Monitored) -> None:
        self.project = project

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["model_type", "model_version"]
        champion = GaugeMetricFamily(
            "model_champion_info", "1 for the champion version of each model type", labels=labels
        )
        requests = CounterMetricFamily(
            "model_requests", "Requests recorded by update_metrics", labels=labels
        )
        error_rate = GaugeMetricFamily(
            "model_error_rate", "Share of failed requests", labels=labels
        )
        confidence = GaugeMetricFamily(
            "model_avg_confidence", "Mean prediction confidence", labels=labels
        )
        # Prometheus names carry base units (promtool rejects "_ms"): seconds, not ms.
        latency = GaugeMetricFamily(
            "model_avg_inference_time_seconds", "Mean inference time in seconds", labels=labels
        )
        score = GaugeMetricFamily("model_drift_score", "Latest drift score (0-1)", labels=labels)
        level = GaugeMetricFamily(
            "model_drift_level",
            "Latest drift level: 0 ok, 1 monitor, 2 retrain, 3 critical",
            labels=labels,
        )
        checked = GaugeMetricFamily(
            "model_drift_last_check_timestamp_seconds",
            "Unix time of the latest recorded drift check (alert when it grows old)",
            labels=labels,
        )
        alarm = GaugeMetricFamily(
            "model_drift_alarm",
            "1 when the latest drift check's component alarm fired (predictions, confidence, "
            "spread): p-value below drift.alarm_alpha and the effect at its floor or above",
            labels=[*labels, "component"],
        )
        feature_score = GaugeMetricFamily(
            "model_feature_drift_score",
            "Latest drift check's effect of an input feature over its alarm floor (1: at the "
            "floor); at most drift.max_feature_series features per version, the first by name",
            labels=[*labels, "feature"],
        )
        feature_alarm = GaugeMetricFamily(
            "model_feature_drift_alarm",
            "1 when the latest drift check's alarm of an input feature fired (drift, missing "
            "share or type change); the same features as model_feature_drift_score",
            labels=[*labels, "feature"],
        )
        drifted_share = GaugeMetricFamily(
            "model_feature_drifted_share",
            "Share of a version's input features whose alarm fired in the latest drift check",
            labels=labels,
        )
        cap = int(self.project.drift.store.read().settings.drift["max_feature_series"])
        # What a view does with a malformed line: leave it out, and say so (here, per stream).
        skipped = GaugeMetricFamily(
            "mlops_skipped_lines",
            "Malformed log lines this export left out, per stream read (fix or remove them)",
            labels=["stream"],
        )
        watched = set(self.project.drift.monitored())
        for v in self.project.registry.list_versions():
            if v.deprecated:
                continue  # a retired version neither serves nor pages
            key = [v.model_type, v.version]
            if v.is_champion:
                champion.add_metric(key, 1)
            requests.add_metric(key, v.requests)
            skipped.add_metric([metrics_stream(v.model_type, v.version)], v.skipped_lines)
            # No request, no mean (None): nothing is exported (a 0.0 would fire "confidence
            # low" on a version that never served).
            for family, value, per_unit in (
                (error_rate, v.error_rate, 1.0),
                (confidence, v.avg_confidence, 1.0),
                (latency, v.avg_inference_time_ms, 1000.0),  # ms to seconds
            ):
                if value is not None:
                    family.add_metric(key, value / per_unit)
            if (v.model_type, v.version) not in watched:
                continue
            detector = self.project.drift.detector(v.model_type, v.version)
            checks = detector.latest_checks(1, skip_invalid=True)  # export what is readable
            skipped.add_metric([detector.checks], checks.skipped)
            last = checks[-1] if checks else None
            if last:
                checked.add_metric(key, parse_ts(str(last["ts"])).timestamp())
            if last and last.get("status") == "active":
                score.add_metric(key, last["score"])
                level.add_metric(key, Level(last["level"]).rank)
                for component, figures in (last.get("alarms") or {}).items():
                    alarm.add_metric([*key, component], 1 if figures.get("alarm") else 0)
                features = last.get("features")
                if isinstance(features, dict) and isinstance(features.get("scores"), dict):
                    drifted_share.add_metric(key, float(features.get("drifted_share") or 0.0))
                    scores = features["scores"]
                    for name in capped(scores, cap):
                        value, fired = scores[name]
                        feature_score.add_metric([*key, name], float(value))
                        feature_alarm.add_metric([*key, name], int(fired))
        aliases = GaugeMetricFamily(
            "model_alias_info",
            "1 for the version each alias of a model type points at",
            labels=["model_type", "alias", "version"],
        )
        for found in self.project.registry.aliases():
            aliases.add_metric([found.model_type, found.alias, found.version], 1)
        yield from (champion, requests, error_rate, confidence, latency, score, level, checked)
        yield aliases
        yield from (alarm, feature_score, feature_alarm, drifted_share)

        ab_labels = ["test", "variant"]
        ab_requests = CounterMetricFamily(
            "ab_test_requests", "Requests recorded per A/B arm", labels=ab_labels
        )
        ab_errors = GaugeMetricFamily(
            "ab_test_error_rate", "Error rate per A/B arm", labels=ab_labels
        )
        ab_conf = GaugeMetricFamily(
            "ab_test_avg_confidence", "Mean confidence per A/B arm", labels=ab_labels
        )
        for name in self.project.ab.active_tests:
            summary = self.project.ab.requests(name, skip_invalid=True)
            skipped.add_metric([ab_stream(name)], len(summary.skipped))
            for variant in VARIANTS:
                arm = summary.arm(variant)
                ab_requests.add_metric([name, variant], arm.n)
                if arm.n:  # an arm without requests has no rate to export
                    ab_errors.add_metric([name, variant], arm.error_rate)
                    ab_conf.add_metric([name, variant], arm.avg_confidence)
        yield from (ab_requests, ab_errors, ab_conf, skipped)


def exposition(project: Monitored) -> bytes:
    """The text exposition format of every series."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProjectCollector(project))
    return bytes(generate_latest(registry))


def write_textfile(project: Monitored, path: Path) -> int:
    """Write the exposition atomically (for node_exporter's textfile collector)."""
    from .store.files import atomic_write

    if path.suffix != ".prom":
        raise ValidationError(f"--textfile {path}: node_exporter reads only files ending in .prom")
    if not path.parent.is_dir():
        raise ValidationError(f"--textfile {path}: directory {path.parent} does not exist")
    data = exposition(project)
    atomic_write(path, data)
    return len(data)


def push(project: Monitored, url: str, job: str, deadline_s: float = 10.0) -> None:
    """Push every series to a Pushgateway (replacing the job's previous push), with one
    overall deadline for the whole exchange and a validated URL (pushgw.push)."""
    from . import pushgw

    pushgw.push(url, job, exposition(project), deadline_s)
