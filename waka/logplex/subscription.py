"""A live feed of one app's new log lines, for asyncio code, fed from any thread.

Emitters (dyno pumps, the builder, the router) run in threads; readers (the SSE stream) run
on the event loop. The feed is a bounded deque guarded by a lock, and the emitting thread
wakes the loop with `call_soon_threadsafe`, but only once per batch rather than per line:
each call writes to the loop's self-pipe, and that would cost more than the line itself.
A slow reader loses its oldest unread lines (counted in `dropped`), never blocks an emitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType

from waka.logplex.lines import LogLine, matches

QUEUE_SIZE = 10_000


class Subscription:
    def __init__(
        self,
        app_id: str,
        source: str | None,
        dyno: str | None,
        loop: asyncio.AbstractEventLoop,
        on_close: Callable[[Subscription], None],
        maxsize: int = QUEUE_SIZE,
    ) -> None:
        self.app_id = app_id
        self.source = source
        self.dyno = dyno
        self.maxsize = maxsize
        self.dropped = 0
        self._loop = loop
        self._on_close = on_close
        self._lines: deque[LogLine] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._ready = asyncio.Event()
        self._closed = False

    def wants(self, line: LogLine) -> bool:
        return matches(line, self.source, self.dyno)

    # --- the emitting side (any thread) -----------------------------------------------------

    def push(self, line: LogLine) -> None:
        self.push_many((line,))

    def push_many(self, lines: Iterable[LogLine]) -> None:
        with self._lock:
            if self._closed:
                return
            for line in lines:
                if len(self._lines) >= self.maxsize:
                    self._lines.popleft()
                    self.dropped += 1
                self._lines.append(line)
            if self._wake_pending or not self._lines:
                return
            self._wake_pending = True
        self._wake_loop()

    def end(self) -> None:
        """End the feed from any thread (the app was destroyed): readers finish their lines."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake_loop()

    def _wake_loop(self) -> None:
        # A closed loop raises RuntimeError: nobody is reading any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    # --- the reading side (the event loop) --------------------------------------------------

    async def batch(self) -> list[LogLine]:
        """Every line waiting, at least one; [] once the feed has ended."""
        while True:
            with self._lock:
                if self._lines:
                    lines = list(self._lines)
                    self._lines.clear()
                    return lines
                if self._closed:
                    return []
                self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LogLine:
        with self._lock:
            if self._lines:
                return self._lines.popleft()
        lines = await self.batch()
        if not lines:
            raise StopAsyncIteration
        first, rest = lines[0], lines[1:]
        if rest:
            with self._lock:
                self._lines.extendleft(reversed(rest))
        return first

    def close(self) -> None:
        """Unsubscribe; idempotent."""
        self.end()
        self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
