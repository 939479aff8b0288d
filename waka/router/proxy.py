"""The router: an HTTP/1.1 reverse proxy from `<app>.localhost` and custom domains to web dynos.

Per request: parse the head, look the host up, pick a random web dyno, reuse an idle connection
to it or open one (a refusing dyno is skipped for the next), forward the head with the
X-Forwarded-* fields, stream the body both ways as it comes, and log one Heroku router line.
Client connections are kept alive; requests on one are served one after the other.

Two ways through, for speed. The common request (no body or a small one that has arrived,
an app that is up, an idle connection to the chosen dyno, a response with a Content-Length that
arrives whole) is served in callbacks: `_dispatch` when the request arrives, `_dyno_data` when
the response does. No task wakes up for it: the two wake-ups a coroutine needs would cost as
much as parsing both heads. Any other request is served by a coroutine (`_slow`, and
`_stream_rest` for a response that is streamed), which then hands the connection back to the
callbacks.

Errors are Heroku's (see logline.py), each a 503 page unless the client is gone:
H10 crashed app or failed wake, H12 no response head within first_byte_timeout, H13 the dyno
closed without a byte of response, H14 no web dynos, H17 unreadable response head, H18 the dyno
closed in the middle of its response, H19 no dyno accepted the connection in time, H20 a
sleeping app did not wake in time, H21 every dyno refused the connection, H27 the client left
before its response was complete (logged with status 499), H80 maintenance mode.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from waka.router import pages, stream
from waka.router.conn import HIGH_WATER, ClientGone, Closed, Conn
from waka.router.http import (
    CHUNKED,
    MAX_HEAD,
    MAX_REQUEST_LINE,
    UNTIL_CLOSE,
    BadMessage,
    ChunkedScanner,
    Request,
    Response,
    oversized,
    parse_request,
    parse_response,
    relay_response,
    take_request,
    valid_host,
)
from waka.router.logline import (
    H10,
    H12,
    H13,
    H14,
    H17,
    H18,
    H19,
    H20,
    H21,
    H26,
    H27,
    H80,
    Code,
    info_lines,
    router_line,
)
from waka.router.pool import ConnectRefused, ConnectTimeout, Pool
from waka.router.stream import Failed, Sent
from waka.router.table import Route, RouteTable
from waka.router.waker import Waker

logger = logging.getLogger(__name__)
monotonic = time.monotonic

KEEPALIVE_TIMEOUT = 75.0  # idle client connections are closed
# A request head must be whole this long after its first byte came, else 408 and close
# (nginx's client_header_timeout): a client trickling a head (slowloris) holds no more.
HEAD_TIMEOUT = 30.0
ACME_CHALLENGE = b"/.well-known/acme-challenge/"
SWEEP_EVERY = 5.0  # how often idle connections are looked for
DOWN_FOR = 10.0  # seconds a dyno that refused or timed out a connect is tried last
# Log lines are handed to `log` together, this often (see Router._emit).
LOG_EVERY = 0.02


class FirstByteTimeout(Exception):
    """No response head from the dyno within first_byte_timeout (H12)."""


class _Exchange(Sent):
    """One request in flight: what serving it and its log line need."""

    __slots__ = (
        "body_taken",
        "client",
        "conn",
        "connect",
        "dyno",
        "fwd",
        "key",
        "req",
        "request_id",
        "route",
        "sent_at",
        "started",
    )

    def __init__(
        self,
        client: Conn,
        req: Request,
        route: Route,
        started: float,
        dyno: str = "",
        connect: float | None = None,  # None until a dyno accepted the connection
        conn: Conn | None = None,  # the dyno connection, while callbacks serve the request
        key: tuple[str, int] = ("", 0),  # its address
    ) -> None:
        self.sent = 0
        ip = client.ip  # type: ignore[attr-defined]
        self.client = client
        self.req = req
        self.route = route
        self.started = started
        self.request_id = req.request_id or b"%s%012x" % (_ID_PREFIX, next(_id_counter))
        self.fwd = req.forwarded_for + b", " + ip if req.forwarded_for else ip
        self.dyno = dyno
        self.connect = connect
        self.conn = conn
        self.key = key
        self.body_taken = False  # some of the request body went to a dyno
        self.sent_at = 0.0


class _Batch:
    """An app's log lines waiting to be handed to `log`: lines made, then the values of the
    info lines to make (logline.INFO_FIELDS each), which come after them."""

    __slots__ = ("lines", "rows")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.rows: list[bytes | int | float] = []


class _Client(Conn):
    """A client connection: a Conn that knows where it came from."""

    # ip: the client's, as bytes; port: the router's it connected to; proto: b"https" on the
    # TLS port, else b"http"; forwarded: the X-Forwarded-* fields for a request without
    # X-Forwarded-For of its own, up to the request id's value (the same for each request on
    # the connection: made once); scanned: how much of the buffer is known to hold no end of
    # a head; head_since: when the first byte of the head being waited for came (monotonic),
    # 0.0 for none.
    __slots__ = ("forwarded", "head_since", "ip", "port", "proto", "scanned")


class Router:
    """`log(app_id, text)` gets the router's log lines of an app: one, or several separated by
    newlines (as Logplex's emit takes them), within `log_every` seconds of their requests' end.
    `wake(app_id)` wakes a sleeping app (returns once it is routed)."""

    def __init__(
        self,
        table: RouteTable,
        *,
        log: Callable[[str, str], None],
        wake: Callable[[str], Awaitable[None]] | None = None,
        first_byte_timeout: float = 30.0,
        wake_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        head_timeout: float = HEAD_TIMEOUT,
        log_every: float = LOG_EVERY,
    ) -> None:
        self.table = table
        self.log = log
        self.log_every = log_every  # 0: at the end of the event loop's turn
        self.first_byte_timeout = first_byte_timeout
        self.connect_timeout = connect_timeout
        self.keepalive_timeout = KEEPALIVE_TIMEOUT
        self.head_timeout = head_timeout
        self.last_request: dict[str, float] = {}  # app_id -> time.monotonic() of its last request
        self.port = 0  # the bound port, once started
        self.tls_port = 0  # the HTTPS port, once started with TLS
        # ACME HTTP-01 answers (waka.adapters.acme.Challenges), served for any host name.
        self.challenges: Any = None
        self._waker = Waker(wake, wake_timeout) if wake is not None else None
        self._pool = Pool()
        # Dyno address -> until when it goes last: it failed a connect (its host lost, and no
        # dyno manager to say so yet, or ever while a Swarm has no manager).
        self._down: dict[tuple[str, int], float] = {}
        self._servers: list[asyncio.Server] = []
        self._clients: set[Conn] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # on start
        # Log lines not yet handed to `log`, per app (see _emit).
        self._batches: dict[str, _Batch] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        tls_port: int = 0,
        tls: ssl.SSLContext | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        """Serve until cancelled; HTTPS too on `tls_port` with the `tls` context. With
        `reuse_port`, other router processes may listen on the same ports (SO_REUSEPORT): the
        kernel spreads new connections over them."""
        await self.start(host, port, reuse_port=reuse_port)
        if tls is not None:
            try:
                await self.start_tls(host, tls_port, tls, reuse_port=reuse_port)
            except BaseException:
                await self.close()
                raise
        try:
            await asyncio.Future()
        finally:
            await self.close()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen (on 127.0.0.1 and ::1 for "localhost", as `waka up` binds) and return the port,
        which is the chosen one when `port` is 0. `reuse_port`: see serve()."""
        loop = self._loop = asyncio.get_running_loop()
        hosts = ["127.0.0.1", "::1"] if host == "localhost" else [host]
        for address in hosts:
            try:
                server = await loop.create_server(
                    self._protocol,
                    address,
                    port,
                    reuse_address=True,
                    reuse_port=reuse_port or None,
                    backlog=1024,
                )
            except OSError:
                if address == "::1":  # no IPv6 loopback on this machine: IPv4 is enough
                    continue
                await self.close()
                raise
            self._servers.append(server)
            port = port or server.sockets[0].getsockname()[1]
        self.port = port
        self._sweeper = loop.create_task(self._sweep())
        return port

    async def start_tls(
        self, host: str, port: int, context: ssl.SSLContext, *, reuse_port: bool = False
    ) -> int:
        """Listen for HTTPS too (after `start`): TLS ends here and the request goes on as on
        the plain port, with X-Forwarded-Proto: https. Returns the port (chosen when 0)."""
        hosts = ["127.0.0.1", "::1"] if host == "localhost" else [host]
        for address in hosts:
            try:
                server = await self._loop.create_server(
                    self._protocol,
                    address,
                    port,
                    reuse_address=True,
                    reuse_port=reuse_port or None,
                    backlog=1024,
                    ssl=context,
                    ssl_handshake_timeout=HEAD_TIMEOUT,
                )
            except OSError:
                if address == "::1":
                    continue
                raise
            self._servers.append(server)
            port = port or server.sockets[0].getsockname()[1]
        self.tls_port = port
        return port

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._waker is not None:
            self._waker.cancel()
        tasks = []
        for client in list(self._clients):
            client.on_lost = None
            client.close()
            if client.task is not None:
                client.task.cancel()
                tasks.append(client.task)
            if client.peer is not None:
                client.peer.exchange = client.peer.on_lost = None
                client.peer.abort()
        self._clients.clear()
        self._pool.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_lines()

    def _protocol(self) -> Conn:
        client = _Client(self._loop)
        client.scanned = 0
        client.head_since = 0.0
        client.on_made = self._accepted
        client.on_data = self._dispatch
        client.on_lost = self._client_lost
        return client

    def _accepted(self, client: Conn) -> None:
        transport = client.transport
        peer = transport.get_extra_info("peername")
        c: Any = client
        c.ip = (peer[0] if peer else "").encode()
        c.proto = b"https" if transport.get_extra_info("sslcontext") else b"http"
        c.port = transport.get_extra_info("sockname")[1]
        c.forwarded = _forwarded(c.ip, c.proto, c.port)
        client.idle_since = monotonic()
        self._clients.add(client)

    async def _sweep(self) -> None:
        """First-byte deadlines (H12) are checked here, a tenth of the timeout apart, rather
        than with a timer per request; idle connections, and heads unended after head_timeout,
        every SWEEP_EVERY (or a quarter of head_timeout, when that is shorter)."""
        idle_every = min(SWEEP_EVERY, self.head_timeout / 4)
        tick = min(1.0, idle_every, max(0.01, self.first_byte_timeout / 10))
        next_idle_sweep = monotonic() + idle_every
        while True:
            await asyncio.sleep(tick)
            now = monotonic()
            for client in list(self._clients):
                dyno = client.peer
                if dyno is not None and 0 < dyno.deadline <= now:
                    dyno.deadline = 0.0
                    if client.exchange is not None:
                        self._fast_fail(client.exchange, H12)
                    else:
                        dyno.interrupt(FirstByteTimeout())
            if now >= next_idle_sweep:
                next_idle_sweep = now + idle_every
                for client in list(self._clients):
                    idle = client.idle_since
                    if idle is None or client.task is not None or client.exchange is not None:
                        continue
                    begun = client.head_since  # type: ignore[attr-defined]
                    if client.buf and begun and now - begun > self.head_timeout:
                        self._reject(client, 408)  # a head begun long ago and still unended
                    elif now - idle > self.keepalive_timeout:
                        client.close()
                self._pool.prune(now)
                for key in [k for k, until in self._down.items() if until <= now]:
                    del self._down[key]  # a dyno gone for good is not remembered

    # --- callbacks: the common request ----------------------------------------------------------

    def _dispatch(self, client: Conn) -> None:
        """Serve the requests waiting on an idle client connection (its on_data callback)."""
        while client.exchange is None and client.task is None and not client.eof:
            buf = client.buf
            # Searched from where the last search stopped: a head that trickles in a byte at
            # a time (slowloris) must not cost a scan of all of it per byte.
            scanned = client.scanned  # type: ignore[attr-defined]
            simple = take_request(buf, scanned, MAX_REQUEST_LINE)
            if simple is False:  # no head has ended yet
                if len(buf) > MAX_REQUEST_LINE and (status := oversized(buf, complete=False)):
                    self._reject(client, status)
                    return
                client.scanned = max(0, len(buf) - 3)  # type: ignore[attr-defined]
                if client.idle_since is None:
                    client.idle_since = monotonic()
                if buf and not client.head_since:  # type: ignore[attr-defined]
                    client.head_since = monotonic()  # type: ignore[attr-defined]
                client.consumed()
                return
            client.scanned = client.head_since = 0  # type: ignore[attr-defined]
            if simple is not None:  # the commonest head, taken from the buffer
                client.idle_since = None
                started = monotonic()
                req = Request(*simple)
            else:
                end = buf.find(b"\r\n\r\n", scanned)
                head = bytes(buf[: end + 2])  # each line with its CRLF, without the blank line
                del buf[: end + 4]
                if head[0] == 13:  # "\r": RFC 9112 2.2, empty lines before a request are ignored
                    head = head.lstrip(b"\r\n")
                    if not head:
                        continue
                if len(head) > MAX_REQUEST_LINE and (status := oversized(head)):
                    self._reject(client, status)  # never forwarded, however it arrived
                    return
                client.idle_since = None
                started = monotonic()
                try:
                    req = parse_request(head)
                except BadMessage as error:
                    self._reject(client, error.status)
                    return
            if self.challenges is not None and req.target.startswith(ACME_CHALLENGE):
                answer = self.challenges.answer(req.target)
                if answer is not None:
                    if not self._answer(client, req, answer):
                        self._end(client, req)
                        return
                    continue
            route = self.table.lookup(req.host)
            if route is None:
                if not valid_host(req.host):
                    self._reject(client, 400)
                    return
                if not self._page(client, req, 404, pages.NO_SUCH_APP):
                    self._end(client, req)
                    return
                continue
            backends = route.backends
            if (
                backends
                and not (route.sleeping or route.maintenance or route.crashed)
                and 0 <= req.body <= len(buf)
                and not req.upgrade
            ):
                count = len(backends)
                backend = backends[int(random.random() * count)] if count > 1 else backends[0]
                key = (backend.host, backend.port)
                conn = self._pool.get(key)
                if conn is not None:
                    self.last_request[route.app_id] = started
                    x = _Exchange(client, req, route, started, backend.dyno, 0.0, conn, key)
                    if req.forwarded_for:
                        head = _forward_head(req, x)
                    else:  # (_forward_head, inlined: neither chunked nor an upgrade here)
                        head = b"%s %s HTTP/1.1\r\n%s%s%s\r\nX-Request-Start: %d\r\n\r\n" % (
                            req.method,
                            req.target,
                            req.fields,
                            client.forwarded,  # type: ignore[attr-defined]
                            x.request_id,
                            time.time() * 1000,
                        )
                    if req.body:
                        x.body_taken = True
                        head += client.take(req.body)
                    conn.transport.write(head)
                    x.sent_at = started  # (a few µs ago: parsing and routing)
                    conn.deadline = started + self.first_byte_timeout
                    conn.exchange = client.exchange = x
                    client.peer = conn
                    return
            client.task = self._loop.create_task(self._slow(client, req, route, started))

    def _dyno_data(self, conn: Conn) -> None:
        """The response to a request served by callbacks (a dyno connection's on_data)."""
        x = conn.exchange
        if x is None:  # idle in the pool (Pool.get drops it), or a coroutine reads it
            return
        req = x.req
        keep = req.keep_alive
        # The commonest response, whole, taken from the buffer ready for the client. Only
        # below HIGH_WATER: then reading from the dyno was not paused (see Conn.take).
        relayed = (
            None
            if req.http10
            else relay_response(conn.buf, req.method == b"HEAD", keep, HIGH_WATER)
        )
        if relayed is not None:
            status, out, dyno_keep = relayed
            conn.deadline = 0.0
        else:
            buf = conn.buf
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._fast_fail(x, H17)
                    return
                head = bytes(buf[: end + 2])
                del buf[: end + 4]
                if head[9:10] != b"1" or head[9:12] == b"101":
                    break  # other 1xx are skipped (none is expected: no Expect, no Upgrade here)
            conn.deadline = 0.0
            try:
                resp = parse_response(head, req.method)
            except BadMessage:
                self._fast_fail(x, H17)
                return
            if resp.status == 101:  # switching protocols that nobody asked for
                self._fast_fail(x, H17)
                return
            length = resp.body
            if length < 0 or len(conn.buf) < length:  # the rest is streamed by a coroutine
                out, keep, rechunk = _response_head_out(req, resp, None)
                x.client.transport.write(out)
                x.sent = len(out)
                conn.exchange = x.client.exchange = None
                x.client.task = self._loop.create_task(
                    self._stream_rest(x, conn, resp, keep, rechunk)
                )
                return
            if req.http10:
                out, keep, _ = _response_head_out(req, resp, None)
            else:
                out = resp.status_line + resp.fields
                out += b"\r\n" if keep else b"Connection: close\r\n\r\n"
            if length:
                out += conn.take(length)
            status, dyno_keep = resp.status, resp.keep_alive
        client = x.client
        client.transport.write(out)
        x.sent = sent = len(out)
        now = monotonic()
        batch = self._batches.get(x.route.app_id)
        if batch is None:
            batch = self._batch(x.route.app_id)
        batch.rows += (  # its info line, made with the batch's (see _emit)
            req.method,
            req.target,
            req.host,
            x.request_id,
            x.fwd,
            x.dyno.encode(),
            0.5,  # connect: 0 ms, the connection was there
            (now - x.sent_at) * 1000 + 0.5,
            status,
            sent,
        )
        conn.exchange = client.exchange = client.peer = None
        if dyno_keep and not conn.buf:
            self._pool.put(x.key, conn, now)
        else:
            conn.abort()
        if keep and not client.buf and not client.eof:
            client.idle_since = now  # the usual: nothing more yet, wait for it
        else:
            self._finish(client, keep, req)

    def _dyno_lost(self, conn: Conn) -> None:
        """A dyno connection closed (its on_lost): fails the request callbacks serve on it."""
        x = conn.exchange
        if x is None:
            return
        if conn.buf:
            self._fast_fail(x, H18)  # in the middle of the response head
        elif x.body_taken:
            self._fast_fail(x, H13)
        else:  # an idle connection the dyno had closed meanwhile: retry on a new one
            client = x.client
            conn.exchange = client.exchange = client.peer = None
            client.task = self._loop.create_task(self._retry(x))

    def _client_lost(self, client: Conn) -> None:
        """A client connection closed (its on_lost)."""
        if client.exchange is not None:
            self._fast_fail(client.exchange, H27)
        elif client.peer is not None:  # a coroutine serves it: whatever it awaits must end
            client.peer.interrupt(ClientGone())
        if client.task is None:
            self._clients.discard(client)

    def _fast_fail(self, x: _Exchange, code: Code) -> None:
        conn, client = x.conn, x.client
        if conn is not None:
            conn.exchange = None
            conn.deadline = 0.0
            conn.abort()
        client.exchange = client.peer = None
        self._finish(client, self._fail(client, x, code), x.req)

    def _finish(self, client: Conn, keep: bool, req: Request) -> None:
        """After a response: serve the next request on the connection, or end it."""
        if keep and not client.eof:
            self._dispatch(client)
        else:
            self._end(client, req)

    def _end(self, client: Conn, req: Request | None) -> None:
        if req is not None and req.body and not client.eof:
            # The client may still be sending a body nobody reads.
            client.on_data = None
            client.task = self._loop.create_task(self._linger(client))
        else:
            client.close()
            self._clients.discard(client)

    async def _linger(self, client: Conn) -> None:
        try:
            await stream.linger(client)
        finally:
            client.task = None
            self._clients.discard(client)

    def _reject(self, client: Conn, status: int) -> None:
        client.transport.write(pages.response(status, pages.BAD_REQUEST, close=True))
        client.close()
        self._clients.discard(client)

    # --- answers of the router's own ------------------------------------------------------------

    @staticmethod
    def _page(
        client: Conn, req: Request, status: int, page: bytes, body_taken: bool = False
    ) -> bool:
        # A body not yet read is skipped when it has arrived whole, else the connection ends.
        keep = req.keep_alive and not body_taken and stream.skip_body(client, req)
        if not client.eof:
            client.transport.write(
                pages.response(status, page, head_only=req.method == b"HEAD", close=not keep)
            )
        return keep

    @staticmethod
    def _answer(client: Conn, req: Request, body: bytes) -> bool:
        """An ACME challenge's answer (text/plain, 200); whether the connection goes on."""
        keep = req.keep_alive and stream.skip_body(client, req)
        if not client.eof:
            client.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                % (len(body), b"" if keep else b"Connection: close\r\n", body)
            )
        return keep

    def _fail(
        self, client: Conn, x: _Exchange, code: Code, page: bytes = pages.APPLICATION_ERROR
    ) -> bool:
        """Answer with an error page (unless the client is gone) and log the error line."""
        if code is H27 or client.eof:
            status, keep, code = 499, False, H27
        elif x.sent:  # the dyno's head has gone out already: all the client can get is a close
            status, keep = 503, False
        elif code is H26:
            status, keep = 400, self._page(client, x.req, 400, pages.BAD_REQUEST, True)
        else:
            status, keep = 503, self._page(client, x.req, 503, page, x.body_taken)
        reached = x.connect is not None
        self._log(x, status, code, service=monotonic() - x.started if reached else None)
        return keep

    def _log(
        self, x: _Exchange, status: int, code: Code | None = None, service: float | None = None
    ) -> None:
        req = x.req
        reached = x.connect is not None
        if code is None and reached and service is not None:
            batch = self._batches.get(x.route.app_id)
            if batch is None:
                batch = self._batch(x.route.app_id)
            batch.rows += (
                req.method,
                req.target,
                req.host,
                x.request_id,
                x.fwd,
                x.dyno.encode(),
                x.connect * 1000 + 0.5,  # type: ignore[operator]
                service * 1000 + 0.5,
                status,
                x.sent,
            )
        else:
            self._emit(x.route.app_id, self._line(x, status, code, service))

    def _emit(self, app_id: str, line: str) -> None:
        """Log a line within log_every seconds, with the others of that time: `log` gets each
        app's lines as one text, a line each (Logplex's emit stamps them when it gets them, at
        most log_every after their requests ended). One emit per app per 20 ms instead of one
        per request: the in-memory Logplex takes a lock and a timestamp per call, and the one on
        Redis wakes its writer thread, whose handoffs of the GIL with this loop cost more than
        the line (with a call per turn of the loop, a third of the router's CPU per request;
        see docs/performance.md). The info line of a request a dyno answered, the usual one,
        is not made here: its values join the batch's `rows`, and the lines of all of them are
        made at once when the batch is handed on (logline.info_lines)."""
        batch = self._batches.get(app_id)
        if batch is None:
            batch = self._batch(app_id)
        elif batch.rows:  # the lines before this one first, in their order
            batch.lines.append(info_lines(batch.rows))
            batch.rows = []
        batch.lines.append(line)

    def _batch(self, app_id: str) -> _Batch:
        if not self._batches:
            if self.log_every > 0:
                self._loop.call_later(self.log_every, self._flush_lines)
            else:
                self._loop.call_soon(self._flush_lines)
        batch = self._batches[app_id] = _Batch()
        return batch

    def _flush_lines(self) -> None:
        batches, self._batches = self._batches, {}
        for app_id, batch in batches.items():
            try:
                lines = batch.lines
                if batch.rows:
                    lines.append(info_lines(batch.rows))
                self.log(app_id, lines[0] if len(lines) == 1 else "\n".join(lines))
            except Exception:
                logger.exception("router: the log callback failed")

    @staticmethod
    def _line(x: _Exchange, status: int, code: Code | None, service: float | None) -> str:
        req = x.req
        reached = x.connect is not None
        return router_line(
            req.method,
            req.target,
            req.host,
            x.request_id,
            x.fwd,
            status,
            x.dyno.encode(),
            x.connect,
            service,
            x.sent if reached else None,
            code,
        )

    # --- coroutines: everything else ------------------------------------------------------------

    async def _slow(self, client: Conn, req: Request, route: Route, started: float) -> None:
        """Serve a request the callbacks could not, then give the connection back to them."""
        keep = False
        try:
            keep = await self._exchange(client, req, route, started)
        except (Closed, ClientGone, ConnectionError):
            pass
        except Exception:
            logger.exception("router: unexpected error serving a request")
        client.task = None
        client.peer = None
        self._finish(client, keep, req)

    async def _retry(self, x: _Exchange) -> None:
        """Callbacks found their pooled connection closed: serve the request from scratch."""
        client = x.client
        keep = False
        try:
            keep = await self._proxy(client, x)
        except Failed as failure:
            keep = self._fail(client, x, failure.code)
        except (Closed, ClientGone, ConnectionError):
            pass
        except Exception:
            logger.exception("router: unexpected error serving a request")
        client.task = None
        client.peer = None
        self._finish(client, keep, x.req)

    async def _exchange(self, client: Conn, req: Request, route: Route, started: float) -> bool:
        """Serve one request; True when the client connection can carry the next one."""
        self.last_request[route.app_id] = started
        x = _Exchange(client, req, route, started)
        if req.body == CHUNKED:  # what has come of the body already must be well framed
            try:
                ChunkedScanner().scan(client.buf, [])
            except BadMessage:
                return self._fail(client, x, H26)
        if route.sleeping and not route.maintenance:
            code = await self._waker.wake(route.app_id) if self._waker is not None else H14
            if client.eof:
                return self._fail(client, x, H27)
            if code is not None:
                return self._fail(client, x, code)
            woken = self.table.get(route.app_id)
            if woken is None:  # the app went away meanwhile
                return self._page(client, req, 404, pages.NO_SUCH_APP)
            x.route = route = woken
            if route.sleeping:
                return self._fail(client, x, H20)
        if route.maintenance:
            return self._fail(client, x, H80, pages.MAINTENANCE)
        if route.crashed:
            return self._fail(client, x, H10)
        if not route.backends:
            return self._fail(client, x, H14)
        try:
            return await self._proxy(client, x)
        except Failed as failure:
            return self._fail(client, x, failure.code)

    async def _proxy(self, client: Conn, x: _Exchange) -> bool:
        req = x.req
        head = _forward_head(req, x)
        conn, reused, key = await self._connect(x)
        client.peer = conn  # the client leaving interrupts waits on the dyno (H27)
        upload: asyncio.Task[bool] | None = None
        try:
            if client.eof:
                raise ClientGone()
            sent_at = x.sent_at = monotonic()
            if req.body == 0:
                conn.transport.write(head)
            else:
                x.body_taken = True
                try:
                    upload = self._send(client, conn, req, head)
                except BadMessage:  # a bad chunk, found before anything went to the dyno
                    raise Failed(H26) from None
            # The response head. The sweeper interrupts the wait with FirstByteTimeout once
            # the deadline is past (H12); 1xx answers other than 101 are skipped.
            conn.deadline = sent_at + self.first_byte_timeout
            buf = conn.buf
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    resp_head = bytes(buf[: end + 2])
                    del buf[: end + 4]
                    if resp_head[9:10] != b"1" or resp_head[9:12] == b"101":
                        break
                    continue  # 100 Continue (the router answered it) or 103 Early Hints
                if conn.eof:
                    if buf:
                        raise Failed(H18)
                    if not reused or req.body:
                        raise Failed(H13)
                    # The pooled connection had been closed by the dyno: try a new one.
                    conn.abort()
                    conn = client.peer = await self._connect_to(x, key)
                    conn.transport.write(head)
                    conn.deadline = sent_at + self.first_byte_timeout
                    reused = False
                elif len(buf) > MAX_HEAD:
                    raise Failed(H17)
                else:
                    await conn.more()
                buf = conn.buf
            conn.deadline = 0.0
            try:
                resp = parse_response(resp_head, req.method)
            except BadMessage:
                raise Failed(H17) from None
            if resp.status == 101:
                if not req.upgrade:
                    raise Failed(H17)
                return await self._tunnel(client, conn, x, resp)
            out, keep, rechunk = _response_head_out(req, resp, upload)
            length = resp.body
            if length >= 0 and len(conn.buf) >= length:  # the usual small response: one write
                data = conn.take(length) if length else b""
                client.transport.write(out + data)
                x.sent = len(out) + len(data)
            else:
                client.transport.write(out)
                x.sent = len(out)
                await stream.body(conn, client, x, length, req.http10, rechunk)
            now = monotonic()
            self._log(x, resp.status, service=now - sent_at)
            if upload is not None and not (upload.done() and upload.result()):
                return False  # the dyno answered before the whole body was sent: stop here
            if resp.keep_alive and not conn.buf:
                self._pool.put(key, conn, now)
                conn = None  # type: ignore[assignment]
            return keep
        except (ClientGone, Closed):
            if client.eof:
                raise Failed(H27) from None
            raise Failed(H13) from None  # the dyno's side broke while we wrote to it
        except FirstByteTimeout:
            raise Failed(H12) from None
        except stream.BadBody:  # a bad chunk in the body being uploaded: the dyno is dropped
            raise Failed(H26) from None
        finally:
            client.peer = None
            if upload is not None and not upload.done():
                upload.cancel()
            if conn is not None:
                conn.deadline = 0.0
                conn.abort()

    async def _stream_rest(
        self, x: _Exchange, conn: Conn, resp: Response, keep: bool, rechunk: bool
    ) -> None:
        """Stream the body of a response whose head callbacks relayed, then give the client
        connection back to them."""
        client = x.client
        try:
            try:
                await stream.body(conn, client, x, resp.body, x.req.http10, rechunk)
            except (ClientGone, Closed):
                raise Failed(H27 if client.eof else H13) from None
            now = monotonic()
            self._log(x, resp.status, service=now - x.sent_at)
            if resp.keep_alive and not conn.buf:
                self._pool.put(x.key, conn, now)
            else:
                conn.abort()
        except Failed as failure:
            conn.abort()
            keep = self._fail(client, x, failure.code)
        except Exception:
            conn.abort()
            logger.exception("router: unexpected error streaming a response")
            keep = False
        client.task = None
        client.peer = None
        self._finish(client, keep, x.req)

    async def _connect(self, x: _Exchange) -> tuple[Conn, bool, tuple[str, int]]:
        """A connection to a random web dyno (an idle one if there is): a dyno refusing it (or
        too slow to accept it) is skipped for the next; H21 (or H19) when none accepts.
        -> (connection, whether it was reused, the dyno's address)."""
        backends = x.route.backends
        count = len(backends)
        first = int(random.random() * count) if count > 1 else 0
        order = [backends[(first + i) % count] for i in range(count)]
        if self._down:  # dynos that failed a connect lately go last (nginx's fail_timeout)
            now = monotonic()
            order.sort(key=lambda b: self._down.get((b.host, b.port), 0.0) > now)
        failure = H21
        for backend in order:
            key = (backend.host, backend.port)
            x.dyno = backend.dyno
            conn = self._pool.get(key)
            if conn is not None:
                x.connect = 0.0
                return conn, True, key
            try:
                conn = await self._connect_to(x, key)
            except Failed as error:
                failure = error.code
                self._down[key] = monotonic() + DOWN_FOR
                continue
            self._down.pop(key, None)
            return conn, False, key
        raise Failed(failure)

    async def _connect_to(self, x: _Exchange, key: tuple[str, int]) -> Conn:
        begun = monotonic()
        try:
            conn = await self._pool.connect(key, self.connect_timeout)
        except ConnectRefused:
            raise Failed(H21) from None
        except ConnectTimeout:
            raise Failed(H19) from None
        x.connect = monotonic() - begun
        conn.on_data = self._dyno_data
        conn.on_lost = self._dyno_lost
        return conn

    def _send(
        self, client: Conn, conn: Conn, req: Request, head: bytes
    ) -> asyncio.Task[bool] | None:
        """Write the head and as much of the body as has arrived; a task streams the rest.
        -> that task (its result: whether the whole body went out), or None."""
        body = req.body
        if body > 0:
            if len(client.buf) >= body:
                conn.transport.write(head + client.take(body))
                return None
            left: int | ChunkedScanner = body - len(client.buf)
            first = client.take(body)
        else:
            scanner = ChunkedScanner()
            first = client.take(scanner.scan(client.buf, []))
            if scanner.done:
                conn.transport.write(head + first)
                return None
            left = scanner
        if req.expect_continue:
            client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # answered here, as nginx
        conn.transport.write(head + first)
        return self._loop.create_task(stream.upload(client, conn, left))

    async def _tunnel(self, client: Conn, conn: Conn, x: _Exchange, resp: Response) -> bool:
        """After a 101 answer to an Upgrade request: bytes both ways until either side closes."""
        out = b"%s%sConnection: Upgrade\r\nUpgrade: %s\r\n\r\n" % (
            resp.status_line,
            resp.fields,
            resp.upgrade or x.req.upgrade or b"",
        )
        client.transport.write(out + conn.take(len(conn.buf)))
        x.sent = len(out)
        self._log(x, 101, service=monotonic() - x.sent_at)
        client.peer = None
        conn.on_data = conn.on_lost = None
        back = self._loop.create_task(stream.pipe(conn, client))
        try:
            await stream.pipe(client, conn)
            await back
        finally:
            back.cancel()
            conn.close()
        return False


# Request ids: a random prefix per router process and a counter, shaped as a version 4 UUID.
# Unique, which is all a request id needs to be, at a fraction of uuid.uuid4()'s cost (it asks
# the kernel for randomness on every call, which cost as much as the rest of a request).
_ID_PREFIX = b"%08x-%04x-4%03x-%x%03x-" % (
    random.getrandbits(32),
    random.getrandbits(16),
    random.getrandbits(12),
    8 + random.getrandbits(2),
    random.getrandbits(12),
)
_id_counter = itertools.count(random.getrandbits(40))  # 12 hex digits for 2**47 requests


def new_request_id() -> bytes:
    return b"%s%012x" % (_ID_PREFIX, next(_id_counter))  # (inlined in _Exchange)


def _forwarded(fwd: bytes, proto: bytes, port: int) -> bytes:
    """The X-Forwarded-* fields, up to X-Request-Id's value."""
    return b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %d\r\n%s" % (
        fwd,
        proto,
        port,
        b"X-Request-Id: ",
    )


def _forward_head(req: Request, x: _Exchange) -> bytes:
    extra = b""
    if req.body == CHUNKED:
        extra = b"Transfer-Encoding: chunked\r\n"
    if req.upgrade:
        extra += b"Connection: Upgrade\r\nUpgrade: " + req.upgrade + b"\r\n"
    client: Any = x.client
    forwarded = client.forwarded
    if req.forwarded_for:
        forwarded = _forwarded(x.fwd, client.proto, client.port)
    return b"%s %s HTTP/1.1\r\n%s%s%s%s\r\nX-Request-Start: %d\r\n\r\n" % (
        req.method,
        req.target,
        req.fields,
        extra,
        forwarded,
        x.request_id,
        time.time() * 1000,
    )


def _response_head_out(
    req: Request, resp: Response, upload: asyncio.Task[bool] | None
) -> tuple[bytes, bool, bool]:
    """The response head for the client -> (head, may the connection go on, re-chunk the
    body: a body ended by the dyno's close is framed so that the client's can stay open)."""
    body = resp.body
    keep = req.keep_alive and (upload is None or upload.done())
    extra = b""
    rechunk = False
    if body == CHUNKED:
        if req.http10:
            keep = False  # an HTTP/1.0 client gets the payload, ended by the close
        else:
            extra = b"Transfer-Encoding: " + resp.transfer_encoding + b"\r\n"
    elif body == UNTIL_CLOSE:
        if req.http10:
            keep = False
        else:
            rechunk = True
            extra = b"Transfer-Encoding: chunked\r\n"
    if not keep:
        extra += b"Connection: close\r\n"
    elif req.http10:
        extra += b"Connection: keep-alive\r\n"
    return resp.status_line + resp.fields + extra + b"\r\n", keep, rechunk
