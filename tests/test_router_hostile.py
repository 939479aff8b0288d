"""The router under hostile input: request smuggling, oversized heads, slowloris clients and
invalid Host values, over real sockets (the helpers of tests/test_router.py).

Each case checks three things: the client gets the right 4xx (or a close), the dyno never sees
the request, and nothing lands in the operator's log (a traceback per bad request would let
anyone fill it). Beside each attack, an honest client is served as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.test_router import (  # noqa: F401  (event_loop_kind: both event loops, autouse)
    TIMER_SLACK,
    Client,
    Handler,
    Seen,
    answering,
    app,
    dyno,
    error_line,
    event_loop_kind,
    get,
    response,
    router,
    run,
    until,
)
from waka.router.http import (
    MAX_FIELD_LINE,
    MAX_REQUEST_LINE,
    BadMessage,
    ChunkedScanner,
    oversized,
    valid_host,
)

HOST = b"myapp.localhost"


@pytest.fixture(autouse=True)
def operator_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Whatever the router logs for the operator: hostile input must add nothing to it."""
    caplog.set_level(logging.DEBUG, logger="waka.router")
    yield caplog
    assert [r.getMessage() for r in caplog.records if r.name.startswith("waka.router")] == []


def recording(seen: list[Seen]) -> Handler:
    """A dyno that answers what it saw (path, headers, body length) and keeps each request."""

    def make(req: Seen) -> bytes:
        seen.append(req)
        body = {"path": req.path, "headers": req.headers, "body_len": len(req.body)}
        return response(200, json.dumps(body).encode(), Content_Type="application/json")

    return answering(make)


def request(*fields: bytes, line: bytes = b"POST / HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


async def refused(port: int, raw: bytes, status: int) -> None:
    """`raw` is answered with `status` and the connection closed."""
    client = await Client.open(port)
    client.writer.write(raw)
    reply = await client.reply()
    assert reply.status == status, (raw[:120], reply.status)
    assert reply.headers["connection"] == "close"
    assert await client.closed()
    await client.close()


async def honest(port: int) -> None:
    """An ordinary request on its own connection is still served."""
    reply = await get(port, "/ok")
    assert reply.status == 200 and reply.json()["path"] == "/ok"


# --- request smuggling ---------------------------------------------------------------------------

SMUGGLING = [
    # Content-Length with Transfer-Encoding, in either order and spelling
    request(b"Host: " + HOST, b"Content-Length: 4", b"Transfer-Encoding: chunked")
    + b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n",
    request(b"Host: " + HOST, b"Transfer-Encoding: chunked", b"content-length: 0") + b"0\r\n\r\n",
    request(b"Host: " + HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"),
    request(b"Host: " + HOST, b"Transfer-Encoding: xchunked", b"Content-Length: 1") + b"x",
    request(b"Host: " + HOST, b"Transfer-Encoding : chunked") + b"0\r\n\r\n",
    request(b"Host: " + HOST, b"Transfer-Encoding:\x0bchunked") + b"0\r\n\r\n",
    request(b"Host: " + HOST, b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0")
    + b"0\r\n\r\n",
    # duplicate Content-Length that disagree, or lists
    request(b"Host: " + HOST, b"Content-Length: 1", b"Content-Length: 2") + b"xx",
    request(b"Host: " + HOST, b"Content-Length: 1, 2") + b"xx",
    request(b"Host: " + HOST, b"Content-Length: +1") + b"x",
    request(b"Host: " + HOST, b"Content-Length: 0x1") + b"x",
    # obsolete line folding (RFC 9112 5.2), bare CR or LF inside the head
    request(b"Host: " + HOST, b"X-Folded: a", b" b"),
    request(b"Host: " + HOST, b"Content-Length: 0", b"\tTransfer-Encoding: chunked"),
    request(b"Host: " + HOST, b"X-A: 1\nTransfer-Encoding: chunked"),
    request(b"Host: " + HOST, b"X-A: 1\rTransfer-Encoding: chunked"),
]


@pytest.mark.parametrize("raw", SMUGGLING, ids=lambda raw: repr(raw[16:80]))
def test_ambiguous_framing_is_400_and_never_reaches_the_dyno(raw: bytes) -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            await refused(r.port, raw, 400)
            assert web.connections == 0 and r.logs == []
            await honest(r.port)

    run(main())


BAD_CHUNKS = [
    b"zz\r\n",  # not hex
    b"-1\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",  # blanks around the size: parsers disagree on them
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"1 0\r\n",
    b"1" * 16 + b"\r\n",  # more than an int64
    b"5\nhello\r\n0\r\n\r\n",  # a bare LF ending the size line
    b"5\r\nhelloXX0\r\n\r\n",  # a chunk not followed by CRLF
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-Folded: a\r\n b\r\n\r\n",  # obs-fold in the trailer
    b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
    b"5;" + b"e" * 5000 + b"\r\n",  # a size line that never ends
]


@pytest.mark.parametrize("body", BAD_CHUNKS, ids=lambda body: repr(body[:24]))
def test_a_bad_chunk_is_400_h26_without_reaching_the_dyno(body: bytes) -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            raw = request(b"Host: " + HOST, b"Transfer-Encoding: chunked") + body
            await refused(r.port, raw, 400)
            assert seen == [] and web.connections == 0
            assert error_line("H26", "Request Error", 400).fullmatch(r.lines()[0]), r.lines()
            await honest(r.port)

    run(main())


def test_a_bad_chunk_in_the_middle_of_an_upload_ends_it_at_once() -> None:
    """The head and a good chunk have gone to the dyno when a bad one comes: the client gets
    its 400 now (not an H12 when the dyno gives up waiting), the dyno's connection is dropped,
    and the operator's log stays quiet."""

    async def main() -> None:
        got_chunk = asyncio.Event()
        dropped = asyncio.Event()

        async def waiting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readuntil(b"hello\r\n")
            got_chunk.set()
            if await reader.read() == b"":  # nothing more, then the router's close
                dropped.set()

        async with dyno(waiting) as web, router(first_byte_timeout=5.0) as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            started = time.monotonic()
            client.writer.write(
                request(b"Host: " + HOST, b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n"
            )
            await asyncio.wait_for(got_chunk.wait(), 5)
            client.writer.write(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
            reply = await client.reply()
            assert reply.status == 400 and reply.headers["connection"] == "close"
            assert time.monotonic() - started < 2
            await asyncio.wait_for(dropped.wait(), 5)
            assert await client.closed()
            await client.close()
            await until(lambda: len(r.lines()) == 1)
            assert error_line("H26", "Request Error", 400).fullmatch(r.lines()[0])

    run(main())


def test_a_chunked_body_split_anywhere_still_goes_through() -> None:
    """Strict framing refuses nothing a correct client sends, however the bytes arrive (the
    CRLF after a chunk split over two reads included)."""

    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            client = await Client.open(r.port)
            client.writer.write(request(b"Host: " + HOST, b"Transfer-Encoding: chunked"))
            for i in range(len(body)):
                client.writer.write(body[i : i + 1])
                await client.writer.drain()
                await asyncio.sleep(0.001)
            reply = await client.reply()
            assert reply.status == 200 and reply.json()["body_len"] == len(b"hello world")
            await client.close()

    run(main())


# --- oversized heads (Heroku: 8 KB request line, 8 KB per header line) ---------------------------


def test_a_request_line_over_8_kb_is_414_whole_or_arriving() -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            line = b"GET /" + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
            assert len(line) == MAX_REQUEST_LINE
            ok = await get(r.port, line.split(b" ")[1].decode())  # exactly 8 KB: served
            assert ok.status == 200 and len(ok.json()["path"]) == len(line) - len("GET  HTTP/1.1")
            longer = line.replace(b"GET /", b"GET /a")
            await refused(r.port, request(b"Host: " + HOST, line=longer), 414)
            # A line that never ends is refused as soon as it is too long, not at 64 KB.
            client = await Client.open(r.port)
            client.writer.write(longer)  # 8 KB and a byte, no end yet
            assert (await client.reply()).status == 414
            assert await client.closed()
            await client.close()
            assert len(seen) == 1
            await honest(r.port)

    run(main())


def test_a_header_line_over_8_kb_is_431() -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            cookie = "c=" + "x" * (MAX_FIELD_LINE - len("Cookie: c="))
            ok = await get(r.port, headers={"Cookie": cookie})  # exactly 8 KB: served
            assert ok.status == 200 and ok.json()["headers"]["cookie"] == cookie
            big = request(
                b"Host: " + HOST, b"Cookie: " + cookie.encode() + b"x", line=b"GET / HTTP/1.1"
            )
            await refused(r.port, big, 431)
            assert len(seen) == 1
            await honest(r.port)

    run(main())


@pytest.mark.parametrize("size_kb", [70, 100])
@pytest.mark.parametrize("at_once", [True, False])
def test_a_70_to_100_kb_head_is_431_and_never_forwarded(size_kb: int, at_once: bool) -> None:
    """Many header lines, each under 8 KB, together over the 64 KB a head may have: refused
    whether it arrives in one piece or in many."""

    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            fields = [b"Host: " + HOST]
            fields += [b"X-Pad-%d: %s" % (i, b"p" * 1000) for i in range(size_kb)]
            raw = request(*fields, line=b"GET / HTTP/1.1")
            client = await Client.open(r.port)
            if at_once:
                client.writer.write(raw)
            else:
                for i in range(0, len(raw), 4096):
                    client.writer.write(raw[i : i + 4096])
                    await client.writer.drain()
            reply = await client.reply()
            assert reply.status == 431
            assert await client.closed()
            await client.close()
            assert web.connections == 0 and seen == []
            await honest(r.port)

    run(main())


# --- slowloris -----------------------------------------------------------------------------------


def test_slowloris_clients_get_408_and_do_not_hold_up_others() -> None:
    """Clients trickling heads a byte at a time are cut off head_timeout after they began,
    however recently their last byte came; meanwhile honest clients are served at once."""

    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router(head_timeout=1.0) as r:
            r.table.set_app(app((web.backend("web.1"),)))
            slow = [await Client.open(r.port) for _ in range(50)]
            head = b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nX-Slow: " + b"s" * 1000
            started = time.monotonic()
            for i in range(8):  # a byte each 0.1 s for 0.8 s, then silence
                for client in slow:
                    client.writer.write(head[i : i + 1])
                t0 = time.monotonic()
                await honest(r.port)
                assert time.monotonic() - t0 < 1.0
                await asyncio.sleep(0.1)
            for client in slow:
                reply = await client.reply()
                assert reply.status == 408
                assert await client.closed()
                await client.close()
            # Cut at head_timeout (+ the sweep's quarter of it), not a timeout after the last
            # byte (that would be 0.8 + 1.0 s).
            assert time.monotonic() - started < 1.75
            assert seen and all(s.path == "/ok" for s in seen)

    run(main())


def test_a_body_trickled_forever_ends_in_h12_and_frees_the_dyno_connection() -> None:
    """Slowloris on the body: the dyno waits for a body that never ends; first_byte_timeout
    after the head went, the client gets H12's 503 and both connections are closed."""

    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router(first_byte_timeout=1.0) as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            client.writer.write(request(b"Host: " + HOST, b"Content-Length: 1000"))
            started = time.monotonic()
            answer = asyncio.ensure_future(client.reply())
            while not answer.done() and time.monotonic() - started < 5:
                client.writer.write(b"x")  # a byte every 0.1 s: never done
                await honest(r.port)
                await asyncio.sleep(0.1)
            reply = await answer
            assert reply.status == 503 and 1.0 - TIMER_SLACK <= time.monotonic() - started < 2.5
            assert await client.closed()
            await client.close()
            h12 = [ln for ln in r.lines() if error_line("H12", "Request timeout").fullmatch(ln)]
            assert len(h12) == 1 and 'path="/"' in h12[0], r.lines()
            assert len(seen) >= 9 and all(s.path == "/ok" for s in seen)  # honest ones only

    run(main())


def test_the_head_timeout_runs_from_the_heads_first_byte_not_from_idleness() -> None:
    """A keep-alive connection idle for a while whose next head comes in two parts is served:
    the clock starts at the head's first byte."""

    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router(head_timeout=1.0) as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            await asyncio.sleep(1.6)  # idle past head_timeout (and past a sweep or two)
            client.writer.write(b"GET /late HTTP/1.1\r\nHost: myapp")
            await asyncio.sleep(0.3)
            client.writer.write(b".localhost\r\n\r\n")
            assert (await client.reply()).json()["path"] == "/late"
            await client.close()

    run(main())


def test_a_head_arriving_a_byte_at_a_time_within_the_timeout_is_served() -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            client = await Client.open(r.port)
            raw = b"\r\nGET /slow HTTP/1.1\r\nHost: myapp.localhost\r\nX-A: 1\r\n\r\n"
            for i in range(len(raw)):
                client.writer.write(raw[i : i + 1])
                await client.writer.drain()
                await asyncio.sleep(0.001)
            assert (await client.reply()).json()["path"] == "/slow"
            client.send("/again")  # and the connection goes on
            assert (await client.reply()).json()["path"] == "/again"
            await client.close()

    run(main())


# --- Host ----------------------------------------------------------------------------------------

BAD_HOSTS = [
    b"myapp.localhost/evil",
    b"myapp.localhost:8080:80",
    b"myapp.localhost:80 80",
    b"evil@myapp.localhost",
    b"myapp.localhost\\x",
    b"myapp.localhost:123456",
    b"myapp.\xfflocalhost",
    b"<script>",
]


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_an_invalid_host_is_400_even_when_a_lenient_reading_finds_an_app(host: bytes) -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            await refused(r.port, request(b"Host: " + host, line=b"GET / HTTP/1.1"), 400)
            assert web.connections == 0 and r.logs == []
            await honest(r.port)

    run(main())


def test_two_hosts_or_none_are_400_an_unknown_valid_one_404() -> None:
    async def main() -> None:
        seen: list[Seen] = []
        async with dyno(recording(seen)) as web, router() as r:
            r.table.set_app(app((web.backend("web.1"),)))
            get_line = b"GET / HTTP/1.1"
            await refused(r.port, request(b"Host: " + HOST, b"Host: evil.com", line=get_line), 400)
            await refused(r.port, request(b"Accept: */*", line=get_line), 400)
            assert (await get(r.port, host="other.localhost")).status == 404
            assert web.connections == 0
            await honest(r.port)

    run(main())


# --- the checks themselves -----------------------------------------------------------------------


def test_chunked_scanner_checks_the_crlf_after_data_across_reads() -> None:
    scanner = ChunkedScanner()
    assert scanner.scan(bytearray(b"5\r\nhello\r"), []) == 9
    with pytest.raises(BadMessage):
        scanner.scan(bytearray(b"X0\r\n\r\n"), [])


@pytest.mark.parametrize("body", BAD_CHUNKS, ids=lambda body: repr(body[:24]))
def test_chunked_scanner_refuses_each_bad_chunk(body: bytes) -> None:
    with pytest.raises(BadMessage):
        scanner = ChunkedScanner()
        scanner.scan(bytearray(body), [])
        assert scanner.done  # (a body cut short is no error: the rest may still come)


def test_oversized_and_valid_host() -> None:
    small = request(b"Host: a", line=b"GET / HTTP/1.1")
    assert oversized(small) == 0
    long_line = request(b"Host: a", line=b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1")
    assert oversized(long_line) == 414
    assert oversized(long_line[: MAX_REQUEST_LINE + 1], complete=False) == 414
    assert oversized(long_line[:MAX_REQUEST_LINE], complete=False) == 0  # may still end in time
    assert oversized(long_line[:MAX_REQUEST_LINE] + b"\r", complete=False) == 0
    assert oversized(request(b"Host: a", b"X: " + b"x" * MAX_FIELD_LINE)) == 431
    assert oversized(request(b"Host: a", *[b"X: " + b"x" * 8000] * 9)) == 431
    assert valid_host(b"myapp.localhost:8080") and valid_host(b"[::1]:80") and valid_host(b"")
    assert not any(valid_host(h) for h in BAD_HOSTS)
