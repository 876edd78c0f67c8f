"""One exception hierarchy: every domain failure is an MlopsError that knows its exit code."""

from __future__ import annotations


class MlopsError(Exception):
    """A failure the user can act on: printed as one `error:` line, exit code 1."""

    exit_code = 1

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


class Terminated(BaseException):
    """SIGTERM arrived: the console script's handler raises it, so the command stops through
    every cleanup (a batch cut back, a transaction undone) as on Ctrl-C; exit status 143."""


class BufferFullError(ServiceError):
    """A PostgreSQL store's process holds as many unwritten records as it may (the server has
    been away): the record was not kept."""
