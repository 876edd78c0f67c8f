"""stdin for batches (`--file -`), read so that SIGTERM and SIGINT end the command at once."""

from __future__ import annotations

import io
import os
import sys
from typing import Any, BinaryIO

# How long a read of stdin waits before Python looks at the signals again.
STDIN_POLL_S = 0.2


class _InterruptibleInput(io.RawIOBase):
    """stdin as raw reads that a signal always ends: each read first waits in `select` with
    a timeout, so Python runs a pending SIGTERM/SIGINT handler within STDIN_POLL_S even when
    the signal came just before the read entered the kernel, or while a buffered read was
    between two reads (a blocking read would then wait for data that may never come)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        import select

        while not select.select([self.fd], [], [], STDIN_POLL_S)[0]:
            pass  # (back in Python: a signal that arrived meanwhile is handled here)
        data = os.read(self.fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)


def stdin_stream() -> BinaryIO:
    """stdin as a binary stream that SIGTERM and SIGINT interrupt at once (see above); a
    stdin without a descriptor (a test runner's) as it is."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdin.buffer
    return io.BufferedReader(_InterruptibleInput(fd))
