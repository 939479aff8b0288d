"""Logplex on Redis: the log lines of every waka process, for `heroku logs` in any API process.

The same interface as the in-memory Logplex (emit, recent, subscribe, listen, subscribers,
forget), so callers do not change. Each app's lines are a Redis stream trimmed exactly to the
last 1,500 (XADD MAXLEN 1500; see redis_wire for the encoding): the buffer `heroku logs`
reads, which outlives any waka process, and the source `--tail` follows.

- emit() never touches the network: it validates the line and appends it to a bounded queue;
  one writer thread sends what has queued in pipelined batches. When Redis cannot be reached
  the batch is dropped and counted (a warning a minute at most), and the next batch tries
  again: a router or a dyno's pump never waits for, nor fails because of, Redis.
- `--tail`: one reader thread per process follows, with one blocking XREAD, the streams of
  every app that has a live feed here, plus `logplex:forgotten` (destroyed apps end their
  feeds) and this process's wake stream (a new feed's backlog is read at once rather than
  after the current XREAD times out). A feed's backlog is read by that thread too, up to the
  id it follows from, so no line is missed or repeated in between.
- Drains: listen() reads the streams of the apps `apps()` names through the consumer group
  `drains` (XREADGROUP ... NOACK), so with several worker processes each line reaches one of
  them: forwarded once, at most (a worker killed loses the lines it had queued).
- Order is arrival order at Redis: lines from several processes interleave as they arrive,
  and a line stamped earlier than one already stored is not moved before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from waka.logplex.lines import SOURCES, LogLine, matches, split_message
from waka.logplex.logplex import BUFFER_LINES, Listener, LogplexUnavailable
from waka.logplex.redis_wire import (
    APP_KEY,
    DRAIN_GROUP,
    FORGOTTEN_KEY,
    WAKE_KEY,
    app_key,
    decode,
    encode,
    entry_id,
    micros,
    newer,
)
from waka.logplex.subscription import QUEUE_SIZE, Subscription
from waka.redaction import redact_url

log = logging.getLogger("waka.logplex")

TTL = 7 * 24 * 3600  # Heroku's buffered lines expire after a week; an idle stream goes too
QUEUE_LINES = 100_000  # lines emitted and not yet written; past it the oldest are dropped
BATCH = 1000  # lines per pipeline, and per read
BLOCK_MS = 1000  # how long a reader's XREAD waits for new lines
WARN_EVERY = 60.0  # seconds between warnings that Redis is unreachable
CATCH_UP = 300_000  # ms: a drain group at most this far behind is resumed, older lines skipped
_FORGET = object()
NOT_A_URL = "WAKA_REDIS_URL must be a redis://, rediss:// or unix:// URL"

# Adds lines to an app's stream, each its own entry, trimmed exactly to the capacity; renews
# the stream's expiry. KEYS[1] the stream; ARGV: capacity, TTL, then the encoded lines.
APPEND = """
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'l', ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return #ARGV - 2
"""


class RedisLogplex:
    def __init__(
        self,
        url: str,
        capacity: int = BUFFER_LINES,
        queue_size: int = QUEUE_SIZE,
        queue_lines: int = QUEUE_LINES,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)  # the URL may hold a password: logs show this
        self.capacity = capacity
        self.queue_size = queue_size
        self.dropped = 0  # lines emitted that never reached Redis
        self.written = 0
        self._queue: deque[tuple[Any, ...]] = deque(maxlen=queue_lines)
        self._queue_lines = queue_lines
        try:
            self._redis = self._client()  # the writer's and request threads' (a thread pool)
        except ValueError:  # not a Redis URL (the URL is not repeated: it may hold a password)
            raise ValueError(NOT_A_URL) from None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._warned = 0.0
        self._process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # the writer
        self._writer: threading.Thread | None = None
        self._wake_writer = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        # --tail: per app, the feeds here and the entry id they follow from
        self._feeds: dict[str, list[Subscription]] = {}
        self._after: dict[str, str] = {}
        self._pending: list[tuple[Subscription, int, int | None]] = []
        self._tail: threading.Thread | None = None
        self._wake_tail = threading.Event()
        # drains
        self._listeners: tuple[tuple[Listener, Callable[[], Iterable[str]] | None], ...] = ()
        self._drain: threading.Thread | None = None

    def _client(self) -> redis.Redis:
        # One retry, at once: a pooled connection broken by a Redis restart reconnects; a
        # Redis that is down fails fast rather than after a back-off.
        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=BLOCK_MS / 1000 + 4,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )

    # --- emitting (any thread; never blocks) --------------------------------------------------

    def emit(
        self,
        app_id: str | UUID,
        source: str,
        dyno: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        """Add a message to the app's log, one line per line of it. Only queues it."""
        if source not in SOURCES:
            raise ValueError(f"log source must be one of {SOURCES}, not {source!r}")
        if not dyno:
            raise ValueError("a log line needs a dyno name (web.1, router, api, ...)")
        at_us = time.time_ns() // 1000 if at is None else micros(at)
        key, queue = APP_KEY + str(app_id), self._queue
        for text in split_message(message):
            if len(queue) >= self._queue_lines:
                self.dropped += 1  # the append pushes the oldest line out
            queue.append((key, at_us, source, dyno, text))
        if self._writer is None:
            self._start_writer()
        if not self._wake_writer.is_set():
            self._wake_writer.set()

    def forget(self, app_id: str | UUID) -> None:
        """The app is gone: its stream is deleted (after the lines queued before this), and
        every process's live feeds of it end."""
        self._queue.append((_FORGET, str(app_id)))
        if self._writer is None:
            self._start_writer()
        self._wake_writer.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line emitted so far was written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue or not self._idle.is_set():
            if time.monotonic() > deadline:
                return False
            self._wake_writer.set()
            time.sleep(0.005)
        return True

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = _thread(self._write_forever, "logplex-writer")

    def _write_forever(self) -> None:
        queue, delay = self._queue, 0.1
        while True:
            self._wake_writer.wait()
            self._wake_writer.clear()
            while queue:
                self._idle.clear()
                batch = [queue.popleft() for _ in range(min(len(queue), BATCH))]
                if self._write(batch):
                    delay = 0.1
                elif not self._closing.is_set():
                    self._closing.wait(delay)  # Redis is down: lines queue meanwhile
                    delay = min(delay * 2, 2.0)
                else:  # closing with Redis down: the rest is dropped at once
                    while queue:
                        self.dropped += queue.popleft()[0] is not _FORGET
            self._idle.set()
            if self._closing.is_set():
                return

    def _write(self, batch: list[tuple[Any, ...]]) -> bool:
        """One pipeline for the batch: per app, one EVAL of APPEND with all its lines (the
        client's work per line is then one argument, not one command and one reply)."""
        pipe = self._redis.pipeline(transaction=False)
        groups: dict[str, list[str]] = {}
        lines = 0
        for item in batch:
            if item[0] is _FORGET:
                key = app_key(item[1])
                if key in groups:  # its lines queued before the forget go first
                    self._append(pipe, key, groups.pop(key))
                pipe.execute_command("DEL", key)
                pipe.execute_command(
                    "XADD", FORGOTTEN_KEY, "MAXLEN", "~", "1000", "*", "app", item[1]
                )
                continue
            key, at_us, source, dyno, text = item
            payloads = groups.get(key)
            if payloads is None:
                payloads = groups[key] = []
            payloads.append(encode(at_us, source, dyno, text))
            lines += 1
        for key, payloads in groups.items():
            self._append(pipe, key, payloads)
        try:
            pipe.execute()
        except RedisError as error:
            self.dropped += lines
            self._warn(f"{lines} log lines dropped", error)
            return False
        finally:
            pipe.reset()
        if self._warned:
            log.warning("Logplex: Redis at %s is reachable again", self.shown)
            self._warned = 0.0
        self.written += lines
        return True

    def _append(self, pipe: Any, key: str, payloads: list[str]) -> None:
        pipe.execute_command("EVAL", APPEND, 1, key, self.capacity, TTL, *payloads)

    def _warn(self, what: str, error: Exception) -> None:
        now = time.monotonic()
        if not self._warned or now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "Logplex: Redis at %s unreachable (%s: %s); %s (%d dropped in all)",
                self.shown,
                type(error).__name__,
                error,
                what,
                self.dropped,
            )

    # --- reading (request threads) -------------------------------------------------------------

    def check(self) -> None:
        """Raise LogplexUnavailable unless Redis answers now."""
        try:
            self._redis.ping()
        except RedisError as error:
            raise _unavailable(error) from None

    def recent(
        self,
        app_id: str | UUID,
        lines: int = 100,
        source: str | None = None,
        dyno: str | None = None,
    ) -> list[LogLine]:
        """The newest `lines` matching lines, oldest first (a network call: not on a loop)."""
        if lines <= 0:
            return []
        app_id = str(app_id)
        count = lines if source is None and dyno is None else self.capacity
        try:
            entries = self._redis.xrevrange(app_key(app_id), count=count)
        except RedisError as error:
            raise _unavailable(error) from None
        picked = _decoded(app_id, reversed(entries), source, dyno)
        return picked[-lines:]

    # --- live feeds ------------------------------------------------------------------------

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
        """A feed of the app's new matching lines, as the in-memory Logplex's (see there).
        Its backlog arrives a moment later, read by this process's reader thread. Raises
        LogplexUnavailable when Redis cannot be reached (a network call: not on a loop)."""
        feed = Subscription(
            str(app_id),
            source,
            dyno,
            loop or asyncio.get_running_loop(),
            self._unsubscribe,
            self.queue_size,
        )
        try:  # wakes the reader if it waits in XREAD; and says whether Redis is there
            pipe = self._redis.pipeline(transaction=False)
            pipe.execute_command("XADD", WAKE_KEY + self._process, "MAXLEN", "1", "*", "w", "1")
            pipe.execute_command("EXPIRE", WAKE_KEY + self._process, 60)
            pipe.execute()
        except RedisError as error:
            raise _unavailable(error) from None
        with self._lock:
            self._pending.append((feed, backlog, after))
            if self._tail is None:
                self._tail = _thread(self._tail_forever, "logplex-tail")
        self._wake_tail.set()
        return feed

    def subscribers(self, app_id: str | UUID) -> int:
        """How many live feeds the app has in this process."""
        with self._lock:
            return len(self._feeds.get(str(app_id), ())) + sum(
                1 for feed, _, _ in self._pending if feed.app_id == str(app_id)
            )

    def _unsubscribe(self, feed: Subscription) -> None:
        with self._lock:
            self._pending = [p for p in self._pending if p[0] is not feed]
            feeds = self._feeds.get(feed.app_id)
            if feeds is not None and feed in feeds:
                feeds.remove(feed)
                if not feeds:
                    del self._feeds[feed.app_id]
                    del self._after[feed.app_id]

    def _tail_forever(self) -> None:
        client = self._client()
        forgotten: str | None = None
        woken = "0-0"
        while not self._closing.is_set():
            try:
                if forgotten is None:
                    forgotten = _newest(client, FORGOTTEN_KEY)
                self._start_feeds(client)
                with self._lock:
                    streams = {app_key(a): after for a, after in self._after.items()}
                if not streams:
                    self._wake_tail.wait(BLOCK_MS / 1000)
                    self._wake_tail.clear()
                    continue
                streams[FORGOTTEN_KEY] = forgotten
                streams[WAKE_KEY + self._process] = woken
                for key, entries in client.xread(streams, count=BATCH, block=BLOCK_MS) or ():
                    last = entries[-1][0]
                    if key == FORGOTTEN_KEY:
                        forgotten = last
                        self._end_feeds(e[1].get("app", "") for e in entries)
                    elif key.startswith(WAKE_KEY):
                        woken = last
                    else:
                        self._deliver(key[len(APP_KEY) :], entries)
            except RedisError as error:
                self._warn("`--tail` feeds wait", error)
                self._closing.wait(1.0)
        client.close()

    def _start_feeds(self, client: redis.Redis) -> None:
        """New feeds: their backlog up to the id their app is followed from, then following."""
        with self._lock:
            pending = list(self._pending)  # each stays there until it follows (or fails)
        for feed, backlog, after in pending:
            self._start_feed(client, feed, backlog, after)

    def _start_feed(
        self, client: redis.Redis, feed: Subscription, backlog: int, after: int | None
    ) -> None:
        app_id, key = feed.app_id, app_key(feed.app_id)
        with self._lock:
            upto = self._after.get(app_id)
        if upto is None:
            upto = _newest(client, key)
        entries: list[Any] = []
        if after is not None:
            entries = client.xrange(key, min=f"({entry_id(after)}", max=upto)
        elif backlog > 0:
            filtered = feed.source is not None or feed.dyno is not None
            count = self.capacity if filtered else backlog
            entries = list(reversed(client.xrevrange(key, max=upto, count=count)))
        lines = _decoded(app_id, entries, feed.source, feed.dyno)
        if after is None:
            lines = lines[-backlog:] if backlog > 0 else []
        feed.push_many(lines)
        with self._lock:
            self._pending = [p for p in self._pending if p[0] is not feed]
            if feed.closed:
                return
            self._feeds.setdefault(app_id, []).append(feed)
            self._after.setdefault(app_id, upto)

    def _deliver(self, app_id: str, entries: list[Any]) -> None:
        lines = _decoded(app_id, entries, None, None)
        with self._lock:
            if app_id not in self._after:
                return
            self._after[app_id] = newer(entries[-1][0], self._after[app_id])
            feeds = tuple(self._feeds.get(app_id, ()))
        for feed in feeds:
            feed.push_many([x for x in lines if feed.wants(x)])

    def _end_feeds(self, app_ids: Iterable[str]) -> None:
        for app_id in app_ids:
            with self._lock:
                feeds = self._feeds.pop(app_id, [])
                self._after.pop(app_id, None)
            for feed in feeds:
                feed.end()

    # --- drains ----------------------------------------------------------------------------

    def listen(
        self, listener: Listener, apps: Callable[[], Iterable[str]] | None = None
    ) -> Callable[[], None]:
        """Call `listener(line)` for every line of the apps `apps()` names (asked again on
        every read), from one reader thread. With several processes listening, each line
        goes to one of them (the consumer group `drains` on each app's stream)."""
        if apps is None:
            raise ValueError("the Redis Logplex reads the streams of named apps: give apps")
        entry = (listener, apps)
        with self._lock:
            self._listeners = (*self._listeners, entry)
            if self._drain is None:
                self._drain = _thread(self._drain_forever, "logplex-drains")

        def stop() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not entry)

        return stop

    def _drain_forever(self) -> None:
        client = self._client()
        joined: set[str] = set()
        consumer = self._process
        while not self._closing.is_set():
            wanted: set[str] = set()
            for _, apps in self._listeners:
                with contextlib.suppress(Exception):  # a broken `apps` names none
                    wanted.update(apps() if apps else ())
            try:
                for app_id in wanted - joined:
                    _join_group(client, app_key(app_id))
                joined = wanted
                if not joined:
                    self._closing.wait(BLOCK_MS / 1000)
                    continue
                replies = client.xreadgroup(
                    DRAIN_GROUP,
                    consumer,
                    {app_key(a): ">" for a in joined},
                    count=BATCH,
                    block=BLOCK_MS,
                    noack=True,
                )
            except ResponseError as error:  # NOGROUP: a stream was deleted (forgotten)
                if "NOGROUP" not in str(error):
                    log.warning("Logplex: reading lines for drains failed: %s", error)
                    self._closing.wait(1.0)
                joined = set()
                continue
            except RedisError as error:
                self._warn("drains wait", error)
                self._closing.wait(1.0)
                continue
            listeners = self._listeners
            for key, entries in replies or ():
                for line in _decoded(key[len(APP_KEY) :], entries, None, None):
                    for listener, _ in listeners:
                        try:
                            listener(line)
                        except Exception:  # a broken listener must not stop the others
                            log.exception("log listener %r failed", listener)
        with contextlib.suppress(RedisError):
            for app_id in joined:
                client.execute_command(
                    "XGROUP", "DELCONSUMER", app_key(app_id), DRAIN_GROUP, consumer
                )
        client.close()

    # --- lifecycle -------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to `timeout`; not waiting for a Redis that is down),
        then stop the threads."""
        self.flush(min(timeout, 0.5) if self._warned else timeout)
        self._closing.set()
        self._wake_writer.set()
        self._wake_tail.set()
        for thread in (self._writer, self._tail, self._drain):
            if thread is not None:
                thread.join(timeout)
        with contextlib.suppress(RedisError):
            self._redis.close()


def _thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _unavailable(error: Exception) -> LogplexUnavailable:
    return LogplexUnavailable(f"the log store (Redis) cannot be reached: {type(error).__name__}")


def _newest(client: redis.Redis, key: str) -> str:
    """The stream's newest entry id; `0-0` when it is empty or missing."""
    entries = client.xrevrange(key, count=1)
    return entries[0][0] if entries else "0-0"


def _decoded(
    app_id: str, entries: Iterable[Any], source: str | None, dyno: str | None
) -> list[LogLine]:
    lines = []
    for entry, fields in entries:
        line = decode(app_id, entry, fields)
        if line is not None and matches(line, source, dyno):
            lines.append(line)
    return lines


def _join_group(client: redis.Redis, key: str) -> None:
    """The drains group on the app's stream: made if missing, starting a little before now
    (a drain just added gets the lines emitted while the forwarder learnt of it); brought
    forward if it is far behind (no worker read it for a while: the drain was removed, or
    every worker was down) so a drain added later does not get old lines."""
    now = int(time.time() * 1000)
    try:
        client.xgroup_create(key, DRAIN_GROUP, id=f"{now - 2000}-0", mkstream=True)
        client.expire(key, TTL)  # a stream made here goes in time like the others
        return
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    for group in client.xinfo_groups(key):
        if group.get("name") == DRAIN_GROUP:
            last = str(group.get("last-delivered-id") or "0-0")
            if int(last.partition("-")[0]) < now - CATCH_UP:
                client.xgroup_setid(key, DRAIN_GROUP, id=f"{now - CATCH_UP}-0")
