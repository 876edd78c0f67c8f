"""One exception hierarchy: every domain failure is an MlopsError that knows its exit code."""

from __future__ import annotations


class MlopsError(Exception):
    """A failure the user can act on: printed as one `error:` line, exit code 1.

    The message names what the Python caller passes (`force=True`, `treatment_traffic_pct`);
    `cli` maps each such spelling in it to the command line's (`--force`, `--traffic`), and
    `for_cli()` is the message as the CLI prints it. `field`: the argument a bad value was
    given for, if one was.
    """

    exit_code = 1

    def __init__(
        self, message: str = "", *, cli: dict[str, str] | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.cli = dict(cli or {})
        self.field = field

    def for_cli(self) -> str:
        text = str(self)
        for python, option in self.cli.items():
            text = text.replace(python, option)
        return text

    @property
    def type(self) -> str:
        return type(self).__name__


class ProjectNotFoundError(MlopsError):
    """No registry.yaml where the project directory was looked for."""


# How a malformed log line can be got past, said where one is found: only the commands that
# compute from a log's lines take the flag (the library's calls take skip_invalid=True).
SKIP_INVALID = (
    "fix or remove it, or skip such lines with --skip-invalid "
    "(ab evaluate, drift check, drift report)"
)


class StateError(MlopsError):
    """A state file (registry.yaml, a log) is corrupt, of an unknown schema, or of a wrong type."""


class ValidationError(MlopsError):
    """An input value is out of range, malformed, or missing."""


class NotFoundError(MlopsError):
    """An unknown model type, version, A/B test or setting."""


class ConflictError(MlopsError):
    """The request contradicts the current state (duplicate, running test, deprecated version)."""


class BatchConflictError(ConflictError):
    """A batch id already recorded other content: a retry must start with exactly the lines
    recorded under it, and a completed batch id takes only the same batch again."""

    def __init__(
        self, batch_id: str, lines: int, sha256: str, given: int, given_sha256: str, done: bool
    ) -> None:
        what = "a complete batch" if done else "the start of an interrupted batch"
        start = f", its first {lines} with sha256 {given_sha256[:16]}" if given_sha256 else ""
        super().__init__(
            f"batch id {batch_id} holds other content: {what}, {lines} line(s) with sha256 "
            f"{sha256[:16]}; this batch has {given} line(s){start}; nothing recorded. A retry "
            "must send the same lines; other data needs a new batch id"
        )
        self.batch_id, self.lines, self.given, self.done = batch_id, lines, given, done


class LockTimeoutError(MlopsError):
    """A lock could not be taken within `lock_timeout_s`."""


class HookError(MlopsError):
    """A drift hook failed or timed out."""


class GateError(MlopsError):
    """A `--fail-on` gate tripped: exit code 3."""

    exit_code = 3


class MissingExtraError(MlopsError):
    """An optional dependency the location needs is not installed (psycopg for a URL)."""


class ServiceError(MlopsError):
    """An outside service (a Pushgateway) could not be reached or refused the request."""


class OutputError(MlopsError):
    """The command's output could not be written (a full disk); what it did stands."""


class Terminated(BaseException):
    """SIGTERM arrived: the console script's handler raises it, so the command stops through
    every cleanup (a batch cut back, a transaction undone) as on Ctrl-C; exit status 143."""


class BufferFullError(ServiceError):
    """A PostgreSQL store's process holds as many unwritten records as it may (the server has
    been away): the record was not kept."""
