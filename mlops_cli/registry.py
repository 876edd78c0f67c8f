"""The model registry: versions, champions, traffic, and per-version serving metrics."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConflictError, NotFoundError, StateError, ValidationError
from .limits import INFERENCE_TIME_MS
from .moments import Moments
from .naming import SEMVER_RE, validate_name, validate_version
from .records import check_finite
from .results import Event, Events, MappingResult
from .state import ModelType, RegistryState, VersionRecord, bucket
from .store.base import EVENTS, Store, metrics_stream, skipped_of
from .store.snapshot import Bound
from .timeutil import format_ts, stamp, stamp_now


@dataclass
class ModelVersion(MappingResult):
    """One registered version of a model type, with its serving metrics."""

    model_type: str
    version: str
    is_champion: bool = False
    traffic_percentage: float = 0.0
    model_path: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    # None (JSON null) while the version has served no request: there is no mean to show.
    avg_inference_time_ms: float | None = None
    avg_confidence: float | None = None
    error_rate: float | None = None
    requests: int = 0
    registered_at: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    size_bytes: int | None = None
    deprecated: bool = False
    # Malformed lines of its metrics log left out of the figures (a view skips them and says
    # so); not a field (no annotation): the version object's keys stay the seed's.
    skipped_lines = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # A version handed to a request (`assign_variant`) computes its serving metrics when they
    # are first read, not when it is built: routing never reads the metrics log.

    def __getattr__(self, name: str) -> Any:  # reached only for metrics not yet computed
        pending = self.__dict__.pop("_serving", None) if name in SERVING_FIELDS else None
        if pending is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._set_serving(pending())
        return self.__dict__[name]

    def _set_serving(self, moments: Moments) -> None:
        self.__dict__.update(serving_figures(moments))
        self.skipped_lines = getattr(moments, "skipped_lines", 0)

    def __getstate__(self) -> dict[str, Any]:
        pending = self.__dict__.pop("_serving", None)
        if pending is not None:
            self._set_serving(pending())
        return self.__dict__


SERVING_FIELDS = ("avg_inference_time_ms", "avg_confidence", "error_rate", "requests")


def serving_figures(moments: Moments) -> dict[str, Any]:
    """A version's serving metrics: its request count, and the means (None without a
    request: a 0.0 would read as a real figure, and alert as one)."""
    served = moments.n > 0
    return {
        "avg_inference_time_ms": moments.avg_inference_time_ms if served else None,
        "avg_confidence": moments.avg_confidence if served else None,
        "error_rate": moments.error_rate if served else None,
        "requests": moments.n,
    }


class ServedMoments(Moments):
    """A metrics log's moments, with the malformed lines the read left out."""

    skipped_lines: int = 0
for _name in SERVING_FIELDS:  # no class-level default may hide a metric not yet computed
    delattr(ModelVersion, _name)


@dataclass
class Verification(MappingResult):
    """The model file's checksum now against the one recorded at registration."""

    model_type: str
    version: str
    model_path: str
    expected_sha256: str | None
    expected_size_bytes: int | None
    sha256: str | None
    size_bytes: int | None
    status: str  # ok, mismatch, missing, unverifiable
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def raise_if_failed(self) -> None:
        """A StateError (exit 1) when the file is missing, changed or was never checksummed."""
        if not self.ok:
            raise StateError(self.message)


def model_file_exists(path: Path) -> bool:
    """Whether a model file is there to checksum; a directory, FIFO or device is refused
    (a directory would be stored as "no file yet", a FIFO would hang the read)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ValidationError(f"cannot read the model path {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ValidationError(
            f"the model path {path} is {kind}: register one file (archive a model directory "
            "into one file, e.g. a .tar.gz), so its checksum can be verified"
        )
    return True


def file_digest(path: Path) -> tuple[str, int]:
    import hashlib  # here, not at the top: every CLI start would pay for it

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


_MS_HIGH = INFERENCE_TIME_MS.high
# Names an alias cannot take: `champion` is the champion's own pointer.
RESERVED_ALIASES = ("champion",)
_VERSION_LIKE = re.compile(r"[vV]?[0-9].*")


@dataclass
class Alias(MappingResult):
    """A named pointer to a version of a model type."""

    model_type: str
    alias: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_alias(alias: str) -> str:
    """An alias is a name (1-64 of A-Z a-z 0-9 . _ -), neither a version (an alias that reads
    as one would be mistaken for it) nor reserved."""
    validate_name(alias, "alias")
    if SEMVER_RE.fullmatch(alias) is not None or _VERSION_LIKE.fullmatch(alias) is not None:
        raise ValidationError(
            f"invalid alias {alias!r}: it reads as a version; start it with a letter (not v "
            "and a digit)"
        )
    if alias in RESERVED_ALIASES:
        raise ValidationError(f"invalid alias {alias!r}: the name is reserved")
    return alias


def _unknown_alias(model: ModelType, alias: str) -> str:
    known = ", ".join(sorted(model.aliases)) or "none"
    return f"unknown alias {alias!r} of {model.name} (aliases: {known})"

__all__ = ["Alias", "ModelRegistry", "ModelVersion", "Verification", "bucket", "file_digest"]


class ModelRegistry:
    """Versions and champions of every model type in a project."""

    def __init__(self, store: Store, model_root: Path) -> None:
        self.store = store
        self.model_root = model_root  # relative model paths are relative to it
        self._metrics_streams: Bound[tuple[str, str], str] = Bound()  # per snapshot

    # -- reading -----------------------------------------------------------------------------

    def build(
        self, model_type: str, version: str, model: ModelType, lazy: bool = False
    ) -> ModelVersion:
        """The ModelVersion of a registered version, with its serving metrics (with `lazy`,
        computed when first read: a request's routing never reads the metrics log)."""
        rec = model.versions[version]
        if lazy:
            found = ModelVersion(
                model_type=model_type,
                version=version,
                is_champion=model.champion == version,
                traffic_percentage=rec.traffic_percentage,
                model_path=rec.model_path,
                config=dict(rec.config),
                registered_at=rec.registered_at,
                description=rec.description,
                tags=dict(rec.tags),
                sha256=rec.sha256,
                size_bytes=rec.size_bytes,
                deprecated=rec.deprecated,
            )
            for name in SERVING_FIELDS:
                del found.__dict__[name]
            found.__dict__["_serving"] = lambda: self.metrics(model_type, version)
            return found
        moments = self.metrics(model_type, version)
        built = ModelVersion(
            model_type=model_type,
            version=version,
            is_champion=model.champion == version,
            traffic_percentage=rec.traffic_percentage,
            model_path=rec.model_path,
            config=dict(rec.config),
            registered_at=rec.registered_at,
            description=rec.description,
            tags=dict(rec.tags),
            sha256=rec.sha256,
            size_bytes=rec.size_bytes,
            deprecated=rec.deprecated,
            **serving_figures(moments),
        )
        built.skipped_lines = moments.skipped_lines
        return built

    def model_file(self, model_path: str) -> Path:
        """Where a model file is: a relative path is relative to the project directory."""
        path = Path(model_path).expanduser()
        return path if path.is_absolute() else self.model_root / path

    def metrics(self, model_type: str, version: str) -> ServedMoments:
        """A version's serving moments. Read-only figures: a malformed line of the metrics
        log is left out and counted (`skipped_lines`), never an error."""
        summary = self.store.summary(metrics_stream(model_type, version), None, skip_invalid=True)
        moments = ServedMoments(**vars(summary.arm("all")))
        moments.skipped_lines = len(summary.skipped)
        return moments

    def get_version(self, model_type: str, version: str) -> ModelVersion:
        state = self.store.read()
        version = state.canonical(model_type, version)
        return self.build(model_type, version, state.models[model_type])

    def get_champion(self, model_type: str) -> ModelVersion | None:
        """The champion of a model type, or None when it has none."""
        model = self.store.read().model(model_type)
        if model.champion is None:
            return None
        return self.build(model_type, model.champion, model)

    def require_champion(self, model_type: str) -> ModelVersion:
        champion = self.get_champion(model_type)
        if champion is None:
            raise NotFoundError(
                f"{model_type} has no champion; promote one with "
                f"`mlops promote {model_type} VERSION`"
            )
        return champion

    def get_version_for_request(self, model_type: str, user_id: str) -> ModelVersion:
        """The version serving this user: its A/B arm while a test runs, else the champion
        (the same sticky hashing as `assign_variant`)."""
        state = self.store.snapshot()
        _, version, _ = state.route(model_type, user_id)
        return self.build(model_type, version, state.models[model_type], lazy=True)

    def list_versions(
        self, model_type: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[ModelVersion]:
        """Every version (of one model type, or of all: by type name, then SemVer), or a page
        of them: `limit` versions after the first `offset`. A page reads only the model types
        it covers (the store knows each type's number of versions)."""
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and value < 0:
                raise ValidationError(f"{name} must be >= 0, not {value}", field=name)
        state = self.store.read()
        if model_type is not None:
            state.model(model_type)  # an unknown one: NotFoundError
        types = [model_type] if model_type is not None else sorted(state.models)
        out: list[ModelVersion] = []
        skip = offset
        for name in types:
            if limit is not None and len(out) >= limit:
                break
            size = state.models.size(name)
            if skip >= size:
                skip -= size
                continue
            model = state.model(name)
            wanted = model.sorted_versions()[skip:]
            skip = 0
            if limit is not None:
                wanted = wanted[: limit - len(out)]
            out += [self.build(name, version, model) for version in wanted]
        return out

    def history(
        self, model_type: str | None = None, limit: int | None = None, skip_invalid: bool = False
    ) -> Events:
        """Audit events, newest last (of one model type, or all). A malformed line of the log
        is an error, or with `skip_invalid` (a view) left out and counted in `skipped`."""
        if model_type is not None:
            self.store.read().model(model_type)
        rows = self.store.history(EVENTS, skip_invalid=skip_invalid)
        events = Events(
            Event(e) for e in rows if model_type is None or e.get("model_type") == model_type
        )
        kept = Events(events[-limit:]) if limit else events
        kept.skipped = skipped_of(rows)
        return kept

    def history_page(
        self,
        model_type: str | None = None,
        kind: str | tuple[str, ...] | None = None,
        limit: int = 100,
        before: int | None = None,
        skip_invalid: bool = False,
    ) -> Events:
        """A page of audit events, newest first: the `limit` newest (of one model type, of one
        kind or any of several, or all) before the position `before` (a previous page's
        `next`), read from the end of the log: its cost does not grow with the events before
        the page."""
        match: dict[str, tuple[str, ...]] = {}
        if model_type is not None:
            self.store.read().model(model_type)
            match["model_type"] = (model_type,)
        if kind is not None:
            match["event"] = (kind,) if isinstance(kind, str) else kind
        page = self.store.page(EVENTS, limit, before, match, skip_invalid=skip_invalid)
        events = Events(Event(e) for e in page.records)
        events.skipped, events.next = page.skipped, page.next
        return events

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
            raise ValidationError(
                "model_path is required", cli={"model_path is required": "--path is required"}
            )
        if not isinstance(mv.config, dict):
            raise ValidationError("config must be a mapping")
        import orjson  # here: `mlops list` never needs it (2 ms of start-up)

        try:
            orjson.dumps(mv.config)
        except TypeError as exc:
            raise ValidationError(f"config must hold plain values: {exc}") from None
        path = self.model_file(mv.model_path)
        sha256, size = file_digest(path) if model_file_exists(path) else (None, None)
        with self.store.transaction() as txn:
            model = txn.state.models.setdefault(mv.model_type, ModelType(mv.model_type))
            same = model.same_as(mv.version)
            if same is not None:
                spelled = (
                    "" if same == mv.version else f" (as {same}: a leading v is not significant)"
                )
                raise ConflictError(
                    f"{mv.model_type} {mv.version} is already registered{spelled}; versions are "
                    "immutable, register a new version number"
                )
            champion = (
                make_champion
                if make_champion is not None
                else model.champion is None or mv.is_champion
            )
            model.versions[mv.version] = VersionRecord(
                model_path=mv.model_path,
                config=mv.config,
                traffic_percentage=0.0,
                registered_at=stamp(self.store.clock()),
                description=mv.description or "",
                tags={str(k): str(v) for k, v in mv.tags.items()},
                sha256=sha256,
                size_bytes=size,
                deprecated=False,
            )
            txn.event(
                "registered", model_type=mv.model_type, version=mv.version, model_path=mv.model_path
            )
            if champion:
                txn.state.require_no_running_test(mv.model_type)
                model.make_champion(mv.version)
                txn.event(
                    "promoted",
                    model_type=mv.model_type,
                    version=mv.version,
                    reason="first version" if len(model.versions) == 1 else None,
                )
        return self.get_version(mv.model_type, mv.version)

    def promote_to_champion(
        self, model_type: str, version: str, reason: str | None = None, force: bool = False
    ) -> ModelVersion:
        """Make a version champion with 100% traffic (every other version 0%)."""
        with self.store.transaction() as txn:
            version = txn.state.canonical(model_type, version)
            rec = txn.state.version(model_type, version)
            model = txn.state.models[model_type]
            if rec.deprecated:
                raise ConflictError(f"{model_type} {version} is deprecated and cannot be promoted")
            if not force:
                txn.state.require_no_running_test(model_type)
            if model.champion == version:
                raise ConflictError(f"{model_type} {version} is already the champion")
            test = txn.state.running_test(model_type)
            if test is not None:  # forced: the test ends here, so routing follows the registry
                test.status = "aborted"
                test.finalized_at = format_ts(self.store.clock())
                why = f": {reason}" if reason else ""
                test.end_reason = f"promote --force of {version}{why}"
                txn.event(
                    "ab_aborted",
                    test.end_reason,
                    test=test.name,
                    model_type=model_type,
                    version=version,
                )
            previous = model.champion
            model.make_champion(version)
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
        with self.store.transaction() as txn:
            model = txn.state.model(model_type)
            txn.state.require_no_running_test(model_type)
            previous, current = model.restore_previous_champion()
            txn.event(
                "rolled_back", reason, model_type=model_type, version=previous, previous=current
            )
        return self.get_version(model_type, previous)

    def deprecate(self, model_type: str, version: str, reason: str | None = None) -> ModelVersion:
        """Mark a version deprecated: it can no longer be promoted or tested."""
        with self.store.transaction() as txn:
            version = txn.state.canonical(model_type, version)
            rec = txn.state.version(model_type, version)
            if txn.state.models[model_type].champion == version:
                raise ConflictError(
                    f"{model_type} {version} is the champion; promote another version first"
                )
            if rec.deprecated:
                raise ConflictError(f"{model_type} {version} is already deprecated")
            test = txn.state.running_test(model_type)
            if test is not None and version in (test.control_version, test.treatment_version):
                raise ConflictError(f"{model_type} {version} is in running A/B test {test.name}")
            rec.deprecated = True
            txn.event("deprecated", reason, model_type=model_type, version=version)
            model = txn.state.models[model_type]
            for alias in sorted(a for a, v in model.aliases.items() if v == version):
                del model.aliases[alias]  # an alias never names a deprecated version
                txn.event(
                    "alias_deleted",
                    "its version was deprecated",
                    model_type=model_type,
                    alias=alias,
                    version=version,
                )
        return self.get_version(model_type, version)

    # -- aliases -----------------------------------------------------------------------------

    def set_alias(
        self, model_type: str, alias: str, version: str, reason: str | None = None
    ) -> Alias:
        """Point an alias (a name such as `shadow`) at a registered, non-deprecated version
        of the model type, replacing where it pointed before."""
        validate_alias(alias)
        with self.store.transaction() as txn:
            version = txn.state.canonical(model_type, version)
            model = txn.state.models[model_type]
            if model.versions[version].deprecated:
                raise ConflictError(
                    f"{model_type} {version} is deprecated: an alias cannot point at it"
                )
            previous = model.aliases.get(alias)
            if previous == version:
                raise ConflictError(f"alias {alias} of {model_type} already points at {version}")
            model.aliases[alias] = version
            txn.event(
                "alias_set",
                reason,
                model_type=model_type,
                alias=alias,
                version=version,
                previous=previous,
            )
        return Alias(model_type, alias, version)

    def delete_alias(self, model_type: str, alias: str, reason: str | None = None) -> Alias:
        """Remove an alias; an unknown one is a NotFoundError naming the type's aliases."""
        validate_alias(alias)
        with self.store.transaction() as txn:
            model = txn.state.model(model_type)
            version = model.aliases.pop(alias, None)
            if version is None:
                raise NotFoundError(_unknown_alias(model, alias))
            txn.event(
                "alias_deleted", reason, model_type=model_type, alias=alias, version=version
            )
        return Alias(model_type, alias, version)

    def aliases(self, model_type: str | None = None) -> list[Alias]:
        """Every alias (of one model type, or of all), by type then alias name."""
        state = self.store.read()
        names = [model_type] if model_type is not None else sorted(state.models)
        found = []
        for name in names:
            model = state.model(name)
            found += [Alias(name, a, v) for a, v in sorted(model.aliases.items())]
        return found

    def get_version_by_alias(self, model_type: str, alias: str) -> ModelVersion:
        """The version an alias points at; an unknown alias is a NotFoundError."""
        validate_alias(alias)
        model = self.store.read().model(model_type)
        version = model.aliases.get(alias)
        if version is None:
            raise NotFoundError(_unknown_alias(model, alias))
        return self.build(model_type, version, model)

    def verify(self, model_type: str, version: str) -> Verification:
        """Recompute the model file's sha256 and size and compare with the registered ones."""
        mv = self.get_version(model_type, version)
        path = self.model_file(mv.model_path)
        sha256 = size = None
        if mv.sha256 is None:
            status, message = (
                "unverifiable",
                "no checksum was recorded: the file did not exist at registration",
            )
        elif not model_file_exists(path):
            status, message = "missing", f"model file {path} does not exist"
        else:
            sha256, size = file_digest(path)
            same = sha256 == mv.sha256 and size == mv.size_bytes
            status = "ok" if same else "mismatch"
            message = "checksum matches" if same else "checksum differs from registration"
        return Verification(
            model_type, version, mv.model_path, mv.sha256, mv.size_bytes, sha256, size,
            status, status == "ok", message,
        )

    def update_metrics(
        self,
        model_type: str,
        version: str,
        inference_time_ms: float,
        confidence: float,
        error: bool = False,
    ) -> None:
        """Record one served request; cheap enough to call per request from a service."""
        store = self.store
        state = store.snapshot()
        stream = self._metrics_streams.of(state).get((model_type, version))
        if stream is None:
            stream = self._metrics_stream(state, model_type, version)
        t, c = inference_time_ms, confidence
        if not (type(t) is float and 0 <= t <= _MS_HIGH and type(c) is float and 0 <= c <= 1):
            t = check_finite("inference_time_ms", t, 0, _MS_HIGH)  # or says what is wrong
            c = check_finite("confidence", c, 0, 1)
        store.append(
            stream,
            {
                "ts": stamp_now(store.clock),
                "inference_time_ms": t,
                "confidence": c,
                "error": bool(error),
            },
        )

    def _metrics_stream(self, state: RegistryState, model_type: str, version: str) -> str:
        """The metrics stream of a registered version; bound to the snapshot when it holds the
        version as named (`1.0.0` for `v1.0.0`, or one registered since: read fresh)."""
        model = state.models.get(model_type)
        if model is None or version not in model.versions:
            return metrics_stream(model_type, self.store.read().canonical(model_type, version))
        stream = self._metrics_streams.of(state)[model_type, version] = metrics_stream(
            model_type, version
        )
        return stream

    def served_version(
        self, model_type: str, version: str, model: ModelType
    ) -> Callable[[], ModelVersion]:
        """Hands out a registered version to requests (`assign_variant`), built once: each
        call gives a new ModelVersion, as `build(..., lazy=True)` would, whose serving metrics
        are computed when first read."""
        fields = vars(self.build(model_type, version, model, lazy=True))
        config, tags = fields["config"], fields["tags"]

        def served() -> ModelVersion:
            found = ModelVersion.__new__(ModelVersion)
            found.__dict__.update(fields)  # (the metrics still to compute: `_serving`)
            found.config, found.tags = dict(config), dict(tags)  # the caller's own
            return found

        return served
