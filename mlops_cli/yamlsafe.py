"""YAML from users (--config-file) and registry.yaml, read with bounds.

Two passes over the text. The first walks the parser's event stream (iterative, so no depth
can overflow a stack) and refuses a nesting deeper than MAX_DEPTH and an alias expansion past
ALIAS_BUDGET nodes (a "billion laughs" file of 2.7 KB expands to 10^9 nodes: it fails after
the budget's worth of counting, in milliseconds). Only then is the document composed and
constructed (safe types only, the C loader when available), refusing duplicate mapping keys
with the key and its line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml import events

from .errors import MlopsError, ValidationError

MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences accepted (limits.YAML_DEPTH_MAX says the same)."""

ALIAS_BUDGET = 10_000
"""Nodes aliases may add when expanded, beyond those written (limits.YAML_ALIAS_BUDGET)."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Frame:
    __slots__ = ("anchor", "size")

    def __init__(self, anchor: str | None) -> None:
        self.anchor = anchor
        self.size = 1


def _check_events(loader: Any, source: str, error: type[MlopsError]) -> None:
    """Depth and alias-expansion bounds, from the event stream alone."""
    sizes: dict[str, int] = {}
    stack: list[_Frame] = []
    added = 0
    while True:
        event = loader.get_event()
        if isinstance(event, events.StreamEndEvent):
            return
        if isinstance(event, (events.MappingStartEvent, events.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise error(
                    f"{source}: nesting deeper than {MAX_DEPTH} levels at line {line}; "
                    "flatten the document"
                )
            stack.append(_Frame(event.anchor))
            continue
        if isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
            frame = stack.pop()
            size = frame.size
            if frame.anchor is not None:
                sizes[frame.anchor] = size
        elif isinstance(event, events.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, events.AliasEvent):
            size = sizes.get(event.anchor or "", 1)  # an unknown anchor is the composer's error
            added += size
            if added > ALIAS_BUDGET:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise error(
                    f"{source}: aliases expand past {ALIAS_BUDGET:,} nodes (at line {line}, "
                    f"*{event.anchor}); write the values out instead of aliasing them"
                )
        else:
            continue  # stream and document boundaries
        if stack:
            stack[-1].size += size


class _Constructor:
    """Builds the loader class whose mappings refuse duplicate keys."""

    @staticmethod
    def loader(source: str, error: type[MlopsError]) -> Any:
        class Loader(_Loader):  # type: ignore[misc]
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen: dict[Any, int] = {}
                if isinstance(node, yaml.MappingNode):
                    for key_node, _value in node.value:  # its own keys: a merge may override
                        if key_node.tag == _MERGE_TAG:
                            continue
                        key = self.construct_object(key_node, deep=True)
                        line = key_node.start_mark.line + 1
                        try:
                            first = seen.get(key)
                        except TypeError:
                            continue  # an unhashable key: the base class reports it
                        if first is not None:
                            raise error(
                                f"{source}: duplicate key {key!r} at line {line} "
                                f"(first at line {first}); keep one"
                            )
                        seen[key] = line
                return super().construct_mapping(node, deep=deep)

            def construct_timestamp(self, node: Any) -> Any:
                try:
                    return self.construct_yaml_timestamp(node)
                except ValueError:  # date-shaped but no date (month 13): the user's to fix
                    raise error(
                        f"{source}: {node.value!r} at line {node.start_mark.line + 1} is not a "
                        "valid date or time; fix it, or quote it to keep it as text"
                    ) from None

        Loader.add_constructor(_TIMESTAMP_TAG, Loader.construct_timestamp)
        return Loader


def _syntax_error(exc: yaml.YAMLError, source: str, hint: str, error: type[MlopsError]) -> Any:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return error(f"{source}: YAML error{where}: {problem}{hint}")
    return error(f"{source}: YAML error: {exc}{hint}")


def load_yaml(
    data: bytes | str,
    source: str,
    error: type[MlopsError] = ValidationError,
    hint: str = "",
) -> Any:
    """Parse one YAML document of safe types, bounded; raise `error` naming `source`.

    Refused: nesting deeper than MAX_DEPTH, aliases that expand past ALIAS_BUDGET nodes,
    duplicate mapping keys (naming key and line). A syntax error keeps the message shape
    "{source}: YAML error at line L, column C: problem" followed by `hint` (e.g. "; fix the
    file or restore it from backup"). Pass `error=StateError` for registry.yaml.
    """
    loader_cls = _Constructor.loader(source, error)
    try:
        checker = _Loader(data)
        try:
            _check_events(checker, source, error)
        finally:
            checker.dispose()
        loader = loader_cls(data)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source, hint, error) from None
    except RecursionError:  # not reachable within MAX_DEPTH; kept as a clean error anyway
        raise error(f"{source}: nesting too deep") from None
