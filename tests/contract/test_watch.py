"""The watch after a promotion on every store, end to end: a promotion, an error spike, the
rollback, its events delivered to a real receiver, and the audit log saying why."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from mlops_cli import Project

from ..webhook_receiver import receiver
from .conftest import Clock, reopen

KINDS = "promoted,watch_breached,rolled_back,watch_rolled_back"


def serve(project: Project, clock: Clock, version: str, n: int, error: float, seed: int) -> None:
    """n requests of `version` over an hour."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        clock.now += timedelta(seconds=3600 / n)
        project.registry.update_metrics(
            "gnn", version, float(rng.normal(100, 10)), 0.8, bool(rng.random() < error)
        )
    project.flush()


def test_a_spike_after_a_promotion_is_rolled_back_and_its_events_go_out(
    project: Project, clock: Clock
) -> None:
    project.set_setting("watch.rollback", "true")
    project.set_setting("webhooks.drain_s", "0")  # delivered below, when the test says
    with receiver() as got:
        project.webhooks.add(got.url, KINDS, model_type="gnn")
        serve(project, clock, "1.0.0", 2000, 0.02, seed=1)
        project.registry.promote_to_champion("gnn", "1.1.0")
        serve(project, clock, "1.1.0", 2000, 0.10, seed=2)
        (result,) = reopen(project, clock).watch.check()  # a cron job's own process
        assert (result.status, result.breach, result.rolled_back) == ("open", True, True)
        assert result.requests == {"previous": 2000, "champion": 2000}
        report = project.webhooks.deliver(for_s=0)
    assert (report.delivered, report.failed, report.pending) == (4, 0, 0)
    assert project.registry.get_champion("gnn").version == "1.0.0"
    docs = [r.doc for r in got.accepted]
    assert [d["event"] for d in docs] == KINDS.split(",")
    assert [d["seq"] for d in docs] == sorted(d["seq"] for d in docs)
    why = [e for e in project.registry.history("gnn") if e["event"] == "rolled_back"][-1]
    assert why["reason"].startswith("watch after promotion: error rate up +0.0")
    assert "wholly above 0" in why["reason"]
    assert docs[2]["data"]["reason"] == why["reason"]  # the event says why, as the log does
    assert got.duplicates == 0
