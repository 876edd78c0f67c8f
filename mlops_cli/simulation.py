"""Decision-quality simulation: how often the decision rules promote or roll back, and when.

Synthetic tests with known truth (fixed seeds) are evaluated at regular looks through the very
`decide` function `mlops ab evaluate` uses, so a configuration's false-positive rate and power
can be checked before it is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .decision import decide
from .moments import Moments


@dataclass
class Scenario:
    """True arm behaviour: error rates and mean confidences (confidence sd `conf_sd`)."""

    control_error: float = 0.02
    treatment_error: float = 0.02
    control_conf: float = 0.80
    treatment_conf: float = 0.80
    conf_sd: float = 0.10


@dataclass
class RunOutcome:
    decision: str  # the first promote/rollback reached, else "continue"
    requests: int  # requests seen when it was reached (or in all)
    cause: str | None = None  # a rollback's cause: harm or futility


def simulate(
    config: dict[str, Any],
    scenario: Scenario,
    requests: int,
    looks: list[int],
    runs: int,
    seed: int = 0,
) -> list[RunOutcome]:
    """Evaluate each run at the given request counts; stop a run at its first action."""
    import numpy as np

    rng = np.random.default_rng(seed)
    share = config["treatment_traffic_pct"] / 100
    outcomes = []
    for _ in range(runs):
        treated = rng.random(requests) < share
        mean = np.where(treated, scenario.treatment_conf, scenario.control_conf)
        conf = np.clip(rng.normal(mean, scenario.conf_sd), 0.0, 1.0)
        err_p = np.where(treated, scenario.treatment_error, scenario.control_error)
        err = rng.random(requests) < err_p
        ms = rng.normal(100.0, 10.0, requests)
        # cumulative sufficient statistics per arm at every look
        cum: dict[str, dict[str, Any]] = {}
        for arm, mask in (("control", ~treated), ("treatment", treated)):
            cum[arm] = {
                "n": np.cumsum(mask),
                "errors": np.cumsum(err & mask),
                "cs": np.cumsum(np.where(mask, conf, 0.0)),
                "css": np.cumsum(np.where(mask, conf * conf, 0.0)),
                "ts": np.cumsum(np.where(mask, ms, 0.0)),
                "tss": np.cumsum(np.where(mask, ms * ms, 0.0)),
            }
        outcome = RunOutcome("continue", requests)
        for look in looks:
            i = look - 1
            arms = {
                arm: Moments(
                    int(c["n"][i]),
                    int(c["errors"][i]),
                    float(c["cs"][i]),
                    float(c["css"][i]),
                    float(c["ts"][i]),
                    float(c["tss"][i]),
                )
                for arm, c in cum.items()
            }
            result = decide(
                "sim",
                config,
                arms["control"],
                arms["treatment"],
                days_elapsed=config["duration_days"],
            )
            if result.decision != "continue":
                outcome = RunOutcome(result.decision, look, result.rollback_cause)
                break
        outcomes.append(outcome)
    return outcomes


def base_config(**overrides: Any) -> dict[str, Any]:
    """The default ABTestConfig values as `decide` takes them (duration treated as met)."""
    from .schema import DEFAULT_SETTINGS

    config: dict[str, Any] = dict(DEFAULT_SETTINGS["ab"]["defaults"])
    config.update(control_version="control", treatment_version="treatment")
    config.update(overrides)
    return config


def share(
    outcomes: list[RunOutcome], decision: str, by: int | None = None, cause: str | None = None
) -> float:
    """The share of runs that reached `decision` (of `cause`, for a rollback) by `by` requests."""
    hits = [
        o
        for o in outcomes
        if o.decision == decision
        and (cause is None or o.cause == cause)
        and (by is None or o.requests <= by)
    ]
    return len(hits) / len(outcomes)
