"""The project directory: discovery, paths, the project lock, and atomic registry.yaml writes."""

from __future__ import annotations

import copy
import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import jsonl, safefs, yamlsafe
from .errors import ConflictError, LockTimeoutError, NotFoundError, ProjectNotFoundError, StateError
from .naming import validate_name, validate_version
from .schema import (
    DEFAULT_SETTINGS,
    SCHEMA_VERSION,
    parse_setting_value,
    validate_settings,
    validate_state,
)
from .textsafe import audit_value

if TYPE_CHECKING:
    from .ab_testing import ABTestManager
    from .drift import DriftDetector
    from .registry import ModelRegistry

REGISTRY_FILE = "registry.yaml"
LOCK_FILE = ".mlops.lock"
EVENTS_FILE = "events.jsonl"

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

HEADER = (
    "# mlops registry: written by the `mlops` tool. Change it with mlops commands\n"
    "# (mlops config set KEY VALUE for settings); every write is validated and atomic.\n"
)


def actor() -> str:
    """Who made a change: MLOPS_ACTOR, else the OS user."""
    name = os.environ.get("MLOPS_ACTOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file in the same directory, fsync, rename, fsync dir.

    A crash at any instant leaves either the old or the new file, never a mix. The file keeps
    its mode, and a link at `path` is refused, not followed or replaced (safefs.atomic_replace;
    its directory is trusted: pass the project root to safefs to check the directories too).
    """
    safefs.atomic_replace(path.parent, path.name, data)


def new_state() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": copy.deepcopy(DEFAULT_SETTINGS),
        "models": {},
        "ab_tests": {},
    }


def dump_state(state: dict[str, Any]) -> bytes:
    body = yaml.dump(state, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return (HEADER + body).encode()


def load_state_bytes(data: bytes, source: str) -> dict[str, Any]:
    # Bounded: an alias budget, a depth limit and duplicate keys refused (yamlsafe).
    doc = yamlsafe.load_yaml(
        data, source, error=StateError, hint="; fix the file or restore it from backup"
    )
    return validate_state(doc, source)


@dataclass
class Transaction:
    """The registry state being changed under the project lock, and the events to log."""

    state: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: str, reason: str | None = None, **fields: Any) -> None:
        self.events.append(
            {"ts": jsonl.utc_now(), "event": kind, **fields, "actor": actor(), "reason": reason}
        )


class Project:
    """A project directory holding registry.yaml and the logs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry_path = root / REGISTRY_FILE
        self.lock_path = root / LOCK_FILE
        self.events_path = root / EVENTS_FILE
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        self._detectors: dict[tuple[str, str], DriftDetector] = {}

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    # -- discovery ---------------------------------------------------------------------------

    @staticmethod
    def locate(path: str | os.PathLike[str] | None = None) -> Path:
        """--project-dir > MLOPS_PROJECT_DIR > the current directory."""
        chosen = path if path is not None else os.environ.get("MLOPS_PROJECT_DIR") or "."
        return Path(chosen).expanduser().absolute()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Project:
        root = cls.locate(path)
        if not (root / REGISTRY_FILE).is_file():
            raise ProjectNotFoundError(
                f"no {REGISTRY_FILE} in {root}: run `mlops init` there, or point to a project "
                "with --project-dir/-C or MLOPS_PROJECT_DIR"
            )
        project = cls(root)
        project.state()  # validate on open
        return project

    @classmethod
    def init(cls, path: str | os.PathLike[str] | None = None, force: bool = False) -> Project:
        """Create a project; with `force`, reset an existing registry.yaml (logs are kept)."""
        root = cls.locate(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create project directory {root}: {exc.strerror}") from exc
        project = cls(root)
        with project.lock():
            if project.registry_path.exists() and not force:
                raise ConflictError(
                    f"{project.registry_path} already exists; use --force to reset it"
                )
            atomic_write(project.registry_path, dump_state(new_state()))
        return project

    # -- state -------------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The project lock, held from the read to the write of registry.yaml."""
        import filelock

        timeout = self._lock_timeout()
        safefs.check_path(self.root, LOCK_FILE)  # a planted link or FIFO: a clean error
        lock = filelock.FileLock(str(self.lock_path), timeout=timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeoutError(
                f"could not take the project lock {self.lock_path} within {timeout:g} s: another "
                "mlops process holds it; retry, or raise the setting lock_timeout_s"
            ) from None
        except OSError as exc:  # raced in after the check (filelock opens with O_NOFOLLOW)
            raise StateError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from None
        try:
            yield
        finally:
            lock.release()

    def _lock_timeout(self) -> float:
        try:
            return float(self.state()["settings"]["lock_timeout_s"])
        except (StateError, ProjectNotFoundError, OSError):
            return float(DEFAULT_SETTINGS["lock_timeout_s"])

    def state(self) -> dict[str, Any]:
        """The validated registry state, re-read only when the file changed (treat as read-only)."""
        try:
            st = os.stat(self.registry_path)
        except FileNotFoundError:
            raise ProjectNotFoundError(
                f"no {REGISTRY_FILE} in {self.root}: run `mlops init` there, or point to a "
                "project with --project-dir/-C or MLOPS_PROJECT_DIR"
            ) from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with os.fdopen(safefs.open_read(self.root, REGISTRY_FILE), "rb") as f:
            data = f.read()  # a FIFO or link planted there: a clean error, not a hang
        state = load_state_bytes(data, str(self.registry_path))
        self._cache = (key, state)
        return state

    @property
    def settings(self) -> dict[str, Any]:
        return self.state()["settings"]  # type: ignore[no-any-return]

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Read-modify-write of registry.yaml under the project lock, validated and atomic."""
        with self.lock():
            before = self.state()
            txn = Transaction(copy.deepcopy(before))
            yield txn
            if txn.state != before:
                data = dump_state(txn.state)
                validated = load_state_bytes(data, str(self.registry_path))
                atomic_write(self.registry_path, data)
                st = os.stat(self.registry_path)
                self._cache = ((st.st_ino, st.st_mtime_ns, st.st_size), validated)
            if txn.events:
                self.append_log(self.events_path, jsonl.encode_batch(txn.events), fsync=True)

    def get_setting(self, key: str) -> Any:
        """A setting by dotted key (`drift.thresholds.retrain`)."""
        node: Any = self.settings
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise NotFoundError(
                    f"unknown setting {key!r}; see `mlops config list` for the settings"
                )
            node = node[part]
        return node

    def set_setting(self, key: str, text: str) -> Any:
        """Set a setting from its YAML text (`0.25`, `true`, `make retrain`); validated first."""
        parts, value = parse_setting_value(key, text)
        with self.transaction() as txn:
            node = txn.state["settings"]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            txn.state["settings"] = validate_settings(txn.state["settings"])
            txn.event("setting_changed", key=key, **audit_value(value))  # no secrets
        return self.get_setting(key)

    def flat_settings(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict) and node and prefix != "drift.hooks":
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out.append((prefix, node))

        walk("", self.settings)
        return out

    # -- logs --------------------------------------------------------------------------------

    def append_log(
        self,
        path: Path,
        data: bytes,
        fsync: bool = False,
        precheck: Callable[[int], None] | None = None,
    ) -> None:
        jsonl.WRITER.append(
            path, data, self._lock_timeout(), fsync=fsync, precheck=precheck, root=self.root
        )

    def metrics_log(self, model_type: str, version: str) -> Path:
        return self.root / "logs" / "metrics" / safe(model_type) / safe_version(version)

    def ab_log(self, test: str) -> Path:
        return self.root / "logs" / "ab" / f"{validate_name(test, 'A/B test name')}.jsonl"

    def drift_dir(self, model_type: str, version: str) -> Path:
        return self.root / "logs" / "drift" / safe(model_type) / validate_version(version)

    def events(self) -> list[dict[str, Any]]:
        return jsonl.read_from(self.events_path).records

    # -- the parts ---------------------------------------------------------------------------

    @cached_property
    def registry(self) -> ModelRegistry:
        from .registry import ModelRegistry

        return ModelRegistry(self)

    @cached_property
    def ab(self) -> ABTestManager:
        from .ab_testing import ABTestManager

        return ABTestManager(self)

    def drift_detector(self, model_type: str, version: str) -> DriftDetector:
        """The drift detector of one model version (one object per version and project)."""
        from .drift import DriftDetector

        key = (model_type, version)
        detector = self._detectors.get(key)
        if detector is None:
            detector = self._detectors[key] = DriftDetector(self, model_type, version)
        return detector

    def drift_detectors(self) -> dict[tuple[str, str], DriftDetector]:
        """A detector for every registered version that has a reference set."""
        out = {}
        for model_type, model in sorted(self.state()["models"].items()):
            for version in model["versions"]:
                detector = self.drift_detector(model_type, version)
                if detector.has_reference():
                    out[(model_type, version)] = detector
        return out


def safe(model_type: str) -> str:
    return validate_name(model_type, "model type")


def safe_version(version: str) -> str:
    return f"{validate_version(version)}.jsonl"
