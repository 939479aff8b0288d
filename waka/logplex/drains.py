"""Log drains: each app's log lines, forwarded as Logplex does to the drains in the read model.

- `http://` and `https://`: batches POSTed with `Content-Type: application/logplex-1`, a body
  of octet-counted syslog frames and the `Logplex-Msg-Count`, `Logplex-Frame-Id` and
  `Logplex-Drain-Token` headers. 2xx is delivered; 408, 429, 5xx and network errors are retried;
  any other status means the drain refuses the batch, which is dropped (and counted).
- `syslog://` (TCP) and `syslog+tls://` (TLS): the same frames on one long-lived connection.

Threads, not asyncio: every drain gets its own thread with blocking sockets, so a slow or dead
drain only ever delays itself, and the code stays plain. emit() only appends to the drain's
bounded queue (the oldest lines are dropped, and counted, when it is full) and sets an event.
A failing drain keeps its unsent batch and retries it with exponential back-off, reconnecting
each time. A refresher thread rereads the drains read model every few seconds (and `refresh()`
does it at once, after the API changed a drain), starting and stopping drain threads to match.
"""

from __future__ import annotations

import base64
import http.client
import logging
import select
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from waka.domain.app import App
from waka.logplex.lines import LogLine
from waka.logplex.logplex import Logplex
from waka.logplex.syslog import frames
from waka.projections.drains import all_drains
from waka.projections.store import ReadStore
from waka.reactors.lifecycle import topics_of
from waka.redaction import redact_url

if TYPE_CHECKING:
    from waka.logplex.redis_logplex import RedisLogplex

log = logging.getLogger("waka.drains")

USER_AGENT = "Logplex/waka"


@dataclass(frozen=True)
class Drain:
    id: str
    app_id: str
    url: str  # may hold credentials: never logged, `shown` is
    token: str

    @property
    def shown(self) -> str:
        """The URL as logs may show it: scheme, host and port only."""
        return redact_url(self.url)


@dataclass
class DrainStats:
    delivered: int = 0  # lines the drain accepted
    dropped: int = 0  # lines lost to a full queue
    rejected: int = 0  # lines in batches the drain refused (4xx)
    failures: int = 0  # failed attempts (each retried)
    last_error: str = ""


@dataclass(frozen=True)
class DrainOptions:
    queue_size: int = 10_000
    batch_size: int = 500
    timeout: float = 10.0  # connect and send
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    ssl_context: ssl.SSLContext | None = None  # None: the system's trusted CAs


class DrainUnavailable(Exception):
    """Could not deliver now; the batch is retried."""


class DrainRejected(Exception):
    """The drain answered that it will not take the batch; it is dropped."""


class Sender(Protocol):
    def send(self, lines: list[LogLine]) -> None: ...
    def close(self) -> None: ...


class HttpSender:
    def __init__(self, drain: Drain, options: DrainOptions) -> None:
        parts = urlsplit(drain.url)
        self.drain = drain
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.options = options
        self.auth = ""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.auth = "Basic " + base64.b64encode(pair.encode()).decode()
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                context = self.options.ssl_context or ssl.create_default_context()
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.options.timeout, context=context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.options.timeout
                )
        return self._conn

    def send(self, lines: list[LogLine]) -> None:
        headers = {
            "Content-Type": "application/logplex-1",
            "Logplex-Msg-Count": str(len(lines)),
            "Logplex-Frame-Id": uuid.uuid4().hex.upper(),
            "Logplex-Drain-Token": self.drain.token,
            "User-Agent": USER_AGENT,
        }
        if self.auth:
            headers["Authorization"] = self.auth
        try:
            conn = self._connection()
            conn.request("POST", self.path, body=frames(lines, "host"), headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise DrainUnavailable(_describe(error, self.drain)) from None
        if response.will_close:
            self.close()
        status = response.status
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise DrainUnavailable(f"HTTP {status}")
        raise DrainRejected(f"HTTP {status}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SyslogSender:
    def __init__(self, drain: Drain, options: DrainOptions) -> None:
        parts = urlsplit(drain.url)
        self.drain = drain
        self.tls = parts.scheme == "syslog+tls"
        self.host = parts.hostname or ""
        self.port = parts.port or 0
        self.options = options
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is not None and _peer_closed(self._sock):
            self.close()
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.options.timeout)
            if self.tls:
                context = self.options.ssl_context or ssl.create_default_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=self.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        return self._sock

    def send(self, lines: list[LogLine]) -> None:
        try:
            self._socket().sendall(frames(lines, self.drain.token))
        except OSError as error:  # ssl.SSLError is an OSError too
            self.close()
            raise DrainUnavailable(_describe(error, self.drain)) from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _describe(error: BaseException, drain: Drain) -> str:
    """An error as the log may show it: http.client quotes a bad path in its messages, and
    the path or the user info may be the drain's secret."""
    text = f"{type(error).__name__}: {error}"
    parts = urlsplit(drain.url)
    for secret in (drain.url, parts.path, parts.query, parts.username, parts.password):
        if secret and len(secret) > 1:
            text = text.replace(secret, "[redacted]")
    return text


def _peer_closed(sock: socket.socket) -> bool:
    """A syslog receiver never writes to us: a readable socket means it is closing. Checked
    before each write, so a drain that restarted does not swallow the next batch."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def sender_for(drain: Drain, options: DrainOptions) -> Sender:
    scheme = urlsplit(drain.url).scheme
    if scheme in ("http", "https"):
        return HttpSender(drain, options)
    if scheme in ("syslog", "syslog+tls"):
        return SyslogSender(drain, options)
    raise ValueError(f"unsupported drain URL scheme {scheme!r}")


class DrainWorker:
    """One drain's queue and the thread that empties it."""

    def __init__(self, drain: Drain, sender: Sender, options: DrainOptions) -> None:
        self.drain = drain
        self.sender = sender
        self.options = options
        self.stats = DrainStats()
        self._queue: deque[LogLine] = deque(maxlen=options.queue_size)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"drain-{drain.id[:8]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, line: LogLine) -> None:
        """From emit() under Logplex's lock, or from the Redis Logplex's one drains thread (so
        offers never race each other): never blocks."""
        if len(self._queue) == self._queue.maxlen:
            self.stats.dropped += 1  # the append below pushes the oldest line out
        self._queue.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[LogLine]:
        batch: list[LogLine] = []
        queue, limit = self._queue, self.options.batch_size
        while queue and len(batch) < limit:
            batch.append(queue.popleft())
        return batch

    def _run(self) -> None:
        delay, batch = self.options.backoff_min, []
        try:
            while not self._stopping.is_set():
                if not batch:
                    self._wake.clear()
                    batch = self._take()
                    if not batch:
                        self._wake.wait()
                        continue
                try:
                    self.sender.send(batch)
                except DrainRejected as error:
                    self.stats.rejected += len(batch)
                    self.stats.last_error = str(error)
                    log.warning(
                        "drain %s refused %d lines: %s", self.drain.shown, len(batch), error
                    )
                    batch = []
                except DrainUnavailable as error:
                    self.stats.failures += 1
                    self.stats.last_error = str(error)
                    log.info(
                        "drain %s unavailable (%s); retry in %.1fs", self.drain.shown, error, delay
                    )
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self.options.backoff_max)
                else:
                    self.stats.delivered += len(batch)
                    delay, batch = self.options.backoff_min, []
        finally:
            self.sender.close()


class DrainForwarder:
    """A reactor (waka.reactors.lifecycle) of every worker: it matches its drain threads to the
    drains read model when the ledger says drains changed (and every `interval`), and, once
    started, forwards the lines Logplex hands it. On Redis several workers share each drained
    app's stream through a consumer group, so each line is forwarded once."""

    name = "drains"
    topics = topics_of(App.DrainAdded, App.DrainRemoved, App.Destroyed)

    def __init__(
        self,
        logplex: Logplex | RedisLogplex,
        store: ReadStore,
        options: DrainOptions | None = None,
        refresh_interval: float = 2.0,
        make_sender: Callable[[Drain, DrainOptions], Sender] = sender_for,
    ) -> None:
        self.logplex = logplex
        self.store = store
        self.options = options or DrainOptions()
        self.interval = refresh_interval
        self.make_sender = make_sender
        self._workers: dict[str, DrainWorker] = {}
        self._by_app: dict[str, tuple[DrainWorker, ...]] = {}  # replaced whole, read lock-free
        self._lock = threading.Lock()
        self._running = False  # refresh() starts drain threads only between start and stop
        self._unlisten: Callable[[], None] | None = None

    def tick(self) -> None:
        if not self._running:
            self.start()
        else:
            self.refresh()

    def close(self) -> None:
        self.stop()

    def start(self) -> None:
        """Forward from now on: drain threads for the read model's drains, Logplex's lines."""
        self._running = True
        self.refresh()
        self._unlisten = self.logplex.listen(self._on_line, apps=self._drained_apps)

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        with self._lock:
            workers, self._workers, self._by_app = list(self._workers.values()), {}, {}
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(timeout)

    def refresh(self) -> None:
        """Match the drain threads to the read model now (a no-op unless started)."""
        if not self._running:
            return
        wanted = {
            r["id"]: Drain(id=r["id"], app_id=r["app_id"], url=r["url"], token=r["token"])
            for r in all_drains(self.store)
        }
        with self._lock:
            if not self._running:
                return
            for drain_id in [d for d in self._workers if d not in wanted]:
                self._workers.pop(drain_id).stop()
            for drain_id, drain in wanted.items():
                if drain_id not in self._workers:
                    try:
                        sender = self.make_sender(drain, self.options)
                    except ValueError as error:
                        log.warning("skipping drain %s: %s", drain.shown, error)
                        continue
                    worker = self._workers[drain_id] = DrainWorker(drain, sender, self.options)
                    worker.start()
            by_app: dict[str, list[DrainWorker]] = {}
            for worker in self._workers.values():
                by_app.setdefault(worker.drain.app_id, []).append(worker)
            self._by_app = {app_id: tuple(ws) for app_id, ws in by_app.items()}

    def stats(self) -> dict[str, DrainStats]:
        """Per drain id: lines delivered, dropped, refused; failed attempts."""
        with self._lock:
            return {drain_id: w.stats for drain_id, w in self._workers.items()}

    def _drained_apps(self) -> tuple[str, ...]:
        """The apps with drains: the only streams a Redis Logplex reads for us."""
        return tuple(self._by_app)

    def _on_line(self, line: LogLine) -> None:
        for worker in self._by_app.get(line.app_id, ()):
            worker.offer(line)
