"""Typed results that also read like the dicts the seed's code indexes (`result["decision"]`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class MappingResult:
    """Mapping access over `to_dict()`: `r["key"]`, `r.get`, `in`, `keys`, `items`, `dict(r)`."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        doc = self.to_dict()
        if key not in doc:
            raise KeyError(key)
        # A field keeps its type (an assignment's `model` is the ModelVersion, as in the seed).
        return getattr(self, key, doc[key]) if not key.startswith("_") else doc[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self) -> Any:
        return self.to_dict().keys()

    def items(self) -> Any:
        return self.to_dict().items()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())


class Event(MappingResult):
    """One audit event: `ts`, `event` (registered, promoted, ...), `actor`, `reason`, details."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    @property
    def kind(self) -> str:
        return str(self.record.get("event"))

    @property
    def model_type(self) -> str | None:
        return self.record.get("model_type")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Event):
            return self.record == other.record
        return self.record == other

    def __repr__(self) -> str:
        return f"Event({self.record!r})"


class Events(list[Event]):
    """Audit events, with how many malformed lines of the log were skipped to read them (a
    view reads with `skip_invalid`). A page of them (`history_page`, newest first) also has
    `next`: the `before` of the next, older page (None: no older event matches)."""

    skipped: int = 0
    next: int | None = None
