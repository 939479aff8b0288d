"""The ledger's repository: aggregates kept in memory between commands, and brought up to date
from the store on every load, so a command never works on stale state.

Without it every command loads its aggregate from the latest snapshot plus up to 99 events
(decrypted, decompressed and applied one by one), the largest part of a write. With it a load is
one indexed query for the events after the cached version (the few written since, here or by
another process) and a copy. What is cached is only ever state loaded from the store, never an
aggregate a command changed. Correctness does not depend on the cache being fresh: a command on
a stale copy would save at a version that already exists, which is the optimistic-concurrency
conflict the ledger retries anyway; and the fast-forward on every load makes that rare.

eventsourcing has an aggregate cache too (AGGREGATE_CACHE_MAXSIZE), but it deep-copies the
cached aggregate *after* releasing the lock that guards its fast-forward, so two threads
loading one app can copy it while the other is applying events to it (a copy at version N
with part of N+1's state). Here the fast-forward and the copy happen under one lock.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from collections.abc import Iterable
from copy import deepcopy
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository, project_aggregate
from eventsourcing.persistence import EventStore

_STRIPES = 64  # locks per repository: a load waits only for loads of aggregates on its stripe


def apply_events(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's `project_aggregate` without its per-event
    `assert isinstance(event, CanMutateProtocol)`: a runtime Protocol check that took ~16 µs
    of every replayed event's ~32 on Python 3.11 (docs/performance.md)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class CachingRepository(Repository[UUID]):
    def __init__(
        self,
        event_store: EventStore[UUID],
        *,
        snapshot_store: EventStore[UUID] | None,
        maxsize: int,
    ) -> None:
        super().__init__(event_store, snapshot_store=snapshot_store)  # the library's cache off
        self.maxsize = maxsize
        self._cached: OrderedDict[UUID, Any] = OrderedDict()  # least recently used first
        self._cached_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def get(  # type: ignore[override]
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: Any = project_aggregate,
        **kwargs: Any,
    ) -> Any:
        if projector_func is project_aggregate:
            projector_func = apply_events
        if version is not None or self.maxsize <= 0:  # a past state: not cached
            return super().get(aggregate_id, version=version, projector_func=projector_func)
        with self._stripe(aggregate_id):
            # Taken out while it is brought up to date: if that fails it is simply not cached.
            with self._cached_lock:
                aggregate = self._cached.pop(aggregate_id, None)
            if aggregate is None:
                aggregate = self._reconstruct_aggregate(aggregate_id, None, projector_func)
            else:
                newer = self.event_store.get(originator_id=aggregate_id, gt=aggregate.version)
                aggregate = projector_func(aggregate, newer)
                if aggregate is None:
                    raise AggregateNotFoundError(aggregate_id)
            copy = _copy(aggregate)  # the caller's to change: the cached one stays as stored
            self._keep(aggregate_id, aggregate)
        return copy

    def forget(self) -> None:
        with self._cached_lock:
            self._cached.clear()

    def _stripe(self, aggregate_id: UUID) -> threading.Lock:
        return self._stripes[hash(aggregate_id) % _STRIPES]

    def _keep(self, aggregate_id: UUID, aggregate: Any) -> None:
        with self._cached_lock:
            self._cached[aggregate_id] = aggregate
            self._cached.move_to_end(aggregate_id)
            while len(self._cached) > self.maxsize:
                self._cached.popitem(last=False)


def _copy(aggregate: Any) -> Any:
    """A deep copy, through pickle: ~4x faster than copy.deepcopy for an App (36 against
    156 µs with 400 releases), and the same result for plain data."""
    try:
        return pickle.loads(pickle.dumps(aggregate, pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError):  # not plain data after all
        return deepcopy(aggregate)
