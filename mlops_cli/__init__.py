"""mlops: a model registry, A/B tests with sound statistics, and drift detection in plain files.

    from mlops_cli import Project, ModelVersion, ABTestConfig
    project = Project.open("path/to/project")
    project.registry.get_champion("gnn")

For code written against the original service, `model_registry`, `ab_test_manager` and
`get_drift_detector` are bound lazily to the default project (MLOPS_PROJECT_DIR, else the
current directory).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import (
    ConflictError,
    GateError,
    HookError,
    LockTimeoutError,
    MlopsError,
    NotFoundError,
    ProjectNotFoundError,
    StateError,
    ValidationError,
)

if TYPE_CHECKING:
    from .ab_testing import ABTestConfig, ABTestManager
    from .drift import DriftDetector
    from .project import Project
    from .registry import ModelRegistry, ModelVersion

# Imported on first use, so `import mlops_cli` (and every CLI start) stays cheap.
_LAZY = {
    "Project": "project",
    "ModelRegistry": "registry",
    "ModelVersion": "registry",
    "ABTestConfig": "ab_testing",
    "ABTestManager": "ab_testing",
    "DriftDetector": "drift",
}

__version__ = "0.1.0"

__all__ = [
    "ABTestConfig",
    "ABTestManager",
    "ConflictError",
    "DriftDetector",
    "GateError",
    "HookError",
    "LockTimeoutError",
    "MlopsError",
    "ModelRegistry",
    "ModelVersion",
    "NotFoundError",
    "Project",
    "ProjectNotFoundError",
    "StateError",
    "ValidationError",
    "__version__",
    "ab_test_manager",
    "default_project",
    "drift_detectors",
    "get_drift_detector",
    "model_registry",
]

_default: Project | None = None
_default_at: str | None = None  # where it was located (a URL's `location` hides its password)
# (MLOPS_PROJECT_DIR as read, the cwd it was relative to, or None) the default project was
# found for
_default_key: tuple[object, str | None] | None = None

# os.environ's own store (bytes keys on POSIX; every change to os.environ writes through to
# it): the seed's names look MLOPS_PROJECT_DIR up per request, and os.environ.get is five
# Python calls.
_ENVIRON: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)
if not (isinstance(_ENVIRON, dict) and all(type(k) is bytes for k in _ENVIRON)):
    _ENVIRON = None


def _project_dir_env() -> object:
    """MLOPS_PROJECT_DIR as os.environ holds it (compare for equality only), None if unset."""
    if _ENVIRON is not None:
        return _ENVIRON.get(b"MLOPS_PROJECT_DIR")
    return os.environ.get("MLOPS_PROJECT_DIR")


def default_project() -> Project:
    """The project the seed-style globals use: MLOPS_PROJECT_DIR, else the current directory.
    Opened once per location, so a service on PostgreSQL keeps one connection."""
    global _default, _default_at, _default_key

    # Per request (the seed's names): only the environment is looked at again, and the cwd
    # when the location depends on it.
    key = _default_key
    if key is not None and _default is not None:
        named_now = (
            _ENVIRON.get(b"MLOPS_PROJECT_DIR") if _ENVIRON is not None else _project_dir_env()
        )
        if named_now == key[0] and (key[1] is None or key[1] == os.getcwd()):
            return _default
    from .project import Project

    raw = _project_dir_env()
    named = os.environ.get("MLOPS_PROJECT_DIR")
    where = str(Project.locate())
    if _default is None or _default_at != where:
        _default = Project.open(where)
        _default_at = where
    absolute = named is not None and (os.path.isabs(named) or "://" in named)
    # Walking up for registry.yaml (nothing named): looked for again each time.
    _default_key = (raw, None if absolute else os.getcwd()) if named else None
    return _default


class _Lazy:
    """Stands for `default_project().<attr>`, resolved on each use."""

    def __init__(self, attr: str) -> None:
        self._attr = attr

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(default_project(), self._attr), name)

    def __repr__(self) -> str:
        return f"<mlops_cli.{self._attr} of the default project>"


# The calls the seed makes per request are methods of the stand-ins, so they skip the failed
# lookup `__getattr__` comes after (half a microsecond each).


class _DefaultRegistry(_Lazy):
    def update_metrics(
        self,
        model_type: str,
        version: str,
        inference_time_ms: float,
        confidence: float,
        error: bool = False,
    ) -> None:
        default_project().registry.update_metrics(
            model_type, version, inference_time_ms, confidence, error
        )


class _DefaultABTests(_Lazy):
    def assign_variant(self, model_type: str, user_id: str) -> Any:
        return default_project().ab.assign_variant(model_type, user_id)

    def record_result(
        self,
        test_name: str,
        variant: str,
        inference_time_ms: float,
        confidence: float,
        error: bool = False,
        user_id: str | None = None,
        ts: str | None = None,
    ) -> None:
        default_project().ab.record_result(
            test_name, variant, inference_time_ms, confidence, error, user_id, ts
        )

    @property
    def active_tests(self) -> Any:
        return default_project().ab.active_tests

    _active_tests = active_tests


model_registry: ModelRegistry = _DefaultRegistry("registry")  # type: ignore[assignment]
ab_test_manager: ABTestManager = _DefaultABTests("ab")  # type: ignore[assignment]


def get_drift_detector(model_type: str, model_version: str) -> DriftDetector:
    """The drift detector of one model version in the default project."""
    return default_project().drift_detector(model_type, model_version)


def drift_detectors() -> dict[tuple[str, str], DriftDetector]:
    """Every drift detector with a reference set in the default project, by (type, version)."""
    return default_project().drift_detectors()


def __getattr__(name: str) -> Any:
    if name == "_drift_detectors":  # the seed's module-level registry of detectors
        return drift_detectors()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mlops_cli' has no attribute {name!r}")
