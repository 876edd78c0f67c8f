"""The `mlops` console script: `--version` answers before anything heavy is imported."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from . import __version__

        sys.stdout.write(f"mlops {__version__}\n")
        return
    from .cli import main as cli_main

    cli_main()
