"""The composition root: locate and open a project, build its store, clock and managers.

A project location is a directory (the file store). `Project.open(path, clock=...)` gives
`registry`, `ab`, `drift` and `drift_detector(type, version)`, all sharing one store and one
clock.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from .ab_testing import ABTestManager
from .drift import DriftDetector, DriftMonitor
from .registry import ModelRegistry
from .schema import parse_setting_value, validate_settings
from .state import RegistryState, Settings
from .store.base import Store, ab_stream, drift_stream, metrics_stream
from .store.files import REGISTRY_FILE, FileStore
from .timeutil import Clock, system_clock


class Project:
    """A project: its store, its clock, and the managers working on them."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root

    def __repr__(self) -> str:
        return f"Project({self.store.location!r})"

    # -- discovery ---------------------------------------------------------------------------

    @staticmethod
    def locate(path: str | os.PathLike[str] | None = None) -> Path:
        """--project-dir > MLOPS_PROJECT_DIR > the current directory."""
        chosen = path if path is not None else os.environ.get("MLOPS_PROJECT_DIR") or "."
        return Path(chosen).expanduser().absolute()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, clock: Clock = system_clock
    ) -> Project:
        root = cls.locate(path)
        return cls(FileStore.open(root, clock), root)

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str] | None = None,
        force: bool = False,
        clock: Clock = system_clock,
    ) -> Project:
        """Create a project; with `force`, reset an existing registry.yaml (logs are kept)."""
        root = cls.locate(path)
        return cls(FileStore.create(root, force, clock), root)

    # -- the parts ---------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.store.clock

    @cached_property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.store, self.root)

    @cached_property
    def ab(self) -> ABTestManager:
        return ABTestManager(self.store, self.registry)

    @cached_property
    def drift(self) -> DriftMonitor:
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
            txn.event("setting_changed", key=key, value=value)
        return self.get_setting(key)

    def flat_settings(self) -> list[tuple[str, Any]]:
        return self.settings.flat()

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
