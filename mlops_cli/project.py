"""The composition root: locate and open a project, build its store, clock and managers.

A project location is a directory (the file store) or a `postgresql://` URL (the PostgreSQL
store, imported only then). `Project.open(location, clock=...)` gives `registry`, `ab`,
`drift` and `drift_detector(type, version)`, all sharing one store and one clock. A project is
a context manager: leaving it (or `close()`) writes what a PostgreSQL project buffered.
"""

from __future__ import annotations

import copy
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .schema import parse_setting_value, validate_settings
from .state import RegistryState, Settings
from .store.base import EVENTS, Store, ab_stream, drift_stream, metrics_stream
from .store.files import REGISTRY_FILE, FileStore
from .textsafe import audit_value
from .timeutil import Clock, system_clock

if TYPE_CHECKING:
    from .ab_testing import ABTestManager
    from .drift import DriftDetector, DriftMonitor
    from .registry import ModelRegistry

Location = str | os.PathLike[str]
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: Location) -> bool:
    return str(location).startswith(URL_SCHEMES)


class Project:
    """A project: its store, its clock, and the managers working on them."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root  # model paths are relative to it (the directory, or the cwd for a URL)

    def __repr__(self) -> str:
        return f"Project({self.location!r})"

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write the records this process buffered (PostgreSQL; a directory has none)."""
        self.store.flush()

    def close(self) -> None:
        """Write what is buffered (spooled when the server cannot be reached) and release the
        store's connection; the project is not used afterwards."""
        self.store.close()

    @property
    def location(self) -> str:
        """The directory or URL the project was opened at (a URL's password hidden)."""
        if isinstance(self.store, FileStore):
            return str(self.root)
        from .store.postgres import redact

        return redact(self.store.location)

    # -- discovery ---------------------------------------------------------------------------

    @staticmethod
    def locate(path: Location | None = None, walk_up: bool = True) -> Path | str:
        """--project-dir > MLOPS_PROJECT_DIR > the nearest directory holding registry.yaml,
        walking up from the current one (as git does), else the current directory."""
        chosen = path if path is not None else os.environ.get("MLOPS_PROJECT_DIR") or None
        if chosen is not None:
            return str(chosen) if is_url(chosen) else Path(chosen).expanduser().absolute()
        here = Path.cwd()
        if walk_up:
            for directory in (here, *here.parents):
                if (directory / REGISTRY_FILE).is_file():
                    return directory
        return here

    @classmethod
    def open(cls, path: Location | None = None, clock: Clock | None = None) -> Project:
        """Open a project (validated, and migrated to the current schema)."""
        where = cls.locate(path)
        if isinstance(where, str):
            from .store.postgres import PostgresStore

            store = PostgresStore(where)
            if clock is not None:
                store.clock = clock
            return cls(store, Path.cwd())
        return cls(FileStore.open(where, clock or system_clock), where)

    @classmethod
    def init(
        cls,
        path: Location | None = None,
        force: bool = False,
        clock: Clock | None = None,
        old_logs: str | None = None,
    ) -> Project:
        """Create a project; with `force`, reset an existing registry. Records of the earlier
        project must then be archived (`old_logs="archive"`) or deleted (`"delete"`), so no
        test or version reusing a name inherits them."""
        if old_logs not in (None, "archive", "delete"):
            raise ValueError(f"old_logs must be archive or delete, not {old_logs!r}")
        where = cls.locate(path, walk_up=False)
        if isinstance(where, str):
            from .store.postgres import PostgresStore

            store = PostgresStore.init(where, force, old_logs)
            if clock is not None:
                store.clock = clock
            return cls(store, Path.cwd())
        return cls(FileStore.create(where, force, clock or system_clock, old_logs), where)

    # -- the parts ---------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.store.clock

    # The managers are imported when first used: a command pays only for what it runs.

    @cached_property
    def registry(self) -> ModelRegistry:
        from .registry import ModelRegistry

        return ModelRegistry(self.store, self.root)

    @cached_property
    def ab(self) -> ABTestManager:
        from .ab_testing import ABTestManager

        return ABTestManager(self.store, self.registry)

    @cached_property
    def drift(self) -> DriftMonitor:
        from .drift import DriftMonitor

        return DriftMonitor(self.store)

    def drift_detector(self, model_type: str, version: str) -> DriftDetector:
        """The drift detector of one model version (one object per version and project)."""
        return self.drift.detector(model_type, version)

    def drift_detectors(self) -> dict[tuple[str, str], DriftDetector]:
        """A detector for every registered version that has a reference set."""
        return self.drift.detectors()

    # -- state and settings ------------------------------------------------------------------

    def state(self) -> RegistryState:
        """The registry state (typed, read-only)."""
        return self.store.read()

    @property
    def settings(self) -> Settings:
        return self.store.read().settings

    def get_setting(self, key: str) -> Any:
        """A setting by dotted key (`drift.thresholds.retrain`)."""
        return self.settings.get(key)

    def set_setting(self, key: str, text: str) -> Any:
        """Set a setting from its YAML text (`0.25`, `true`, `make retrain`); validated first."""
        parts, value = parse_setting_value(key, text)
        with self.store.transaction() as txn:
            data = txn.state.settings.data
            node = data
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            txn.state.settings = Settings(validate_settings(data))
            txn.event("setting_changed", key=key, **audit_value(value))  # no secrets
        return self.get_setting(key)

    # -- the file store's paths (for tools and tests that look at the files) ------------------

    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY_FILE

    def log_path(self, stream: str) -> Path:
        if not isinstance(self.store, FileStore):
            raise TypeError("only a directory project has log files")
        return self.store.path(stream)

    def ab_log(self, test: str) -> Path:
        return self.log_path(ab_stream(test))

    def metrics_log(self, model_type: str, version: str) -> Path:
        return self.log_path(metrics_stream(model_type, version))

    def drift_log(self, model_type: str, version: str, kind: str) -> Path:
        return self.log_path(drift_stream(model_type, version, kind))


def copy_project(source: Project, target: Project) -> dict[str, int]:
    """Copy a project into an empty one (directory <-> PostgreSQL): the registry, every
    record of every stream, in order. Returns the records copied per stream."""
    import orjson

    from .errors import ConflictError

    if target.store.streams() or target.state().models:
        raise ConflictError(f"{target.location} is not empty; copy into a new project")
    state = source.state()
    with target.store.transaction() as txn:
        txn.state = copy.deepcopy(state)
        for test in source.store.archived_tests():  # finalized: archived again on commit
            txn.state.ab_tests.setdefault(test.name, test)
    copied: dict[str, int] = {}
    for stream in source.store.streams():
        count = 0
        for records in source.store.scan(stream):
            if stream == EVENTS:  # events are committed with the registry: a chunk at a time
                with target.store.transaction() as txn:
                    txn.events.extend(records)
            elif stream.endswith("/checks"):
                for record in records:
                    target.store.append(stream, record)
            else:
                data = b"".join(orjson.dumps(r) + b"\n" for r in records)
                target.store.append_batch(
                    stream, data, _as_recorded, f"copy:{stream}:{count}"
                )
            count += len(records)
        copied[stream] = count
    return copied


def _as_recorded(record: Any, where: str) -> Any:
    """Records being copied were validated when first recorded."""
    return record
