"""Connections to the PostgreSQL store: connect, redact, database errors as MlopsErrors, the
schema version and the migrations (`migrations/NNNN_*.sql` beside this module, `upgrade`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import set_json_loads

from ...errors import (
    LockTimeoutError,
    ServiceError,
    StateError,
)

CONNECT_TIMEOUT_S = 5

# psycopg logs what it ignores while cleaning up after a failure ("error ignored terminating
# <psycopg.Copy>"); without a handler Python prints it on stderr beside the error mlops reports.
# An application that configures logging still gets these records through its own handlers.
logging.getLogger("psycopg").addHandler(logging.NullHandler())
_MIGRATION_LOCK = 0x6D6C6F7073  # "mlops": the advisory lock migrations run under


def _migrations() -> list[tuple[int, str]]:
    """The ordered SQL migrations shipped with the package: (version, sql)."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


LATEST = max(v for v, _ in _migrations())


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection with a bounded connect time; a clean ServiceError otherwise."""
    options: dict[str, Any] = {"autocommit": True, "application_name": "mlops"}
    if "connect_timeout" not in url:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        conn = psycopg.connect(url, **options)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceError(
            f"cannot connect to the PostgreSQL store {redact(url)}: {reason}"
        ) from None
    set_json_loads(orjson.loads, conn)
    return conn


def schema_version(cur: psycopg.Cursor[Any]) -> int:
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = cur.fetchone()
    if not row or not row[0]:
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def upgrade(url: str) -> tuple[int, int]:
    """Apply the migrations a database lacks, in one transaction under an advisory lock
    (`mlops db upgrade`); returns (version before, version after)."""
    conn = connect(url)
    try:
        with translated(url, "upgrading"), conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            current = schema_version(cur)
            if current > LATEST:
                raise StateError(
                    f"{redact(url)} is at store schema {current}, newer than this mlops "
                    f"({LATEST}): upgrade mlops"
                )
            for version, sql in _migrations():
                if version > current:
                    cur.execute(sql.encode())
                    cur.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
        return current, LATEST
    finally:
        conn.close()


@contextmanager
def translated(url: str, doing: str) -> Iterator[None]:
    """Database failures as MlopsErrors that say what to do."""
    try:
        yield
    except pg_errors.LockNotAvailable:
        raise LockTimeoutError(
            f"could not lock the registry in {redact(url)} while {doing} within lock_timeout_s: "
            "another mlops process holds it; retry, or raise the setting lock_timeout_s"
        ) from None
    except pg_errors.InsufficientPrivilege as exc:
        raise ServiceError(
            f"{redact(url)} refused {doing}: {exc.diag.message_primary or exc}; this role may "
            "not do that (see docs/postgresql.md, Roles)"
        ) from None
    except psycopg.OperationalError as exc:
        raise ServiceError(
            f"lost the PostgreSQL store {redact(url)} while {doing}: "
            f"{str(exc).strip() or type(exc).__name__}; nothing was committed, retry"
        ) from None
    except psycopg.Error as exc:
        raise ServiceError(f"{redact(url)} failed while {doing}: {exc}") from None
