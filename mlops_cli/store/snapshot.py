"""The registry as a process sees it between changes: validated once, kept current cheaply.

The per-request calls (`assign_variant`, `record_result`, `update_metrics`,
`add_production_sample`) route and record from a `Snapshot`, never reading or parsing the
registry themselves. A snapshot holds the state loaded at one *generation* of the registry (a
value that changes whenever the registry does: an fstat of the registry.yaml it was read
from, or a row version the writers bump) and checks that generation again at most every
`check_every_s` seconds:

- a change committed in this process is seen at once: the commit calls `invalidate()`, and
  every store of the same project in the process shares one snapshot (`shared`);
- a change made elsewhere is seen at the first access after the next check, so within
  `check_every_s` (plus the time of one load); a store that is told of changes (PostgreSQL's
  LISTEN/NOTIFY) calls `invalidate()` too, and the checks are then only its fallback.

Writes that need the current registry (promote, finalize, start) do not use a snapshot: they
read it fresh under the store's lock, as before.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ..state import RegistryState

Loader = Callable[[], tuple[Hashable, RegistryState]]
K = TypeVar("K")
V = TypeVar("V")


class Snapshot:
    """A validated registry state, reloaded when the registry's generation changes.

    `load()` reads and validates the registry, returning (generation, state); `generation()`
    returns the current generation cheaply. `clock` (seconds, monotonic) and `check_every_s`
    are injectable so tests can move time instead of sleeping. An error of a type in
    `keep_on` (the database is away) while a state is held keeps serving that state and
    tries again at the next check.
    """

    def __init__(
        self,
        load: Loader,
        generation: Callable[[], Hashable],
        check_every_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        keep_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._load = load
        self._generation = generation
        self.check_every_s = check_every_s
        self._clock = clock
        self._keep_on = keep_on
        self.on_close: Callable[[], None] | None = None  # stops what keeps it current
        self._state: RegistryState | None = None
        self._seen: Hashable = None  # the generation `_state` was loaded at
        self._next_check = 0.0
        self._epoch = 0  # bumped by invalidate()
        self._loaded_epoch = -1
        self._mutex = threading.Lock()
        self.loads = 0  # how many times the registry was read and validated (for tests, stats)

    def state(self) -> RegistryState:
        """The registry as of the last check (treat as read-only)."""
        state = self._state
        if state is not None and self._loaded_epoch == self._epoch:
            if self.check_every_s:
                if self._clock() < self._next_check:
                    return state
            elif self._generation() == self._seen:  # checked on every use (an fstat)
                return state
        return self._refresh()

    def checked(self) -> RegistryState:
        """The state, its generation compared now whatever `check_every_s`: for a read that
        must see every change committed anywhere (a transaction's, a command's)."""
        state = self._state
        if (
            state is None
            or self._loaded_epoch != self._epoch
            or self._generation() != self._seen
        ):
            self.invalidate()
            state = self._refresh()
        return state

    @property
    def generation(self) -> Hashable:
        """The generation the state held was loaded at."""
        return self._seen

    def current(self) -> RegistryState:
        """The state held now, without a check (a setting read on every append)."""
        return self._state if self._state is not None else self._refresh()

    def invalidate(self) -> None:
        """The registry changed (a commit here, or a notification): reload on the next use,
        whatever the generation says."""
        self._epoch += 1

    def _refresh(self) -> RegistryState:
        with self._mutex:
            now = self._clock()
            epoch = self._epoch  # an invalidation during the load below stays pending
            state = self._state
            if state is not None and self._loaded_epoch == epoch and now < self._next_check:
                return state  # another thread refreshed it meanwhile
            try:
                if (
                    state is None
                    or self._loaded_epoch != epoch
                    or self._generation() != self._seen
                ):
                    self._seen, state = self._load()
                    self._state = state
                    self.loads += 1
            except self._keep_on:
                if state is None:
                    raise
                self._seen = object()  # unknown: the next check that succeeds reloads
            self._loaded_epoch = epoch
            self._next_check = now + self.check_every_s
            return state


class Bound(Generic[K, V]):
    """Values a per-request call works out once from a registry state (a test's stream, a
    model type's router, a version's existence) and reuses while the snapshot holds that
    state: a change of the registry gives a new state, and they are worked out again."""

    __slots__ = ("_bound",)

    def __init__(self) -> None:
        self._bound: tuple[RegistryState | None, dict[K, V]] = (None, {})

    def of(self, state: RegistryState) -> dict[K, V]:
        """The values bound to `state` (empty when it is not the state they were for)."""
        bound = self._bound  # one attribute, so threads never pair a state with others' values
        if bound[0] is not state:
            bound = self._bound = (state, {})
        return bound[1]


_SHARED: dict[Hashable, Snapshot] = {}
_SHARED_MUTEX = threading.Lock()
forks = 0  # forks of this process so far: a store remembering its snapshot checks it


def shared(key: Hashable, make: Callable[[], Snapshot]) -> Snapshot:
    """The one snapshot of a project (`key`) in this process, made on first use."""
    found = _SHARED.get(key)
    if found is None:
        with _SHARED_MUTEX:
            found = _SHARED.get(key)
            if found is None:
                found = _SHARED[key] = make()
    return found


def invalidate(key: Hashable) -> None:
    """A commit in this process changed a project's registry: its snapshot, if any, reloads."""
    found = _SHARED.get(key)
    if found is not None:
        found.invalidate()


def forget(key: Hashable) -> None:
    """Drop a project's snapshot (its store closed), stopping what kept it current."""
    with _SHARED_MUTEX:
        found = _SHARED.pop(key, None)
    if found is not None and found.on_close is not None:
        found.on_close()


def _after_fork() -> None:
    # A child starts with no snapshot: a store that is notified of changes (a listener thread,
    # a connection) must not rely on a parent's, which the child does not have.
    global _SHARED_MUTEX, forks
    forks += 1
    _SHARED.clear()
    _SHARED_MUTEX = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
