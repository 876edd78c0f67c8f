"""A short Markdown summary for $GITHUB_STEP_SUMMARY, when a CI runner sets it."""

from __future__ import annotations

import os
from typing import Any

from .common import figure


def write_step_summary(kind: str, result: Any) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    lines = ab_markdown(result) if kind == "ab" else drift_markdown(result)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")
    except OSError:
        pass  # a summary is a courtesy; the command's own output already says everything


def ab_markdown(e: Any) -> list[str]:
    m = e.metrics
    lines = [
        f"### A/B test `{e.test}`: **{e.decision}**",
        "",
        e.recommendation,
        "",
        "| arm | version | requests | error rate | avg confidence |",
        "|---|---|---|---|---|",
    ]
    for arm in ("control", "treatment"):
        a = m[arm]
        lines.append(
            f"| {arm} | {a['version']} | {a['requests']} | {figure(a['error_rate'], '.4f')} | "
            f"{figure(a['avg_confidence'], '.4f')} |"
        )
    lines += ["", *[f"- {r}" for r in e.reasons]]
    return lines


def drift_markdown(reports: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Drift check",
        "",
        "| model | version | status | score | level |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        score = r["current_drift_score"]
        lines.append(
            f"| {r['model_type']} | {r['model_version']} | {r['status']} | "
            f"{'-' if score is None else f'{score:.3f}'} | {r['level']} |"
        )
    return lines
