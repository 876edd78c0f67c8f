"""Batch input of the record commands (ab and drift): the file or stdin, its batch id, the
progress bar, and the notes on retried batches and torn tails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from ..batch import BatchError, file_id
from ..errors import ValidationError
from ..store.base import BatchResult
from .common import console, progress_wanted, say
from .stdin import stdin_stream

BATCH_ID_HELP = (
    "Id making a retried batch count once (default for --file PATH: the file's hash; "
    "stdin has none: never taken for a retry)."
)


def recorded_text(result: dict[str, Any]) -> str:
    """`1000`, or `0 (batch 3f2a... was already recorded: 1000 records)` on a retry."""
    done = result.get("already_recorded", 0)
    if not done:
        return str(result["recorded"])
    return f"{result['recorded']} (batch {result['batch_id']} was already recorded: {done} records)"


@contextmanager
def read_input(
    file: str, batch_id: str | None = None
) -> Iterator[tuple[BinaryIO, str | None, int]]:
    """A batch to stream: (binary stream, batch id, size in bytes or -1 if unknown).

    A file's id defaults to its content hash (computed first, streaming), so a retried step
    re-sending the same file counts once; stdin has no default id: never taken for a retry.
    """
    if file == "-":
        yield stdin_stream(), batch_id, -1
        return
    try:
        stream = open(file, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
    with stream:
        try:
            size = os.fstat(stream.fileno()).st_size
            if batch_id is None:
                batch_id = file_id(file)
        except OSError as exc:
            raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
        try:
            yield stream, batch_id, size
        except BatchError as exc:  # its lines are numbered: say in which file
            raise BatchError(f"{file}: {exc}", cli=exc.cli, field=exc.field) from None


def say_skipped(result: BatchResult) -> None:
    """On stderr (with --json too): a batch, or part of one, an earlier try had recorded."""
    if not result.already_recorded:
        return
    if result.recorded:
        say(
            f"completed batch id {result.batch_id}: {result.already_recorded} records were "
            f"already recorded by an earlier try, {result.recorded} added",
            err=True,
        )
    else:
        say(
            f"already recorded: batch id {result.batch_id} ({result.already_recorded} records);"
            " nothing added (give another --batch-id to record the same data again)",
            err=True,
        )


class batch_progress:
    """A progress bar on stderr for a large batch, when stderr is a terminal (never with --json)."""

    def __init__(self, size: int, json_output: bool) -> None:
        # size -1: unknown (stdin)
        self.enabled = not json_output and progress_wanted() and (size < 0 or size > 8 << 20)
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True, console=console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("validating", total=None)
        return lambda lines: self.bar.update(
            task, completed=lines, description=f"validated {lines:,} lines"
        )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def torn_note(log: str, size: int) -> None:
    """Say that a log's incomplete last line was left out (readers skip it, writers cut it)."""
    say(
        f"note: the last line of {log} is incomplete ({size} bytes, a write was interrupted); "
        "it was left out and the next write removes it",
        err=True,
    )
