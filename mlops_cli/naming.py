"""Validation of names and versions, applied before any value reaches a path."""

from __future__ import annotations

import re

from .errors import ValidationError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
# SemVer 2.0 (semver.org's recommended expression) with an optional leading "v".
SEMVER_RE = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,  # \d must not match other scripts' digits
)


def validate_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a safe name (model type, A/B test), else raise ValidationError."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None or value in (".", ".."):
        raise ValidationError(
            f"invalid {what} {value!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


def validate_version(value: str) -> str:
    """Return `value` if it is a SemVer 2.0 version with an optional leading `v`."""
    if not isinstance(value, str) or len(value) > 128 or SEMVER_RE.fullmatch(value) is None:
        raise ValidationError(f"invalid version {value!r}: use SemVer such as v2.1.0 or 1.0.0-rc.1")
    return value


def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key giving SemVer precedence (a pre-release sorts before its release)."""
    match = SEMVER_RE.fullmatch(version)
    if match is None:
        return (0, 0, 0, 0, ())
    major, minor, patch, pre = int(match[1]), int(match[2]), int(match[3]), match[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)
