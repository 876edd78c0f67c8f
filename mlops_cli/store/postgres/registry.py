"""The registry as rows: one statement reads the document, a diff writes what changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Json

from ...errors import (
    StateError,
)
from ...schema import SCHEMA_VERSION
from ...state import AB_CONFIG_FIELDS, TAIL_FIELDS
from .rows import dumps

_VERSION_COLS = (
    "model_path",
    "config",
    "traffic_percentage",
    "registered_at",
    "description",
    "tags",
    "sha256",
    "size_bytes",
    "deprecated",
    "monitored",
    "drift_source",
)
TEST_COLS = (
    "model_type",
    "control_version",
    "treatment_version",
    *AB_CONFIG_FIELDS,
    *TAIL_FIELDS,
    "status",
    "started_at",
    "finalized_at",
    "end_reason",
    "source",
    "ramp",
)
_FLOATS = {
    "traffic_percentage",
    "treatment_traffic_pct",
    "duration_days",
    "max_error_rate_increase",
    "min_confidence_improvement",
    "alpha",
    "max_confidence_drop",
    "max_latency_increase_ms",
    "max_tail_latency_increase",
    "tail_latency_ms",
    "max_latency_increase",
}

# One statement, so one snapshot: the whole registry as JSON arrays in insertion order.
READ_SQL = f"""
SELECT (SELECT doc FROM settings WHERE id = 1),
  (SELECT coalesce(json_agg(json_build_array(name, champion) ORDER BY ord), '[]')
     FROM model_types),
  (SELECT coalesce(json_agg(json_build_array(model_type, version, {", ".join(_VERSION_COLS)})
     ORDER BY ord), '[]') FROM versions),
  (SELECT coalesce(json_agg(json_build_array(model_type, version) ORDER BY model_type,
     position), '[]') FROM champion_history),
  (SELECT coalesce(json_agg(json_build_array(name, {", ".join(TEST_COLS)}) ORDER BY ord),
     '[]') FROM ab_tests WHERE status = 'running')
"""
# The index: settings, the model types' names and the running tests (a command on one type
# then reads that type alone: TYPE_SQL).
INDEX_SQL = f"""
SELECT (SELECT doc FROM settings WHERE id = 1),
  (SELECT coalesce(json_agg(json_build_array(name, xmin::text) ORDER BY ord), '[]')
     FROM model_types),
  (SELECT coalesce(json_agg(json_build_array(name, {", ".join(TEST_COLS)}) ORDER BY ord),
     '[]') FROM ab_tests WHERE status = 'running'),
  (SELECT coalesce(json_object_agg(id, json_build_object('url', url, 'events', events,
     'model_type', model_type, 'created_at', created_at, 'after', after)), '{{}}')
     FROM webhooks),
  (SELECT coalesce(max(n), 0) FROM outbox)
"""
# One model type, in one statement (one snapshot): its row's version (xmin: every change of
# the type updates its row, write_diff) and revision, its champion, its versions in insertion
# order (the versions_type_ord index) each ending with its `ord`, its champion history, its
# aliases. DELTA_SQL is the same with only the versions stamped after revision %(rev)s, and the
# count of all (a version removed since is seen as a count that does not add up).
_TYPE_HEAD = "SELECT json_build_array(xmin::text, champion, rev) FROM model_types"
_TYPE_TAIL = """(SELECT coalesce(json_agg(version ORDER BY position), '[]') FROM champion_history
     WHERE model_type = %(name)s),
  (SELECT coalesce(json_object_agg(alias, version), '{}') FROM aliases
     WHERE model_type = %(name)s)"""
TYPE_SQL = f"""
SELECT ({_TYPE_HEAD} WHERE name = %(name)s),
  (SELECT coalesce(json_agg(json_build_array(version, {", ".join(_VERSION_COLS)}, ord)
     ORDER BY ord), '[]') FROM versions WHERE model_type = %(name)s),
  {_TYPE_TAIL}
"""
DELTA_SQL = f"""
SELECT ({_TYPE_HEAD} WHERE name = %(name)s),
  (SELECT coalesce(json_agg(json_build_array(version, {", ".join(_VERSION_COLS)}, ord)
     ORDER BY ord), '[]') FROM versions WHERE model_type = %(name)s AND rev > %(rev)s),
  {_TYPE_TAIL},
  (SELECT count(*) FROM versions WHERE model_type = %(name)s)
"""
# The archive: finalized tests are the rows of ab_tests whose status is not running.
ARCHIVED_SQL = f"SELECT name, {', '.join(TEST_COLS)} FROM ab_tests WHERE status <> 'running'"


def typed(cols: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    # json_build_array writes 100.0 as 100: give float columns their type back.
    return {
        c: float(v) if c in _FLOATS and v is not None else v
        for c, v in zip(cols, values, strict=False)
    }


def registry_doc(row: Sequence[Any]) -> dict[str, Any]:
    settings, types, versions, history, tests = row
    if settings is None:
        raise StateError("the store holds no registry: run `mlops -C URL init` first")
    models: dict[str, Any] = {
        name: {"champion": champion, "champion_history": [], "versions": {}}
        for name, champion in types
    }
    for model_type, version, *values in versions:
        models[model_type]["versions"][version] = typed(_VERSION_COLS, values)
    for model_type, version in history:
        models[model_type]["champion_history"].append(version)
    ab_tests = {name: typed(TEST_COLS, values) for name, *values in tests}
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": settings,
        "models": models,
        "ab_tests": ab_tests,
        "committed": {},
    }


def index_doc(row: Sequence[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The registry document without its model types, and the types' names with their rows'
    versions (xmin). (The endpoints and the outbox's count: `row[3:]`.)"""
    settings, types, tests = row[:3]
    if settings is None:
        raise StateError("the store holds no registry: run `mlops -C URL init` first")
    ab_tests = {name: typed(TEST_COLS, values) for name, *values in tests}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "settings": settings,
        "models": {},
        "ab_tests": ab_tests,
        "committed": {},
    }
    return doc, {name: xmin for name, xmin in types}


def version_record(values: Sequence[Any]) -> dict[str, Any]:
    """A version's record from its column values (TYPE_SQL's order)."""
    return typed(_VERSION_COLS, values)


def test_params(test: dict[str, Any]) -> list[Any]:
    """A test's column values (its harm tolerances as jsonb)."""
    return [
        Json(test[c], dumps)
        if c == "harm_tolerance" or (c in ("source", "ramp") and test.get(c) is not None)
        else test.get(c)
        for c in TEST_COLS
    ]


def _version_params(model_type: str, version: str, rec: dict[str, Any]) -> list[Any]:
    values = [
        Json(rec[c], dumps)
        if c in ("config", "tags") or (c == "drift_source" and rec.get(c) is not None)
        else rec.get(c)
        for c in _VERSION_COLS
    ]
    return [model_type, version, *values]


def _columns(rec: dict[str, Any]) -> tuple[Any, ...]:
    """A version's column values: a key a document leaves out (`drift_source` when unset) is
    the column's NULL, as validation writes it."""
    return tuple(rec.get(c) for c in _VERSION_COLS)


def _same_type(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a model type's rows would be written unchanged (so its row keeps its xmin and
    revision, and readers holding it read nothing again)."""
    pointers = ("champion", "champion_history")
    return (
        all(old.get(k) == new.get(k) for k in pointers)
        and (old.get("aliases") or {}) == (new.get("aliases") or {})
        and old["versions"].keys() == new["versions"].keys()
        and all(_columns(rec) == _columns(new["versions"][v]) for v, rec in old["versions"].items())
    )


def write_diff(cur: psycopg.Cursor[Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """Write the rows of the registry that changed between two documents."""
    if before["settings"] != after["settings"]:
        cur.execute(
            "UPDATE settings SET doc = %s, updated_at = now() WHERE id = 1",
            [Json(after["settings"], dumps)],
        )
    old_models, new_models = before["models"], after["models"]
    for name in old_models.keys() - new_models.keys():
        cur.execute("DELETE FROM model_types WHERE name = %s", [name])
    insert_version = (
        f"INSERT INTO versions (model_type, version, {', '.join(_VERSION_COLS)}, rev) "
        f"VALUES ({', '.join(['%s'] * (3 + len(_VERSION_COLS)))})"
    )
    update_version = (
        f"UPDATE versions SET {', '.join(f'{c} = %s' for c in _VERSION_COLS)}, rev = %s "
        "WHERE model_type = %s AND version = %s"
    )
    rev: int | None = None
    for name, model in new_models.items():
        old = old_models.get(name)
        if old is not None and _same_type(old, model):
            continue
        if rev is None:  # the change's revision (settings is locked: numbers follow commits)
            found = cur.execute("UPDATE settings SET rev = rev + 1 WHERE id = 1 RETURNING rev")
            rev = int(found.fetchone()[0])  # type: ignore[index]
        if old is None:
            cur.execute(
                "INSERT INTO model_types (name, champion, rev) VALUES (%s, %s, %s)",
                [name, model["champion"], rev],
            )
            old = {"champion": model["champion"], "champion_history": [], "versions": {}}
        else:  # (also when only its versions changed: the row's xmin marks the type changed)
            cur.execute(
                "UPDATE model_types SET champion = %s, rev = %s WHERE name = %s",
                [model["champion"], rev, name],
            )
        for version in old["versions"].keys() - model["versions"].keys():
            cur.execute(
                "DELETE FROM versions WHERE model_type = %s AND version = %s", [name, version]
            )
        for version, rec in model["versions"].items():
            if version not in old["versions"]:
                cur.execute(insert_version, [*_version_params(name, version, rec), rev])
            elif _columns(old["versions"][version]) != _columns(rec):
                params = _version_params(name, version, rec)
                cur.execute(update_version, [*params[2:], rev, name, version])
        old_aliases, aliases = old.get("aliases") or {}, model.get("aliases") or {}
        for alias in old_aliases.keys() - aliases.keys():
            cur.execute(
                "DELETE FROM aliases WHERE model_type = %s AND alias = %s", [name, alias]
            )
        for alias, version in aliases.items():
            if old_aliases.get(alias) != version:
                cur.execute(
                    "INSERT INTO aliases (model_type, alias, version) VALUES (%s, %s, %s) "
                    "ON CONFLICT (model_type, alias) DO UPDATE SET version = excluded.version",
                    [name, alias, version],
                )
        if old["champion_history"] != model["champion_history"]:
            cur.execute("DELETE FROM champion_history WHERE model_type = %s", [name])
            if model["champion_history"]:
                cur.executemany(
                    "INSERT INTO champion_history (model_type, position, version) "
                    "VALUES (%s, %s, %s)",
                    [(name, i, v) for i, v in enumerate(model["champion_history"])],
                )
    old_tests, new_tests = before["ab_tests"], after["ab_tests"]
    for name in old_tests.keys() - new_tests.keys():
        cur.execute("DELETE FROM ab_tests WHERE name = %s", [name])
    for name, test in new_tests.items():
        if name not in old_tests:
            cur.execute(
                f"INSERT INTO ab_tests (name, {', '.join(TEST_COLS)}) "
                f"VALUES ({', '.join(['%s'] * (1 + len(TEST_COLS)))})",
                [name, *test_params(test)],
            )
        elif old_tests[name] != test:
            cur.execute(
                f"UPDATE ab_tests SET {', '.join(f'{c} = %s' for c in TEST_COLS)} WHERE name = %s",
                [*test_params(test), name],
            )


def archive_finished(
    cur: psycopg.Cursor[Any], before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Write the tests a change finalized (the archive is their status) and take them out of
    both documents, so the registry diff leaves their rows alone."""
    for name, test in list(after["ab_tests"].items()):
        if test["status"] == "running":
            continue
        cur.execute(
            f"INSERT INTO ab_tests (name, {', '.join(TEST_COLS)}) "
            f"VALUES ({', '.join(['%s'] * (1 + len(TEST_COLS)))}) ON CONFLICT (name) DO UPDATE "
            f"SET {', '.join(f'{c} = excluded.{c}' for c in TEST_COLS)}",
            [name, *test_params(test)],
        )
        del after["ab_tests"][name]
        before["ab_tests"].pop(name, None)
