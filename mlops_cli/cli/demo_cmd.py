"""`mlops demo`: the end-to-end walk-through, rendered step by step."""

from __future__ import annotations

from typing import Any

import typer

from .common import Styled, console, funnel, progress_wanted, say, table


def demo(
    ctx: typer.Context,
    location: str | None = typer.Argument(
        None,
        metavar="[DIR|URL]",
        help="Where to leave the demo project: an empty directory, or a postgresql:// URL of "
        "an empty store (default: a new temporary directory).",
    ),
) -> None:
    """Run a realistic end-to-end example: registry, a week of A/B testing, drift, export."""
    from ..demo import demo_location, run_demo

    out = console()
    with funnel(ctx):
        where, files = demo_location(location)
        bar: Any = None
        try:
            for step, data in run_demo(where, files):
                if step == "ab_started" and progress_wanted():
                    from rich.progress import Progress

                    # The week's lines go through the bar's console, which keeps them above it.
                    bar = Progress(console=console(stderr=True), transient=True)
                    bar.start()
                    task = bar.add_task("A/B test week", total=7)
                render(bar.console if bar is not None else out, step, data)
                if bar is not None and step == "ab_day":
                    bar.update(task, advance=1)
                if bar is not None and step == "ab_finalized":
                    bar.stop()
                    bar = None
        finally:
            if bar is not None:
                bar.stop()


def render(out: Any, step: str, d: dict[str, Any]) -> None:
    if step == "init":
        also = f" (its files in {d['files']})" if d["files"] != d["root"] else ""
        say(("mlops demo", "bold"), f" in {d['root']}{also}", to=out)
    elif step == "registered":
        role = "champion" if d["champion"] else "candidate"
        say(f"registered gnn {d['version']} ({role})", to=out)
    elif step == "ab_started":
        say(f"started A/B test {d['test']}: v2.1.0 90% / v2.2.0 10%, at least 7 days", to=out)
    elif step == "ab_day":
        e = d["evaluation"]
        diff = e.metrics["confidence_diff"]
        why = f" ({e.reasons[0]})" if e.decision == "continue" else ""
        say(
            f"  day {d['day']}: {e.requests:5d} requests, conf "
            f"{diff['estimate']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]: ",
            (e.decision, "bold"),
            why,
            to=out,
        )
    elif step == "ab_finalized":
        say(f"finalized: gnn {d['champion']} is champion", to=out)
    elif step == "reference":
        say(f"drift reference: {d['samples']} samples for gnn {d['version']}", to=out)
    elif step == "drift_day":
        r = d["report"]
        alert: list[str | Styled] = [" ", ("ALERT", "red")] if r["alert_triggered"] else []
        hooks = "".join(f"; hook {h['level']} ran" for h in r["hooks"])
        fired = [k for k, v in (r.get("alarms") or {}).items() if v.get("alarm")]
        alarms = f" ({', '.join(fired)} alarm{'s' if len(fired) > 1 else ''})" if fired else ""
        say(
            f"  day {d['day']}: drift score {r['current_drift_score']:.3f} ({r['level']})",
            *alert,
            alarms,
            hooks,
            to=out,
        )
    elif step == "exported":
        say(f"exported Prometheus series to {d['textfile']}:", to=out)
        for line in d["lines"]:
            say(f"  {line}", to=out)
    elif step == "done":
        table(
            "Summary",
            ["", ""],
            [
                ["champion", f"gnn {d['champion']}"],
                [
                    "A/B decision",
                    f"{d['ab_decision']} after {d['ab_requests']} requests "
                    f"(confidence {d['confidence_diff']:+.3f})",
                ],
                ["drift", f"{d['drift_level']} (score {d['drift_score']:.3f})"],
                ["retrain hook", d["hook_log"] or "-"],
            ],
        )
        say("Explore the project it left behind:", to=out)
        program = invocation()
        for command in d["commands"]:
            say(f"  {program}{command.removeprefix('mlops')}", to=out)
        import shlex

        where = f"-C {shlex.quote(d['location'])}"
        say(
            f"Open the dashboard: {program} {where} ui --open  (then http://127.0.0.1:8765/), "
            f"or write it to one file: {program} {where} report --html report.html",
            to=out,
        )


def invocation() -> str:
    """How to run this mlops again: `mlops` when it is on PATH, else its path (.venv/bin/mlops)."""
    import os
    import shutil
    import sys

    here = os.path.realpath(sys.argv[0])
    found = shutil.which("mlops")
    if found and os.path.realpath(found) == here:
        return "mlops"
    relative = os.path.relpath(here)
    return relative if not relative.startswith("..") else here
