"""The model registry: versions, champions, traffic, and per-version serving metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from . import jsonl
from .errors import ConflictError, NotFoundError, ValidationError
from .limits import INFERENCE_TIME_MS
from .naming import validate_name, validate_version, version_key
from .summary import Moments, summarize

if TYPE_CHECKING:
    from .project import Project


@dataclass
class ModelVersion:
    """One registered version of a model type, with its serving metrics."""

    model_type: str
    version: str
    is_champion: bool = False
    traffic_percentage: float = 0.0
    model_path: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    avg_inference_time_ms: float = 0.0
    avg_confidence: float = 0.0
    error_rate: float = 0.0
    requests: int = 0
    registered_at: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    size_bytes: int | None = None
    deprecated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_finite(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """A finite number within [low, high], or a ValidationError saying which bound it breaks."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, not {value!r}")
    if low is not None and value < low:
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ValidationError(f"{name} must be {bound}, not {value!r}")
    if high is not None and value > high:
        bound = f"between {low:g} and {high:g}" if low is not None else f"<= {high:g}"
        raise ValidationError(f"{name} must be {bound}, not {value!r}")
    return float(value)


def file_digest(path: Path) -> tuple[str, int]:
    import hashlib  # here, not at the top: every CLI start would pay for it

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def bucket(key: str, user_id: str) -> int:
    """Sticky bucket in [0, 10000): the first 8 bytes of sha256("key:user") modulo 10000."""
    import hashlib

    digest = hashlib.sha256(f"{key}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


class ModelRegistry:
    """Versions and champions of every model type in a project."""

    def __init__(self, project: Project) -> None:
        self.project = project

    # -- reading -----------------------------------------------------------------------------

    def _model(self, state: dict[str, Any], model_type: str) -> dict[str, Any]:
        validate_name(model_type, "model type")
        try:
            return state["models"][model_type]  # type: ignore[no-any-return]
        except KeyError:
            known = ", ".join(sorted(state["models"])) or "none registered yet"
            raise NotFoundError(f"unknown model type {model_type!r} (known: {known})") from None

    def _record(self, state: dict[str, Any], model_type: str, version: str) -> dict[str, Any]:
        model = self._model(state, model_type)
        validate_version(version)
        try:
            return model["versions"][version]  # type: ignore[no-any-return]
        except KeyError:
            known = ", ".join(sorted(model["versions"], key=version_key))
            raise NotFoundError(
                f"unknown version {version!r} of {model_type} (registered: {known})"
            ) from None

    def _build(self, model_type: str, version: str, model: dict[str, Any]) -> ModelVersion:
        rec = model["versions"][version]
        moments = self.metrics(model_type, version)
        return ModelVersion(
            model_type=model_type,
            version=version,
            is_champion=model["champion"] == version,
            traffic_percentage=rec["traffic_percentage"],
            model_path=rec["model_path"],
            config=dict(rec["config"]),
            avg_inference_time_ms=moments.avg_inference_time_ms,
            avg_confidence=moments.avg_confidence,
            error_rate=moments.error_rate,
            requests=moments.n,
            registered_at=rec["registered_at"],
            description=rec["description"],
            tags=dict(rec["tags"]),
            sha256=rec["sha256"],
            size_bytes=rec["size_bytes"],
            deprecated=rec["deprecated"],
        )

    def model_file(self, model_path: str) -> Path:
        """Where a model file is: a relative path is relative to the project directory."""
        path = Path(model_path).expanduser()
        return path if path.is_absolute() else self.project.root / path

    def metrics(self, model_type: str, version: str) -> Moments:
        return summarize(self.project.metrics_log(model_type, version), None).arm("all")

    def get_version(self, model_type: str, version: str) -> ModelVersion:
        state = self.project.state()
        self._record(state, model_type, version)
        return self._build(model_type, version, state["models"][model_type])

    def get_champion(self, model_type: str) -> ModelVersion | None:
        """The champion of a model type, or None when it has none."""
        model = self._model(self.project.state(), model_type)
        if model["champion"] is None:
            return None
        return self._build(model_type, model["champion"], model)

    def require_champion(self, model_type: str) -> ModelVersion:
        champion = self.get_champion(model_type)
        if champion is None:
            raise NotFoundError(
                f"{model_type} has no champion; promote one with "
                f"`mlops promote {model_type} VERSION`"
            )
        return champion

    def list_versions(self, model_type: str | None = None) -> list[ModelVersion]:
        """Every version (of one model type, or of all), in SemVer order."""
        state = self.project.state()
        types = [model_type] if model_type is not None else sorted(state["models"])
        out = []
        for name in types:
            model = self._model(state, name)
            for version in sorted(model["versions"], key=version_key):
                out.append(self._build(name, version, model))
        return out

    def history(
        self, model_type: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Audit events, newest last (of one model type, or all)."""
        if model_type is not None:
            self._model(self.project.state(), model_type)
        events = [
            e
            for e in self.project.events()
            if model_type is None or e.get("model_type") == model_type
        ]
        return events[-limit:] if limit else events

    def get_version_for_request(self, model_type: str, user_id: str) -> ModelVersion:
        """The version serving this user: its A/B arm while a test runs, else the champion.

        Only A/B tests split traffic (every other change leaves the champion at 100%), so
        this is `assign_variant`'s routing, with the same hashing.
        """
        version: ModelVersion = self.project.ab.assign_variant(model_type, user_id)["model"]
        return version

    # -- changing ----------------------------------------------------------------------------

    def register_version(
        self, model_version: ModelVersion, make_champion: bool | None = None
    ) -> ModelVersion:
        """Register a new, immutable version; the first of a model type becomes champion.

        `make_champion`: None (default) = champion if first (or if `is_champion` is set),
        False = never (`--no-champion`), True = always.
        """
        mv = model_version
        validate_name(mv.model_type, "model type")
        validate_version(mv.version)
        if not isinstance(mv.model_path, str) or not mv.model_path:
            raise ValidationError("model_path is required: pass --path MODEL_PATH")
        if not isinstance(mv.config, dict):
            raise ValidationError("config must be a mapping")
        try:
            orjson.dumps(mv.config)
        except TypeError as exc:
            raise ValidationError(f"config must hold plain values: {exc}") from None
        path = self.model_file(mv.model_path)
        sha256, size = file_digest(path) if path.is_file() else (None, None)
        with self.project.transaction() as txn:
            models = txn.state["models"]
            model = models.setdefault(
                mv.model_type, {"champion": None, "champion_history": [], "versions": {}}
            )
            if mv.version in model["versions"]:
                raise ConflictError(
                    f"{mv.model_type} {mv.version} is already registered; versions are "
                    "immutable, register a new version number"
                )
            champion = (
                make_champion
                if make_champion is not None
                else model["champion"] is None or mv.is_champion
            )
            model["versions"][mv.version] = {
                "model_path": mv.model_path,
                "config": mv.config,
                "traffic_percentage": 0.0,
                "registered_at": jsonl.utc_now(),
                "description": mv.description or "",
                "tags": {str(k): str(v) for k, v in mv.tags.items()},
                "sha256": sha256,
                "size_bytes": size,
                "deprecated": False,
            }
            txn.event(
                "registered", model_type=mv.model_type, version=mv.version, model_path=mv.model_path
            )
            if champion:
                self._check_no_running_test(txn.state, mv.model_type, force=False)
                self._make_champion(model, mv.version)
                txn.event(
                    "promoted",
                    model_type=mv.model_type,
                    version=mv.version,
                    reason="first version" if len(model["versions"]) == 1 else None,
                )
        return self.get_version(mv.model_type, mv.version)

    @staticmethod
    def _make_champion(model: dict[str, Any], version: str) -> None:
        if model["champion"] is not None and model["champion"] != version:
            model["champion_history"].append(model["champion"])
        model["champion"] = version
        for v, rec in model["versions"].items():
            rec["traffic_percentage"] = 100.0 if v == version else 0.0

    @staticmethod
    def _check_no_running_test(state: dict[str, Any], model_type: str, force: bool) -> None:
        for name, test in state["ab_tests"].items():
            if test["model_type"] == model_type and test["status"] == "running" and not force:
                raise ConflictError(
                    f"A/B test {name} is running on {model_type}; finalize it with "
                    f"`mlops ab finalize {name} promote|rollback`, or pass --force"
                )

    def promote_to_champion(
        self, model_type: str, version: str, reason: str | None = None, force: bool = False
    ) -> ModelVersion:
        """Make a version champion with 100% traffic (every other version 0%)."""
        with self.project.transaction() as txn:
            rec = self._record(txn.state, model_type, version)
            model = txn.state["models"][model_type]
            if rec["deprecated"]:
                raise ConflictError(f"{model_type} {version} is deprecated and cannot be promoted")
            self._check_no_running_test(txn.state, model_type, force)
            if model["champion"] == version:
                raise ConflictError(f"{model_type} {version} is already the champion")
            previous = model["champion"]
            self._make_champion(model, version)
            txn.event(
                "promoted",
                reason,
                model_type=model_type,
                version=version,
                previous=previous,
                forced=force or None,
            )
        return self.get_version(model_type, version)

    def rollback(self, model_type: str, reason: str | None = None) -> ModelVersion:
        """Make the previous champion champion again."""
        with self.project.transaction() as txn:
            model = self._model(txn.state, model_type)
            self._check_no_running_test(txn.state, model_type, force=False)
            history = model["champion_history"]
            while history and model["versions"][history[-1]]["deprecated"]:
                history.pop()
            if not history:
                raise ConflictError(
                    f"{model_type} has no earlier champion to roll back to; "
                    f"promote a version with `mlops promote {model_type} VERSION`"
                )
            previous, current = history.pop(), model["champion"]
            model["champion"] = previous
            for v, rec in model["versions"].items():
                rec["traffic_percentage"] = 100.0 if v == previous else 0.0
            txn.event(
                "rolled_back", reason, model_type=model_type, version=previous, previous=current
            )
        return self.get_version(model_type, previous)

    def deprecate(self, model_type: str, version: str, reason: str | None = None) -> ModelVersion:
        """Mark a version deprecated: it can no longer be promoted or tested."""
        with self.project.transaction() as txn:
            rec = self._record(txn.state, model_type, version)
            if txn.state["models"][model_type]["champion"] == version:
                raise ConflictError(
                    f"{model_type} {version} is the champion; promote another version first"
                )
            if rec["deprecated"]:
                raise ConflictError(f"{model_type} {version} is already deprecated")
            for name, test in txn.state["ab_tests"].items():
                if (
                    test["status"] == "running"
                    and test["model_type"] == model_type
                    and version in (test["control_version"], test["treatment_version"])
                ):
                    raise ConflictError(f"{model_type} {version} is in running A/B test {name}")
            rec["deprecated"] = True
            txn.event("deprecated", reason, model_type=model_type, version=version)
        return self.get_version(model_type, version)

    def verify(self, model_type: str, version: str) -> dict[str, Any]:
        """Recompute the model file's sha256 and size and compare with the registered ones."""
        mv = self.get_version(model_type, version)
        result: dict[str, Any] = {
            "model_type": model_type,
            "version": version,
            "model_path": mv.model_path,
            "expected_sha256": mv.sha256,
            "expected_size_bytes": mv.size_bytes,
            "sha256": None,
            "size_bytes": None,
        }
        path = self.model_file(mv.model_path)
        if mv.sha256 is None:
            result["status"] = "unverifiable"
            result["ok"] = False
            result["message"] = "no checksum was recorded: the file did not exist at registration"
        elif not path.is_file():
            result["status"] = "missing"
            result["ok"] = False
            result["message"] = f"model file {path} does not exist"
        else:
            result["sha256"], result["size_bytes"] = file_digest(path)
            ok = result["sha256"] == mv.sha256 and result["size_bytes"] == mv.size_bytes
            result["status"] = "ok" if ok else "mismatch"
            result["ok"] = ok
            result["message"] = "checksum matches" if ok else "checksum differs from registration"
        return result

    def update_metrics(
        self,
        model_type: str,
        version: str,
        inference_time_ms: float,
        confidence: float,
        error: bool = False,
    ) -> None:
        """Record one served request; cheap enough to call per request from a service."""
        state = self.project.state()
        model = state["models"].get(model_type)
        if model is None or version not in model["versions"]:
            self._record(state, model_type, version)  # raises the precise error
        line = (
            orjson.dumps(
                {
                    "ts": jsonl.utc_now(),
                    "inference_time_ms": check_finite(
                        "inference_time_ms", inference_time_ms, 0, INFERENCE_TIME_MS.high
                    ),
                    "confidence": check_finite("confidence", confidence, 0, 1),
                    "error": bool(error),
                }
            )
            + b"\n"
        )
        self.project.append_log(self.project.metrics_log(model_type, version), line)
