"""Work done beside this process in a forked child, for CPU-bound work that holds the GIL
(orjson's parse; a feature check's tests, numpy calls on arrays too small to release it for
long), so threads cannot share it out.

Only where a fork is safe and pays: a POSIX fork, at least two CPUs this process may run on,
and no other thread in this process (a fork copies only the calling thread, so a lock another
thread held would stay held in the child). The child runs one function, sends back the bytes
it returns through a pipe and leaves by `os._exit` (no exit handler, no buffered output of the
parent's written twice). Whatever goes wrong in the child (an exception, a signal, a short
pipe), the parent gets None and does the work itself, so the outcome, errors included, is the
same as without the child.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

_HEADER = 8  # the length of what the child sends, then the bytes themselves


def may_fork() -> bool:
    """Whether a child can work beside this process now (see the module docstring)."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # not Linux
        return (os.cpu_count() or 1) >= 2


class Child:
    """A forked child running one function; `result()` is its bytes, or None."""

    def __init__(self, work: Callable[[], bytes | memoryview]) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            code = 1
            try:
                os.close(read)
                data = work()
                with os.fdopen(write, "wb") as out:
                    out.write(len(data).to_bytes(_HEADER, "little"))
                    out.write(data)
                code = 0
            except BaseException:  # any failure: the parent does the work
                pass
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self._read = pid, read

    def result(self) -> bytes | None:
        """The child's bytes (waiting for it), or None when it did not finish its work."""
        read, self._read = self._read, -1  # the file object below owns and closes it
        try:
            with os.fdopen(read, "rb") as pipe:
                header = pipe.read(_HEADER)
                data = pipe.read()
            _pid, status = os.waitpid(self.pid, 0)
        except BaseException:  # interrupted: the child is not left running or unreaped
            self.cancel()
            raise
        self.pid = 0
        if os.waitstatus_to_exitcode(status) != 0 or len(header) != _HEADER:
            return None
        return data if len(data) == int.from_bytes(header, "little") else None

    def cancel(self) -> None:
        """Stop the child and reap it (its result, if any, is dropped)."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0
        if self._read >= 0:
            os.close(self._read)
            self._read = -1
