"""The `mlops` console script: `--version` answers before anything heavy is imported."""

from __future__ import annotations

import sys

from .errors import Terminated


def main() -> None:
    _closed_streams_to_devnull()
    if sys.argv[1:] == ["--version"]:
        from . import __version__

        sys.stdout.write(f"mlops {__version__}\n")
        return
    import gc
    import signal

    # SIGTERM (a cancelled CI job, `kill`) ends the command like Ctrl-C does, through every
    # cleanup on the way out: a batch being appended is cut back, a transaction undone,
    # PostgreSQL's buffered records flushed. Exit status 143, as a shell reports it.
    signal.signal(signal.SIGTERM, _terminated)
    # Start-up (typer, the package) allocates many objects that live to the end and no
    # garbage cycles: the collector's passes over them are wasted. It is enabled again before
    # the command runs, and at exit everything is frozen so the last collection skips it.
    gc.disable()
    try:
        from .cli import main as cli_main

        cli_main()
    except Terminated:  # before or after a command's own error funnel
        raise SystemExit(143) from None
    finally:
        gc.freeze()


def _closed_streams_to_devnull() -> None:
    """Started with stdout or stderr closed (`mlops ab list >&-`), Python has None for it:
    what would be written there goes nowhere, and the command still runs and exits as ever."""
    import os

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - kept open until exit


def _terminated(signum: int, _frame: object) -> None:
    raise Terminated
