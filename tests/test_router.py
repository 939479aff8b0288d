"""The router over real sockets on 127.0.0.1: small asyncio dynos written here, a raw client.

Each test starts a Router on a free port with its own RouteTable and collects its log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from waka.router import Backend, Route, Router, RouteTable

LOOPBACK = "127.0.0.1"
TIMEOUT = 10.0  # no test should come near this: it turns a hang into a failure
# uvloop's timers run on libuv's coarse clock, up to a jiffy behind time.monotonic (4 ms here,
# 10 ms on a kernel built with HZ=100), so a router's timeout may end that much before the
# test's own clock says it is due.
TIMER_SLACK = 0.05

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


try:
    import uvloop
except ImportError:  # the router works without it: the tests then run on asyncio's loop only
    uvloop = None
_loop = "asyncio"


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> None:
    """Each test runs on both event loops the router may get (eventloop.run picks uvloop)."""
    global _loop
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed")
    _loop = request.param


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT):
            await coro

    if _loop == "uvloop":
        uvloop.run(bounded())
    else:
        asyncio.run(bounded())


# --- dynos ------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Seen | None:
    """One request as a dyno sees it (Content-Length or chunked body), None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")[:-2]
    method, path, _ = lines[0].split(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if not size:
                await reader.readuntil(b"\r\n")
                break
            body += (await reader.readexactly(size + 2))[:-2]
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return Seen(method, path, headers, body)


def response(status: int = 200, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if "Content_Length" not in headers and "Transfer_Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answering(make: Callable[[Seen], bytes]) -> Handler:
    """A keep-alive dyno answering each request with make(request)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (seen := await read_request(reader)) is not None:
            writer.write(make(seen))
            await writer.drain()

    return handle


@dataclass
class Dyno:
    port: int
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)

    def backend(self, name: str) -> Backend:
        return Backend(LOOPBACK, self.port, name)


@contextlib.asynccontextmanager
async def dyno(handler: Handler) -> AsyncIterator[Dyno]:
    state = Dyno(0)
    tasks: set[asyncio.Task[None]] = set()

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(counted, LOOPBACK, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in tasks:
            task.cancel()


def echo_dyno(name: str = "") -> Handler:
    """Answers with what it saw, as JSON, and records it."""

    def make(seen: Seen) -> bytes:
        body = json.dumps(
            {
                "name": name,
                "method": seen.method,
                "path": seen.path,
                "headers": seen.headers,
                "body_sha": hashlib.sha256(seen.body).hexdigest(),
                "body_len": len(seen.body),
            }
        ).encode()
        return response(200, body, Content_Type="application/json")

    return answering(make)


def refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


# --- the router and a raw client ---------------------------------------------------------------


@dataclass
class Running:
    router: Router
    table: RouteTable
    port: int
    logs: list[tuple[str, str]]

    def lines(self, app_id: str = "app-1") -> list[str]:
        """The router's log lines for the app (it hands over a turn's lines as one text)."""
        return [line for app, text in self.logs if app == app_id for line in text.split("\n")]


@contextlib.asynccontextmanager
async def router(table: RouteTable | None = None, **options: object) -> AsyncIterator[Running]:
    table = table or RouteTable()
    logs: list[tuple[str, str]] = []
    options.setdefault("log_every", 0)  # lines at the end of the turn: there when a reply is
    r = Router(table, log=lambda app, line: logs.append((app, line)), **options)  # type: ignore[arg-type]
    port = await r.start(LOOPBACK, 0)
    try:
        yield Running(r, table, port, logs)
    finally:
        await r.close()


def app(backends: tuple[Backend, ...] = (), **flags: bool) -> Route:
    return Route("app-1", "myapp", backends=backends, **flags)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    head: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)


class Client:
    """One client connection speaking raw HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection(LOOPBACK, port))

    def send(
        self,
        path: str = "/",
        *,
        host: str = "myapp.localhost",
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        version: str = "HTTP/1.1",
    ) -> None:
        lines = [f"{method} {path} {version}", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body and not any(k.lower() == "transfer-encoding" for k in headers or {}):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def head(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[:-2]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split(" ")[1]), headers, head

    async def reply(self, method: str = "GET") -> Reply:
        status, headers, head = await self.head()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readuntil(b"\r\n")
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body = await self.reader.read()
        return Reply(status, headers, body, head)

    async def closed(self) -> bool:
        """True when the router closed this connection (EOF or reset) with nothing more."""
        try:
            return await asyncio.wait_for(self.reader.read(1), 2) == b""
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def get(port: int, path: str = "/", **kwargs: object) -> Reply:
    client = await Client.open(port)
    try:
        client.send(path, **kwargs)  # type: ignore[arg-type]
        return await client.reply(str(kwargs.get("method", "GET")))
    finally:
        await client.close()


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


INFO_LINE = re.compile(
    r'at=info method=(?P<method>\S+) path="(?P<path>[^"]*)" host=(?P<host>\S+) '
    r'request_id=(?P<request_id>\S+) fwd="(?P<fwd>[^"]*)" dyno=(?P<dyno>\S+) '
    r"connect=(?P<connect>\d+)ms service=(?P<service>\d+)ms status=(?P<status>\d+) "
    r"bytes=(?P<bytes>\d+) protocol=http"
)


def error_line(code: str, desc: str, status: int = 503, at: str = "error") -> re.Pattern[str]:
    return re.compile(
        rf'at={at} code={code} desc="{desc}" method=\S+ path="[^"]*" host=\S+ request_id=\S+ '
        rf'fwd="[^"]*" dyno=\S* connect=(\d+ms)? service=(\d+ms)? status={status} bytes=\d* '
        r"protocol=http"
    )


# --- routing -----------------------------------------------------------------------------------


def test_routes_by_app_name_port_case_and_custom_domain() -> None:
    async def main() -> None:
        async with dyno(echo_dyno("one")) as one, dyno(echo_dyno("two")) as two:
            table = RouteTable()
            table.set_app(Route("app-1", "myapp", backends=(one.backend("web.1"),)))
            table.set_app(
                Route("app-2", "other", backends=(two.backend("web.1"),)),
                domains=["www.example.test", "*.wild.test"],
            )
            async with router(table) as r:
                assert (await get(r.port, host="myapp.localhost")).json()["name"] == "one"
                assert (await get(r.port, host="MyApp.LocalHost:8080")).json()["name"] == "one"
                assert (await get(r.port, host="other.localhost")).json()["name"] == "two"
                assert (await get(r.port, host="www.example.test")).json()["name"] == "two"
                assert (await get(r.port, host="WWW.Example.Test:80")).json()["name"] == "two"
                assert (await get(r.port, host="a.wild.test")).json()["name"] == "two"

                unknown = await get(r.port, host="nope.localhost")
                assert unknown.status == 404
                assert b"No such app" in unknown.body
                # one per proxied request, none for the unknown host
                assert len(r.lines("app-1")) + len(r.lines("app-2")) == 6
                assert {app for app, _ in r.logs} == {"app-1", "app-2"}

                table.set_app(Route("app-2", "other", backends=(two.backend("web.1"),)))
                assert (await get(r.port, host="www.example.test")).status == 404
                table.remove_app("app-1")
                assert (await get(r.port, host="myapp.localhost")).status == 404

    run(main())


def test_route_table_lookup_rules() -> None:
    table = RouteTable()
    route = Route("id-1", "shop")
    table.set_app(route, ["Shop.Example.COM."])
    assert table.lookup("shop.localhost") is route
    assert table.lookup("SHOP.localhost:5000") is route
    assert table.lookup("shop.example.com:443") is route
    assert table.lookup("x.shop.localhost") is None
    assert table.lookup("shop") is None
    assert table.lookup("[::1]:8080") is None
    renamed = Route("id-1", "store")
    table.set_app(renamed)
    assert table.lookup("shop.localhost") is None  # the old name is gone with the rename
    assert table.lookup("store.localhost") is renamed
    assert table.lookup("shop.example.com") is None  # domains are part of the state set
    assert table.get("id-1") is renamed


def test_forwarded_headers_as_the_dyno_sees_them() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            before = time.time() * 1000
            seen = (
                await get(
                    r.port,
                    "/p?q=1",
                    headers={
                        "X-Forwarded-For": "10.1.2.3",
                        "X-Forwarded-Proto": "https",  # a client must not choose these
                        "X-Forwarded-Port": "443",
                        "X-Request-Start": "1",
                        "Connection": "keep-alive, X-Secret",
                        "X-Secret": "hop",
                        "Keep-Alive": "timeout=5",
                        "Proxy-Authorization": "Basic eDp5",
                        "TE": "trailers",
                        "X-End-To-End": "kept",
                    },
                )
            ).json()
            headers = seen["headers"]
            assert seen["path"] == "/p?q=1"
            assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
            assert headers["x-forwarded-proto"] == "http"
            assert headers["x-forwarded-port"] == str(r.port)
            assert before - 1 <= int(headers["x-request-start"]) <= time.time() * 1000 + 1
            assert re.fullmatch(r"[0-9a-f-]{36}", headers["x-request-id"])
            assert headers["host"] == "myapp.localhost"
            assert headers["x-end-to-end"] == "kept"
            for hop in ("connection", "x-secret", "keep-alive", "proxy-authorization", "te"):
                assert hop not in headers, hop

            plain = (await get(r.port)).json()["headers"]
            assert plain["x-forwarded-for"] == "127.0.0.1"

    run(main())


def test_request_id_passed_through_when_sane_and_logged() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            sane = "abcdefghij-0123456789+/="
            seen = (await get(r.port, headers={"X-Request-Id": sane})).json()["headers"]
            assert seen["x-request-id"] == sane
            insane = (await get(r.port, headers={"X-Request-Id": "short"})).json()["headers"]
            assert insane["x-request-id"] != "short"
            first, second = (INFO_LINE.fullmatch(line) for line in r.lines())
            assert first and second
            assert first["request_id"] == sane
            assert second["request_id"] == insane["x-request-id"]

    run(main())


def test_router_log_line_is_herokus() -> None:
    async def main() -> None:
        web_dyno = dyno(answering(lambda seen: response(201, b"x" * 1234)))
        async with web_dyno as web, router() as r:
            r.table.set_app(app((web.backend("web.2"),)))
            reply = await get(r.port, "/some/path?a=b", method="POST", body=b"hello")
            assert reply.status == 201
            (line,) = r.lines()
            match = INFO_LINE.fullmatch(line)
            assert match, line
            assert match["method"] == "POST"
            assert match["path"] == "/some/path?a=b"
            assert match["host"] == "myapp.localhost"
            assert match["fwd"] == "127.0.0.1"
            assert match["dyno"] == "web.2"
            assert match["status"] == "201"
            assert int(match["bytes"]) == len(reply.head) + 1234

    run(main())


def test_requests_spread_at_random_over_three_dynos() -> None:
    async def main() -> None:
        async with (
            dyno(echo_dyno("a")) as a,
            dyno(echo_dyno("b")) as b,
            dyno(echo_dyno("c")) as c,
            router() as r,
        ):
            r.table.set_app(app((a.backend("web.1"), b.backend("web.2"), c.backend("web.3"))))
            client = await Client.open(r.port)
            counts = {"a": 0, "b": 0, "c": 0}
            for _ in range(150):
                client.send()
                counts[(await client.reply()).json()["name"]] += 1
            await client.close()
            assert all(n >= 20 for n in counts.values()), counts  # 50 each on average
            dynos = [INFO_LINE.fullmatch(line)["dyno"] for line in r.lines()]  # type: ignore[index]
            assert {d: dynos.count(d) for d in set(dynos)} == {
                "web.1": counts["a"],
                "web.2": counts["b"],
                "web.3": counts["c"],
            }

    run(main())


def test_a_refusing_dyno_is_skipped_and_all_refusing_is_h21() -> None:
    async def main() -> None:
        dead = Backend(LOOPBACK, refused_port(), "web.1")
        async with dyno(echo_dyno("live")) as live, router() as r:
            r.table.set_app(app((dead, live.backend("web.2"))))
            for _ in range(20):  # whichever comes first at random, all succeed
                reply = await get(r.port)
                assert reply.status == 200
            assert all("dyno=web.2" in line for line in r.lines())

            r.logs.clear()
            r.table.set_app(app((dead, Backend(LOOPBACK, refused_port(), "web.2"))))
            reply = await get(r.port)
            assert reply.status == 503
            assert b"Application Error" in reply.body
            (line,) = r.lines()
            assert error_line("H21", "Backend connection refused").fullmatch(line), line

    run(main())


@contextlib.contextmanager
def stuck_dyno(name: str = "web.1") -> Iterator[Backend]:
    """A dyno whose connects hang: a listening socket whose accept queue is full (nobody
    accepts), as a dyno on a lost host would look."""
    with socket.socket() as full:
        full.bind((LOOPBACK, 0))
        full.listen(0)
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(full.getsockname())
            yield Backend(LOOPBACK, full.getsockname()[1], name)
        finally:
            for filler in fillers:
                filler.close()


def test_a_dyno_too_slow_to_accept_is_h19_and_skipped() -> None:
    with stuck_dyno() as stuck:

        async def main() -> None:
            async with dyno(echo_dyno("live")) as live, router(connect_timeout=0.2) as r:
                r.table.set_app(app((stuck,)))
                reply = await get(r.port)
                assert reply.status == 503
                (line,) = r.lines()
                assert error_line("H19", "Backend connection timeout").fullmatch(line), line
                r.table.set_app(app((stuck, live.backend("web.2"))))
                for _ in range(4):
                    assert (await get(r.port)).json()["name"] == "live"

        run(main())


def test_a_dyno_that_failed_a_connect_goes_last_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As nginx's fail_timeout: a dyno whose host is lost (connects hang) costs one request
    the connect timeout, not every other one, until the dyno manager drops it; once DOWN_FOR
    has passed it is tried again in turn."""
    from waka.router import proxy

    monkeypatch.setattr(proxy, "DOWN_FOR", 3.0)  # longer than a round of 20 requests
    with stuck_dyno() as stuck:

        async def main() -> None:
            async with dyno(echo_dyno("live")) as live, router(connect_timeout=1.0) as r:
                r.table.set_app(app((stuck, live.backend("web.2"))))

                async def slow_ones(requests: int) -> int:
                    slow = 0
                    for _ in range(requests):
                        began = time.monotonic()
                        assert (await get(r.port)).json()["name"] == "live"
                        slow += time.monotonic() - began >= 1.0 - TIMER_SLACK
                    return slow

                assert await slow_ones(20) == 1  # at random, web.1 comes first soon
                await asyncio.sleep(3.1)
                assert await slow_ones(20) == 1  # tried again, and skipped again

        run(main())


# --- streaming and connections -----------------------------------------------------------------


def test_chunked_response_streams_chunk_by_chunk() -> None:
    """The dyno sends its second chunk only after the client has the first: a router that
    buffered the response would never deliver it."""
    got_first = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(200, Transfer_Encoding="chunked"))
        big = b"a" * 300_000
        writer.write(b"%x\r\n%s\r\n" % (len(big), big))
        await writer.drain()
        await got_first.wait()
        writer.write(b"5\r\nlast!\r\n0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with dyno(slow) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send()
            status, headers, _ = await client.head()
            assert status == 200 and headers["transfer-encoding"] == "chunked"
            size = int((await client.reader.readuntil(b"\r\n"))[:-2], 16)
            assert size == 300_000
            assert await client.reader.readexactly(size + 2) == b"a" * size + b"\r\n"
            got_first.set()
            assert await client.reader.readuntil(b"0\r\n\r\n") == b"5\r\nlast!\r\n0\r\n\r\n"
            await client.close()
            assert INFO_LINE.fullmatch(r.lines()[0])

    run(main())


def test_large_request_body_streams_to_the_dyno() -> None:
    """The client sends the rest of its body only once the dyno has the first megabyte: a
    router that buffered the body whole would never pass that megabyte on."""
    total = 8 * 1024 * 1024
    got_first = asyncio.Event()

    async def reader_dyno(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert f"content-length: {total}".encode() in head.lower()
        first = await reader.readexactly(1024 * 1024)
        got_first.set()
        rest = await reader.readexactly(total - len(first))
        digest = hashlib.sha256(first + rest).hexdigest().encode()
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer the router skips
        writer.write(response(200, digest))
        await writer.drain()

    async def main() -> None:
        body = bytes(range(256)) * (total // 256)
        async with dyno(reader_dyno) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.writer.write(
                b"PUT /upload HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: %d\r\n\r\n"
                % total
            )
            client.writer.write(body[: 1024 * 1024])
            await got_first.wait()
            client.writer.write(body[1024 * 1024 :])
            reply = await client.reply()
            assert reply.status == 200
            assert reply.body == hashlib.sha256(body).hexdigest().encode()
            await client.close()

    run(main())


def test_an_early_answer_ends_the_upload_and_the_connection() -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response(413, b"too big"))
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> None:
        async with dyno(early) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send(method="POST", headers={"Content-Length": "10000000"})
            client.writer.write(b"x" * 100_000)
            reply = await client.reply()
            assert reply.status == 413 and reply.body == b"too big"
            assert await client.closed()
            assert "status=413" in r.lines()[0]

    run(main())


def test_chunked_request_body_and_big_response_arrive_intact() -> None:
    async def main() -> None:
        big = bytes(range(256)) * 20_000  # 5 MB with a Content-Length
        big_dyno = dyno(answering(lambda seen: response(200, big if seen.body else b"")))
        async with big_dyno as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send(method="POST", headers={"Transfer-Encoding": "chunked"})
            for piece in (b"hello ", b"chunked ", b"world"):
                client.writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await asyncio.sleep(0.02)
            client.writer.write(b"0\r\n\r\n")
            reply = await client.reply()
            assert reply.body == big
            await client.close()

        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            seen = (
                await get(
                    r.port,
                    method="POST",
                    headers={"Transfer-Encoding": "chunked"},
                    body=b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n",
                )
            ).json()
            assert seen["body_len"] == 9
            assert seen["body_sha"] == hashlib.sha256(b"wikipedia").hexdigest()

    run(main())


def test_keep_alive_two_requests_on_one_connection_and_dyno_connection_reused() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send("/one")
            assert (await client.reply()).json()["path"] == "/one"
            client.send("/two", method="POST", body=b"a small body")
            two = (await client.reply()).json()
            assert two["path"] == "/two" and two["body_len"] == 12
            assert "connection" not in two["headers"]  # hop-by-hop: the router's own business
            client.send("/three", headers={"Connection": "close"})
            last = await client.reply()
            assert last.json()["path"] == "/three"
            assert last.headers["connection"] == "close"
            assert await client.closed()
            assert web.connections == 1  # the router kept its connection to the dyno too

            old = await Client.open(r.port)  # HTTP/1.0 keeps the connection when asked to
            for path in ("/a", "/b"):
                old.send(path, version="HTTP/1.0", headers={"Connection": "keep-alive"})
                reply = await old.reply()
                assert reply.json()["path"] == path
                assert reply.headers["connection"] == "keep-alive"
            old.send("/c", version="HTTP/1.0")
            assert (await old.reply()).headers["connection"] == "close"
            assert await old.closed()
            assert web.connections == 1
            assert len(r.lines()) == 6

    run(main())


def test_head_204_304_and_read_until_close_bodies() -> None:
    def make(seen: Seen) -> bytes:
        if seen.path == "/204":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        if seen.path == "/304":
            return b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
        if seen.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        return response(200, b"0123456789")

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"until close")
        writer.write_eof()

    async def main() -> None:
        async with dyno(answering(make)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send(method="HEAD")
            head = await client.reply("HEAD")
            assert head.status == 200 and head.headers["content-length"] == "10"
            for path, status in (("/204", 204), ("/304", 304), ("/", 200)):
                client.send(path)
                assert (await client.reply()).status == status  # nothing left to misread
            await client.close()

        async with dyno(until_close) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send()
            reply = await client.reply()
            assert reply.headers["transfer-encoding"] == "chunked"  # so keep-alive goes on
            assert reply.body == b"streamed until close"
            client.send("/again")
            assert (await client.reply()).body == b"streamed until close"
            await client.close()

            old = await Client.open(r.port)  # an HTTP/1.0 client gets the bytes and the close
            old.send(version="HTTP/1.0")
            reply = await old.reply()
            assert (
                reply.body == b"streamed until close" and "transfer-encoding" not in reply.headers
            )
            await old.close()

    run(main())


def test_a_stale_pooled_connection_is_retried_on_a_new_one() -> None:
    """This dyno answers one request per connection, then closes on the next without a word:
    the router must notice and retry instead of failing the request with H13."""

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(200, b"fresh"))
        await writer.drain()
        await read_request(reader)

    async def main() -> None:
        async with dyno(once) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            for _ in range(3):
                assert (await get(r.port)).body == b"fresh"
            assert web.connections == 3
            assert all(INFO_LINE.fullmatch(line) for line in r.lines())

    run(main())


def test_empty_lines_before_a_request_are_ignored() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            for prefix in (b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n"):
                client.writer.write(prefix + b"GET /x HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
                assert (await client.reply()).json()["path"] == "/x"
            await client.close()

    run(main())


def test_bad_requests_get_400() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            for raw in (
                b"NOT A REQUEST\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n",  # no Host
                b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nBad Header: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n folded\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nX: a\nInjected: b\r\n\r\n",
            ):
                client = await Client.open(r.port)
                client.writer.write(raw)
                assert (await client.reply()).status == 400, raw
                assert await client.closed()
            assert web.connections == 0 and r.logs == []

    run(main())


# --- Heroku's errors ---------------------------------------------------------------------------


def test_h10_app_crashed() -> None:
    async def main() -> None:
        async with router() as r:
            r.table.set_app(app((Backend(LOOPBACK, 1, "web.1"),), crashed=True))
            reply = await get(r.port)
            assert reply.status == 503 and b"Application Error" in reply.body
            assert reply.headers["content-type"].startswith("text/html")
            (line,) = r.lines()
            assert error_line("H10", "App crashed").fullmatch(line), line
            assert " dyno= connect= service= " in line

    run(main())


BadHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Seen], Awaitable[None]]


def misbehaving(bad: BadHandler, good: int) -> Handler:
    """A dyno that answers its first `good` requests (over all connections), then runs
    bad(reader, writer, request) on the next one and closes."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while (seen := await read_request(reader)) is not None:
            if served < good:
                served += 1
                writer.write(response(200, b"fine"))
                await writer.drain()
                continue
            await bad(reader, writer, seen)
            return

    return handle


async def warm_up(r: Running, client: Client, warm: bool) -> None:
    """With warm, one good request first: the router then keeps an idle connection to the
    dyno, and the next request takes its callback path instead of its coroutine path."""
    if warm:
        client.send()
        assert (await client.reply()).body == b"fine"
        assert len(r.lines()) == 1


WARM = pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])


@WARM
def test_h12_request_timeout(warm: bool) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: Seen) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with dyno(misbehaving(silent, warm)) as web, router(first_byte_timeout=0.2) as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            await warm_up(r, client, warm)
            began = time.monotonic()
            client.send()
            reply = await client.reply()
            assert 0.2 - TIMER_SLACK <= time.monotonic() - began < 2
            assert reply.status == 503 and b"Application Error" in reply.body
            line = r.lines()[-1]
            assert error_line("H12", "Request timeout").fullmatch(line), line
            assert "dyno=web.1 " in line
            client.send()  # the connection goes on (and the dyno is not asked again)
            assert (await client.reply()).status == 503
            await client.close()

    run(main())


@WARM
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_h13_connection_closed_without_response(warm: bool, method: str) -> None:
    """A GET on an idle connection that closes is retried on a new one (the dyno may have
    closed it while idle); a POST, whose body is gone, is not."""

    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: Seen) -> None:
        pass

    async def main() -> None:
        async with dyno(misbehaving(rude, warm)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            await warm_up(r, client, warm)
            client.send(method=method, body=b"data" if method == "POST" else b"")
            reply = await client.reply()
            assert reply.status == 503 and b"Application Error" in reply.body
            line = r.lines()[-1]
            assert error_line("H13", "Connection closed without response").fullmatch(line), line
            retried = warm and method == "GET"
            assert web.connections == 1 + retried
            await client.close()

    run(main())


def test_h14_no_web_dynos() -> None:
    async def main() -> None:
        async with router() as r:
            r.table.set_app(app())
            reply = await get(r.port)
            assert reply.status == 503 and b"Application Error" in reply.body
            (line,) = r.lines()
            assert error_line("H14", "No web processes running").fullmatch(line), line

    run(main())


@WARM
def test_h18_dyno_closes_mid_response(warm: bool) -> None:
    async def partial_body(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: Seen
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
        await writer.drain()

    async def partial_head(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: Seen
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")
        await writer.drain()

    async def main() -> None:
        async with dyno(misbehaving(partial_body, warm)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            await warm_up(r, client, warm)
            client.send()
            status, headers, _ = await client.head()
            assert status == 200 and headers["content-length"] == "1000"
            assert await client.reader.read() == b"only ten b"  # then the router closes
            line = r.lines()[-1]
            assert error_line("H18", "Server Request Interrupted").fullmatch(line), line
        async with dyno(misbehaving(partial_head, warm)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            await warm_up(r, client, warm)
            client.send()
            reply = await client.reply()
            assert reply.status == 503 and b"Application Error" in reply.body
            line = r.lines()[-1]
            assert error_line("H18", "Server Request Interrupted").fullmatch(line), line
            await client.close()

    run(main())


@WARM
def test_h27_client_hangs_up_before_the_response(warm: bool) -> None:
    got_request = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: Seen) -> None:
        got_request.set()
        await asyncio.sleep(5)

    async def main() -> None:
        async with dyno(misbehaving(slow, warm)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            await warm_up(r, client, warm)
            client.send()
            await got_request.wait()
            await client.close()
            await asyncio.wait_for(until(lambda: len(r.lines()) == 1 + warm), 2)
            line = r.lines()[-1]
            assert error_line("H27", "Client Request Interrupted", 499, "info").fullmatch(line)
            assert "dyno=web.1 " in line

    run(main())


def test_h80_maintenance_mode() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),), maintenance=True))
            reply = await get(r.port)
            assert reply.status == 503
            assert b"Offline for Maintenance" in reply.body
            (line,) = r.lines()
            assert error_line("H80", "Maintenance mode", at="info").fullmatch(line), line
            assert web.connections == 0

    run(main())


def test_error_pages_keep_the_connection_for_the_next_request() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app())
            client = await Client.open(r.port)
            client.send()
            assert (await client.reply()).status == 503
            r.table.set_app(app((web.backend("web.1"),)))
            client.send()
            assert (await client.reply()).status == 200
            await client.close()

    run(main())


# --- WebSocket ---------------------------------------------------------------------------------


def test_websocket_upgrade_pipes_bytes_both_ways() -> None:
    async def ws(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = await read_request(reader)
        assert seen is not None
        assert seen.headers["upgrade"] == "websocket"
        assert seen.headers["connection"].lower() == "upgrade"
        assert seen.headers["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello from the dyno"
        )
        while data := await reader.read(100):
            writer.write(data.upper())

    async def main() -> None:
        async with dyno(ws) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.send(
                "/chat",
                headers={
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                },
            )
            status, headers, _ = await client.head()
            assert status == 101
            assert headers["upgrade"] == "websocket"
            assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            assert await client.reader.readexactly(19) == b"hello from the dyno"
            for word in (b"ping", b"a longer message"):
                client.writer.write(word)
                assert await client.reader.readexactly(len(word)) == word.upper()
            (line,) = r.lines()
            assert INFO_LINE.fullmatch(line) and "status=101" in line
            await client.close()

    run(main())


# --- sleeping apps -----------------------------------------------------------------------------


def test_a_sleeping_app_is_woken_once_for_concurrent_requests() -> None:
    async def main() -> None:
        async with dyno(echo_dyno("awake")) as web:
            calls: list[str] = []
            table = RouteTable()
            table.set_app(app(sleeping=True))

            async def wake(app_id: str) -> None:
                calls.append(app_id)
                await asyncio.sleep(0.2)
                table.set_app(app((web.backend("web.1"),)))

            async with router(table, wake=wake) as r:
                first, second = await asyncio.gather(get(r.port), get(r.port, "/2"))
                assert first.json()["name"] == second.json()["name"] == "awake"
                assert calls == ["app-1"]
                assert "app-1" in r.router.last_request
                assert all(INFO_LINE.fullmatch(line) for line in r.lines())

    run(main())


def test_a_sleeping_app_that_does_not_wake_in_time_is_h20() -> None:
    async def main() -> None:
        async def never(app_id: str) -> None:
            await asyncio.sleep(5)

        async with router(wake=never, wake_timeout=0.2) as r:
            r.table.set_app(app(sleeping=True))
            reply = await get(r.port)
            assert reply.status == 503
            (line,) = r.lines()
            assert error_line("H20", "App boot timeout").fullmatch(line), line

    run(main())


def test_last_request_is_updated_per_request() -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            assert r.router.last_request == {}
            await get(r.port)
            first = r.router.last_request["app-1"]
            assert abs(first - time.monotonic()) < 1
            await asyncio.sleep(0.01)
            await get(r.port)
            assert r.router.last_request["app-1"] > first

    run(main())


@pytest.mark.parametrize("host", ["localhost"])
def test_serve_binds_both_loopback_families(host: str) -> None:
    async def main() -> None:
        async with dyno(echo_dyno()) as web:
            table = RouteTable()
            table.set_app(app((web.backend("web.1"),)))
            r = Router(table, log=lambda app, line: None)
            port = refused_port()
            serving = asyncio.create_task(r.serve(host, port))
            await until(lambda: r.port != 0)  # bound
            try:
                assert (await get(port)).status == 200
                if socket.has_ipv6:
                    try:
                        reader, writer = await asyncio.open_connection("::1", port)
                    except OSError:
                        pass  # no IPv6 loopback here
                    else:
                        writer.write(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
                        assert (await Client(reader, writer).reply()).status == 200
                        writer.close()
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving

    run(main())
