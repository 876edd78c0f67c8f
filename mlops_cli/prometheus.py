"""Prometheus exposition of the registry, A/B tests and drift scores (textfile or Pushgateway)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import jsonl
from .errors import ValidationError

if TYPE_CHECKING:
    from .project import Project

LEVEL_VALUES = {"ok": 0, "monitor": 1, "retrain": 2, "critical": 3}


class ProjectCollector:
    """A prometheus-client collector that reads the project's state at collection time."""

    def __init__(self, project: Project) -> None:
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
        for v in self.project.registry.list_versions():
            key = [v.model_type, v.version]
            if v.is_champion:
                champion.add_metric(key, 1)
            requests.add_metric(key, v.requests)
            error_rate.add_metric(key, v.error_rate)
            confidence.add_metric(key, v.avg_confidence)
            latency.add_metric(key, v.avg_inference_time_ms / 1000.0)
            detector = self.project.drift_detector(v.model_type, v.version)
            last = jsonl.tail(detector.checks_path, 1).records
            if last and last[0].get("status") == "active":
                score.add_metric(key, last[0]["score"])
                level.add_metric(key, LEVEL_VALUES[last[0]["level"]])
        yield from (champion, requests, error_rate, confidence, latency, score, level)

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
            summary = self.project.ab._summary(name)
            for variant in ("control", "treatment"):
                arm = summary.arm(variant)
                ab_requests.add_metric([name, variant], arm.n)
                ab_errors.add_metric([name, variant], arm.error_rate)
                ab_conf.add_metric([name, variant], arm.avg_confidence)
        yield from (ab_requests, ab_errors, ab_conf)


def exposition(project: Project) -> bytes:
    """The text exposition format of every series."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProjectCollector(project))
    return bytes(generate_latest(registry))


def write_textfile(project: Project, path: Path) -> int:
    """Write the exposition atomically (for node_exporter's textfile collector)."""
    from .project import atomic_write

    if path.suffix != ".prom":
        raise ValidationError(f"--textfile {path}: node_exporter reads only files ending in .prom")
    if not path.parent.is_dir():
        raise ValidationError(f"--textfile {path}: directory {path.parent} does not exist")
    data = exposition(project)
    atomic_write(path, data)
    return len(data)


def push(project: Project, url: str, job: str, deadline_s: float = 10.0) -> None:
    """Push every series to a Pushgateway (replacing the job's previous push).

    One overall deadline for the whole exchange and a validated URL (pushgw.push).
    """
    from . import pushgw

    pushgw.push(url, job, exposition(project), deadline_s)
