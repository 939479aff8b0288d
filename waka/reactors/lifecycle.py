"""One reactor lifecycle: start, tick, wake, stop — for every reactor, owned by the
composition root.

A reactor is level-triggered: `tick()` does whatever the read models (or the ledger) say is
due, so a missed wake-up costs latency, never work. Each runs in a thread of its own, ticking
when the ledger says something it watches was saved (`topics`) and every `interval` seconds.
Before any reactor is woken, the read models are caught up, so a woken reactor sees the
events that woke it. A reactor whose work must be done by one process at a time names a
`lease`: only the holder ticks, and another process takes over when the holder dies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from waka.adapters.leases import Leases
from waka.adapters.ledger_notifications import Topics

log = logging.getLogger("waka.reactors")


class Reactor(Protocol):
    name: str
    interval: float  # seconds between ticks when nothing wakes it

    def tick(self) -> None: ...


def topics_of(*kinds: type) -> frozenset[str]:
    """The ledger topics of event classes, and of every event of aggregate classes."""
    from eventsourcing.domain import Aggregate, DomainEvent
    from eventsourcing.utils import get_topic

    found: set[str] = set()
    for kind in kinds:
        if issubclass(kind, Aggregate):
            found |= {
                get_topic(value)
                for value in vars(kind).values()
                if isinstance(value, type) and issubclass(value, DomainEvent)
            }
        else:
            found.add(get_topic(kind))
    return frozenset(found)


def watches(reactor: Any, topics: Topics) -> bool:
    """Does a save of `topics` concern the reactor? (No `topics` attribute: everything.)"""
    wanted = getattr(reactor, "topics", None)
    return topics is None or wanted is None or not wanted.isdisjoint(topics)


@dataclass
class _Running:
    reactor: Any
    lease: str | None
    wakeup: threading.Event = field(default_factory=threading.Event)  # the reactor's own, if any
    thread: threading.Thread | None = None
    leading: bool = False  # holds its lease (or needs none) and ticks


class Reactors:
    """The process's reactors and the one ledger follower that wakes them."""

    def __init__(self, leases: Leases, catch_up: Callable[[], Any]) -> None:
        self.leases = leases
        self.catch_up = catch_up
        self._running: list[_Running] = []
        self._stopping = threading.Event()

    def add(self, reactor: Any, lease: str | None = None) -> None:
        own = getattr(reactor, "wakeup", None)  # a reactor may wake itself (work it queued)
        self._running.append(_Running(reactor, lease, own or threading.Event()))

    def names(self) -> list[str]:
        return [r.reactor.name for r in self._running]

    def get(self, name: str) -> Any:
        for running in self._running:
            if running.reactor.name == name:
                return running.reactor
        raise KeyError(name)

    def saved(self, topics: Topics) -> None:
        """The ledger's notification: bring the read models up to date, let each reactor that
        watches these topics notice (`notice`, in this thread: cheap and immediate, such as
        routing a rename before the API answers), then wake it."""
        try:
            self.catch_up()  # the projector serialises catch-ups itself
        except Exception:
            log.exception("catching up the read models failed; the reactors' ticks will")
        for running in self._running:
            if not watches(running.reactor, topics):
                continue
            notice = getattr(running.reactor, "notice", None)
            if notice is not None and running.leading:
                try:
                    notice(topics)
                except Exception:
                    log.exception("%s: noticing saved events failed", running.reactor.name)
            running.wakeup.set()

    def leading(self, name: str) -> bool:
        """Does the named reactor tick in this process (it holds its lease, or needs none)?"""
        return any(r.leading for r in self._running if r.reactor.name == name)

    def wake(self, name: str) -> None:
        for running in self._running:
            if running.reactor.name == name:
                running.wakeup.set()

    def start(self) -> None:
        self._stopping.clear()
        for running in self._running:
            running.thread = threading.Thread(
                target=self._run, args=(running,), name=running.reactor.name, daemon=True
            )
            running.thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        for running in self._running:
            running.wakeup.set()
        for running in self._running:
            if running.thread is not None:
                running.thread.join(timeout)
                running.thread = None
            if running.lease and running.leading:
                self.leases.release(running.lease)
            running.leading = False
            close = getattr(running.reactor, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("%s: closing failed", running.reactor.name)

    def _run(self, running: _Running) -> None:
        reactor = running.reactor
        while not self._stopping.is_set():
            if self._may_tick(running):
                try:
                    reactor.tick()
                except Exception:
                    log.exception("%s: tick failed; trying again", reactor.name)
            running.wakeup.wait(timeout=reactor.interval)
            running.wakeup.clear()

    def _may_tick(self, running: _Running) -> bool:
        if running.lease is None:
            running.leading = True
            return True
        held = self.leases.hold(running.lease)
        if held != running.leading:
            running.leading = held
            log.info("%s: %s", running.reactor.name, "leading" if held else "standing by")
            takeover = getattr(running.reactor, "took_over" if held else "stood_down", None)
            if takeover is not None:
                takeover()
        return held
