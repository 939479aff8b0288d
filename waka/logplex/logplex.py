"""Logplex: each app's log lines from every source, in one time-ordered stream.

Dyno pumps, the builder and the router emit from their threads; the API reads on asyncio.
One lock guards every stream. Under it, emit() appends to the app's ring buffer (the last
1,500 lines, as on Heroku), hands the line to the app's live subscriptions and to listeners
(the drain forwarder). None of them may block: subscriptions and drains queue and drop their
oldest lines when full, so a slow reader never holds up a dyno.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from uuid import UUID

from waka.logplex.lines import SOURCES, LogLine, matches, split_message, utc
from waka.logplex.subscription import QUEUE_SIZE, Subscription

log = logging.getLogger("waka.logplex")

BUFFER_LINES = 1500

Listener = Callable[[LogLine], None]


class LogplexUnavailable(Exception):
    """The log store cannot be reached now (Redis is down): `heroku logs` says so."""


def _at(line: LogLine) -> datetime:
    return line.at


class _Stream:
    __slots__ = ("lines", "seq", "subscriptions")

    def __init__(self, capacity: int) -> None:
        self.lines: deque[LogLine] = deque(maxlen=capacity)
        self.seq = 0
        self.subscriptions: list[Subscription] = []

    def keep(self, line: LogLine) -> None:
        """Into the buffer in time order. Lines nearly always arrive in order; a late one
        (a dyno pump's timestamp from before a newer router line) is inserted in its place."""
        lines = self.lines
        if not lines or line.at >= lines[-1].at:
            lines.append(line)
            return
        if len(lines) == lines.maxlen:
            if line.at < lines[0].at:
                return  # older than everything kept: it would fall out at once
            lines.popleft()
        lines.insert(bisect.bisect_right(lines, line.at, key=_at), line)


class Logplex:
    def __init__(self, capacity: int = BUFFER_LINES, queue_size: int = QUEUE_SIZE) -> None:
        self.capacity = capacity
        self.queue_size = queue_size
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()

    def emit(
        self,
        app_id: str | UUID,
        source: str,
        dyno: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        """Add a message to the app's log, one line per line of it. Never blocks on readers."""
        if source not in SOURCES:
            raise ValueError(f"log source must be one of {SOURCES}, not {source!r}")
        if not dyno:
            raise ValueError("a log line needs a dyno name (web.1, router, api, ...)")
        app_id, moment = str(app_id), utc(at)
        with self._lock:
            stream = self._streams.get(app_id)
            if stream is None:
                stream = self._streams[app_id] = _Stream(self.capacity)
            for text in split_message(message):
                stream.seq += 1
                line = LogLine(app_id, moment, source, dyno, text, stream.seq)
                stream.keep(line)
                for subscription in stream.subscriptions:
                    if subscription.wants(line):
                        subscription.push(line)
                for listener in self._listeners:
                    try:
                        listener(line)
                    except Exception:  # a broken listener must not break the dynos' logging
                        log.exception("log listener %r failed", listener)

    def recent(
        self,
        app_id: str | UUID,
        lines: int = 100,
        source: str | None = None,
        dyno: str | None = None,
    ) -> list[LogLine]:
        """The newest `lines` matching lines, oldest first."""
        with self._lock:
            stream = self._streams.get(str(app_id))
            return self._select(stream, lines, source, dyno, None) if stream else []

    def subscribe(
        self,
        app_id: str | UUID,
        source: str | None = None,
        dyno: str | None = None,
        *,
        backlog: int = 0,
        after: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Subscription:
        """A feed of the app's new matching lines, for `async for`. It first holds the
        newest `backlog` buffered lines (or, with `after`, every buffered line that arrived
        after that seq: an SSE client resuming), taken together with the subscription so
        that no line is missed or repeated in between. Close it when done."""
        app_id = str(app_id)
        subscription = Subscription(
            app_id,
            source,
            dyno,
            loop or asyncio.get_running_loop(),
            self._unsubscribe,
            self.queue_size,
        )
        with self._lock:
            stream = self._streams.get(app_id)
            if stream is None:
                stream = self._streams[app_id] = _Stream(self.capacity)
            if backlog or after is not None:
                subscription.push_many(self._select(stream, backlog, source, dyno, after))
            stream.subscriptions.append(subscription)
        return subscription

    def listen(
        self, listener: Listener, apps: Callable[[], Iterable[str]] | None = None
    ) -> Callable[[], None]:
        """Call `listener(line)` for every line of every app, in the emitting thread and under
        Logplex's lock, so it must only queue the line. Returns the function to stop it.
        `apps` names the apps whose lines the listener needs (the Redis Logplex reads only
        those); here every line is in memory anyway, so it is not needed."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def stop() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return stop

    def check(self) -> None:
        """Raise LogplexUnavailable if lines cannot be read now (in memory they always can)."""

    def close(self) -> None:
        """Nothing to flush: the buffer is this process's memory."""

    def subscribers(self, app_id: str | UUID) -> int:
        """How many live feeds the app has (open `--tail` streams)."""
        with self._lock:
            stream = self._streams.get(str(app_id))
            return len(stream.subscriptions) if stream else 0

    def forget(self, app_id: str | UUID) -> None:
        """The app is gone: drop its buffer and end its live feeds."""
        with self._lock:
            stream = self._streams.pop(str(app_id), None)
        if stream is not None:
            for subscription in stream.subscriptions:
                subscription.end()

    def _select(
        self, stream: _Stream, count: int, source: str | None, dyno: str | None, after: int | None
    ) -> list[LogLine]:
        picked: list[LogLine] = []
        if after is not None:
            return [x for x in stream.lines if x.seq > after and matches(x, source, dyno)]
        if count <= 0:
            return picked
        for line in reversed(stream.lines):
            if matches(line, source, dyno):
                picked.append(line)
                if len(picked) >= count:
                    break
        picked.reverse()
        return picked

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            stream = self._streams.get(subscription.app_id)
            if stream is not None and subscription in stream.subscriptions:
                stream.subscriptions.remove(subscription)
