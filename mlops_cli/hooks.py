"""Run a drift hook with one overall deadline and bounded, safely decoded output.

The hook runs through the shell in a new session (its own process group). Its stdout and
stderr go to an unlinked temp file, not a pipe, so a child that keeps the output open (`setsid
sleep 20 &`, a daemon) never holds us: we wait for the shell's own exit only. At the deadline
the whole process group gets SIGTERM, then SIGKILL after a short grace. A background job the
hook starts and leaves running (`nohup retrain &`) is not a timeout and is not killed; a child
that left the group with setsid is out of reach and survives (documented, not defended).

The command text often holds a token: HookOutcome never carries it, so its `to_dict()` is safe
to put in the audit log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT_TAIL_CHARS = 2_000
KILL_GRACE_S = 1.0
"""Between SIGTERM and SIGKILL of the hook's process group."""


@dataclass(frozen=True)
class HookOutcome:
    """What a hook run did. Holds no command text (it may hold a secret)."""

    command_ran: bool
    returncode: int | None
    timed_out: bool
    duration_s: float
    output: str
    """The last OUTPUT_TAIL_CHARS characters of stdout and stderr together."""

    @property
    def ok(self) -> bool:
        return self.command_ran and not self.timed_out and self.returncode == 0

    def to_dict(self) -> dict[str, Any]:
        """The outcome for JSON and the audit log; the command is left out on purpose."""
        return {
            "ok": self.ok,
            "command_ran": self.command_ran,
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "duration_s": round(self.duration_s, 3),
            "output": self.output,
        }

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]


def read_tail(fd: int, chars: int = OUTPUT_TAIL_CHARS) -> str:
    """The last `chars` characters of the file at `fd`, decoded as UTF-8 with replacement.

    Reads at most 4 bytes a character from the end, whatever the file's size.
    """
    size = os.fstat(fd).st_size
    want = min(size, 4 * chars)
    data = os.pread(fd, want, size - want) if want else b""
    return data.decode("utf-8", errors="replace")[-chars:]


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_hook(
    command: str,
    env: dict[str, str],
    timeout_s: float,
    cwd: Path | None = None,
    tail_chars: int = OUTPUT_TAIL_CHARS,
) -> HookOutcome:
    """Run `command` with `sh -c` and exactly `env`, within `timeout_s` seconds overall.

    Returns when the shell exits (background jobs it leaves are not waited for), or at the
    deadline after killing its process group (then `timed_out`; total time about timeout_s
    + KILL_GRACE_S at most). A command that cannot start at all (missing cwd, no shell) gives
    `command_ran` False with the reason in `output`. Never raises for what the hook does.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="mlops-hook-") as out:
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return HookOutcome(
                False, None, False, time.monotonic() - started, f"could not start: {exc}"
            )
        timed_out = False
        try:
            returncode: int | None = proc.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE_S)
            _kill_group(proc.pid, signal.SIGKILL)  # also children that ignored SIGTERM
            proc.wait()
            returncode = None
        except BaseException:  # interrupted (Ctrl-C): leave no hook running behind us
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        duration = time.monotonic() - started
        output = read_tail(out.fileno(), tail_chars)
    return HookOutcome(True, returncode, timed_out, duration, output)
