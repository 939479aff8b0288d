"""The router's HTTP heads, chunked framing and log lines, without sockets."""

from __future__ import annotations

import threading

import pytest

from waka.router import Route, RouteTable, http
from waka.router.http import (
    CHUNKED,
    UNTIL_CLOSE,
    BadMessage,
    ChunkedScanner,
    parse_request,
    parse_response,
)
from waka.router.logline import H14, H27, INFO_FIELDS, info_lines, router_line


def head(*lines: str) -> bytes:
    """A head as the router parses it: each line with its CRLF, without the blank line."""
    return "".join(line + "\r\n" for line in lines).encode()


def full_request(raw: bytes) -> http.Request:
    """What parse_request's full path makes of `raw` (its fast path must agree)."""
    line = http._REQUEST_HEAD.fullmatch(raw)
    assert line is not None
    return http._parse_request(raw, line, raw.lower())


def full_response(raw: bytes, method: bytes = b"GET") -> http.Response:
    line = http._RESPONSE_HEAD.fullmatch(raw)
    assert line is not None
    return http._parse_response(raw, method, line, raw.lower())


REQUESTS = [
    head("GET / HTTP/1.1", "Host: a.localhost"),
    head("GET /x?y=1 HTTP/1.1", "host:  A.localhost:8080  ", "Accept: */*"),
    head("POST /p HTTP/1.1", "Host: a", "Content-Length: 5", "Connection: keep-alive"),
    head("GET / HTTP/1.1", "Host: a", "Connection: close", "Cookie: c=d"),
    head("GET / HTTP/1.0", "Host: a"),
    head("GET / HTTP/1.0", "Host: a", "Connection: Keep-Alive"),
    head("GET / HTTP/1.0"),
    head("GET / HTTP/1.1", "Host: a", "Connection: keep-alive, X-Secret", "X-Secret: 1"),
    head("GET / HTTP/1.1", "Host: a", "X-Forwarded-For: 1.2.3.4", "X-Request-Id: " + "r" * 20),
    head("GET http://b.localhost/q HTTP/1.1", "Host: a"),
    head("GET / HTTP/1.1", "Host: a", "Upgrade: websocket", "Connection: Upgrade"),
    head("PUT / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Expect: 100-continue"),
    head("GET / HTTP/1.2", "Host: a"),  # read as HTTP/1.1
    # The one-regex path (one Host, maybe a Connection after it) and its neighbours:
    head("GET / HTTP/1.1", "HOST: a", "Hostname: b", "TE-x: 1", "Connection: Close"),
    head("GET / HTTP/1.1", "Connection: close", "Host: a"),
    head("GET / HTTP/1.0", "Host: a", "Connection: keep-alive"),
    head("GET / HTTP/1.1", "Host: a", "Connection: keep-alive", "Content-Length: 3"),
    head("GET / HTTP/1.1", "Host: a", "Connection: keep-alive", "Connection: close"),
    head("GET / HTTP/1.1", "Host: a", "Connection: keep-alive, X-Y", "X-Y: 1"),
    head("GET / HTTP/1.1", "Host:", "Accept: */*"),
]


@pytest.mark.parametrize("raw", REQUESTS)
def test_request_fast_and_full_paths_agree(raw: bytes) -> None:
    assert parse_request(raw) == full_request(raw)


def test_request_fields_forwarded_and_dropped() -> None:
    req = parse_request(
        head(
            "POST /upload HTTP/1.1",
            "Host: app.localhost",
            "Content-Length: 12",
            "Connection: keep-alive, X-Hop",
            "X-Hop: secret",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Proxy-Authorization: Basic x",
            "X-Forwarded-Proto: https",
            "X-Forwarded-For: 10.0.0.1",
            "X-Forwarded-For: 10.0.0.2",
            "X-Request-Id: short",
            "X-Kept: yes",
        )
    )
    assert req.host == b"app.localhost" and req.body == 12 and req.keep_alive
    assert req.fields == b"Host: app.localhost\r\nContent-Length: 12\r\nX-Kept: yes\r\n"
    assert req.forwarded_for == b"10.0.0.1, 10.0.0.2"
    assert req.request_id == b""  # not 20-200 characters of Heroku's alphabet


def test_request_framing_and_connection_rules() -> None:
    chunked = parse_request(head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"))
    assert chunked.body == CHUNKED and b"transfer-encoding" not in chunked.fields.lower()
    assert not parse_request(head("GET / HTTP/1.0", "Host: a")).keep_alive
    assert parse_request(head("GET / HTTP/1.0", "Host: a", "Connection: keep-alive")).keep_alive
    assert not parse_request(head("GET / HTTP/1.1", "Host: a", "Connection: close")).keep_alive
    upgrade = parse_request(
        head("GET / HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: websocket")
    )
    assert upgrade.upgrade == b"websocket"
    assert parse_request(head("GET / HTTP/1.1", "Host: a", "Upgrade: websocket")).upgrade is None
    absolute = parse_request(head("GET http://b.localhost:80/q?x HTTP/1.1", "Host: a"))
    assert absolute.target == b"/q?x" and absolute.host == b"b.localhost:80"
    assert absolute.fields == b"Host: b.localhost:80\r\n"
    expect = parse_request(
        head("POST / HTTP/1.1", "Host: a", "Content-Length: 1", "Expect: 100-continue")
    )
    assert expect.expect_continue and b"expect" not in expect.fields.lower()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (head("GET / HTTP/1.1"), 400),  # no Host
        (head("GET / HTTP/1.1", "Host: a", "Host: b"), 400),
        (head("GET / HTTP/1.1", "Host: a", "Content-Length: 1", "Content-Length: 2"), 400),
        (head("GET / HTTP/1.1", "Host: a", "Content-Length: -1"), 400),
        (head("GET / HTTP/1.1", "Host: a", "Content-Length: 1", "Transfer-Encoding: chunked"), 400),
        (head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, gzip"), 400),
        (head("GET / HTTP/1.0", "Host: a", "Transfer-Encoding: chunked"), 400),
        (head("GET / HTTP/1.1", "Host: a", "Bad Name: x"), 400),
        (head("GET / HTTP/1.1", "Host: a", " folded"), 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\x00\r\n", 400),
        (head("GET  / HTTP/1.1", "Host: a"), 400),
        (head("GET / HTTP/2.0", "Host: a"), 505),
        (head("GET / FTP/1.1", "Host: a"), 400),
        (head("GET ftp://x/ HTTP/1.1", "Host: a"), 400),
    ],
)
def test_bad_requests(raw: bytes, status: int) -> None:
    with pytest.raises(BadMessage) as error:
        parse_request(raw)
    assert error.value.status == status


RESPONSES = [
    head("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: keep-alive"),
    head("HTTP/1.1 200 OK", "Server: x", "content-length:  18 ", "Date: now"),
    head("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: close"),
    head("HTTP/1.0 200 OK", "Content-Length: 5"),
    head("HTTP/1.0 200 OK", "Content-Length: 5", "Connection: keep-alive"),
    head("HTTP/1.1 200 OK", "Content-Type: text/plain"),
    head("HTTP/1.1 204 No Content"),
    head("HTTP/1.1 304 Not Modified", "Content-Length: 100"),
    head("HTTP/1.1 200"),
    head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: 10"),
    head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip"),
    head("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: X-Hop", "X-Hop: 1"),
    head("HTTP/1.1 101 Switching", "Upgrade: websocket", "Connection: Upgrade"),
    # The one-regex path (a Content-Length and a Connection, either order) and its neighbours:
    head("HTTP/1.1 200 OK", "Connection: Keep-Alive", "ETag: x", "content-length: 007"),
    head("HTTP/1.0 404 Not Found", "Connection: close", "Content-Length: 9"),
    head("HTTP/1.1 200 OK", "Connection: close"),
    head("HTTP/1.1 200 OK", "Content-Length: 5", "TE-x: 1", "Trailer-ish: 2"),
    head("HTTP/1.1 200 OK", "Content-Length: 5 ", "Connection: keep-alive ", "Server: x"),
    head("HTTP/1.1 200 OK", "Connection: keep-alive", "Connection: close", "Content-Length: 1"),
    head("HTTP/1.1 200 OK", "Content-Length: 1", "Connection: keep-alive", "Content-Length: 1"),
    head("HTTP/1.1 304 Not Modified", "Content-Length: 100", "Connection: keep-alive"),
]


@pytest.mark.parametrize("raw", RESPONSES)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_response_fast_and_full_paths_agree(raw: bytes, method: bytes) -> None:
    assert parse_response(raw, method) == full_response(raw, method)


def test_response_framing() -> None:
    assert parse_response(head("HTTP/1.1 200 OK", "Content-Length: 7"), b"GET").body == 7
    assert parse_response(head("HTTP/1.1 200 OK", "Content-Length: 7"), b"HEAD").body == 0
    assert parse_response(head("HTTP/1.1 304 Not Modified"), b"GET").body == 0
    until_close = parse_response(head("HTTP/1.1 200 OK"), b"GET")
    assert until_close.body == UNTIL_CLOSE and not until_close.keep_alive
    chunked = parse_response(
        head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: 10"), b"GET"
    )
    assert chunked.body == CHUNKED and chunked.fields == b""  # Content-Length dropped
    old = parse_response(head("HTTP/1.0 200 OK", "Content-Length: 1"), b"GET")
    assert not old.keep_alive and old.status_line == b"HTTP/1.1 200 OK\r\n"
    listed = parse_response(
        head("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: X-Hop", "X-Hop: 1"), b"GET"
    )
    assert listed.fields == b"Content-Length: 5\r\n"
    for bad in (
        head("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"),
        head("HTTP/1.1 200 OK", "Content-Length: x"),
        head("HTTP/1.1 2000 OK"),
        head("HTTP/2 200 OK"),
        head("HTTP/1.1 200 OK", "No colon"),
    ):
        with pytest.raises(BadMessage):
            parse_response(bad, b"GET")


CHUNKED_BODY = (
    b"4\r\nwiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n"
)


@pytest.mark.parametrize("split", range(1, len(CHUNKED_BODY)))
def test_chunked_scanner_finds_the_end_however_the_bytes_arrive(split: int) -> None:
    for decode in (False, True):
        scanner = ChunkedScanner(decode=decode)
        buf = bytearray(CHUNKED_BODY[:split])
        payload: list[bytes] = []
        taken = scanner.scan(buf, payload)
        rest = bytearray(buf[taken:] + CHUNKED_BODY[split:] + b"NEXT")
        taken2 = scanner.scan(rest, payload)
        assert scanner.done
        assert taken + taken2 == len(CHUNKED_BODY)  # stops exactly at the end
        if decode:
            assert b"".join(payload) == b"wikipedia in\r\n\r\nchunks."


def test_chunked_scanner_refuses_bad_framing() -> None:
    for bad in (b"zz\r\n", b"4\r\nwikiXX", b"1" * 5000):
        with pytest.raises(BadMessage):
            ChunkedScanner().scan(bytearray(bad), [])


def test_router_line_format_and_escaping() -> None:
    line = router_line(
        b"GET", b'/a"b', b"my host", b"abc", b'1.2.3.4, "x', 200, b"web.1", 0.0, 0.0126, 1234
    )
    assert line == (
        'at=info method=GET path="/a\\"b" host=my%20host request_id=abc fwd="1.2.3.4, \\"x" '
        "dyno=web.1 connect=0ms service=13ms status=200 bytes=1234 protocol=http"
    )
    error = router_line(b"GET", b"/", b"h", b"id", b"1.1.1.1", 503, code=H14)
    assert error == (
        'at=error code=H14 desc="No web processes running" method=GET path="/" host=h '
        'request_id=id fwd="1.1.1.1" dyno= connect= service= status=503 bytes= protocol=http'
    )
    gone = router_line(b"GET", b"/", b"h", b"id", b"f", 499, b"web.2", 0.001, 0.5, 0, H27)
    assert gone.startswith('at=info code=H27 desc="Client Request Interrupted" ')
    assert gone.endswith("dyno=web.2 connect=1ms service=500ms status=499 bytes=0 protocol=http")


@pytest.mark.parametrize(
    "requests",
    [
        [(b"GET", b"/", b"a.localhost", b"id1", b"127.0.0.1", 0.0, 0.0126, 200, 12)],
        [  # one path, Host or fwd to escape makes the batch escape them all: each as alone
            (b"GET", b"/", b"a.localhost", b"id1", b"127.0.0.1", 0.0, 0.0126, 200, 12),
            (b"POST", b'/a"b\\', b"my host", b"id2", b'1.2.3.4, "x', 0.0031, 1.2, 404, 0),
            (b"GET", b"/c", b'h"', b"id3", b"10.0.0.1", 0.0, 0.0004, 301, 99),
        ],
    ],
)
def test_info_lines_are_router_lines_made_together(requests: list[tuple]) -> None:
    rows: list = []
    for method, path, host, rid, fwd, connect, service, status, sent in requests:
        rows += (method, path, host, rid, fwd, b"web.1", connect * 1000 + 0.5, service * 1000 + 0.5)
        rows += (status, sent)
    assert len(rows) == INFO_FIELDS * len(requests)
    assert info_lines(rows) == "\n".join(
        router_line(method, path, host, rid, fwd, status, b"web.1", connect, service, sent)
        for method, path, host, rid, fwd, connect, service, status, sent in requests
    )


def test_route_table_is_consistent_under_concurrent_updates() -> None:
    """Another thread replaces routes while lookups run: a lookup always finds one whole
    route (the old or the new), never a mix or nothing."""
    table = RouteTable()
    routes = [Route("id", "app", backends=()), Route("id", "app", maintenance=True)]
    table.set_app(routes[0], ["www.example.test"])
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            table.set_app(routes[i % 2], ["www.example.test"])

    writer = threading.Thread(target=flip)
    writer.start()
    try:
        for _ in range(20_000):
            assert table.lookup("www.example.test") in routes
            assert table.lookup(b"app.localhost") in routes
    finally:
        stop.set()
        writer.join()


def test_lookup_memo_is_bounded_and_forgets_on_update() -> None:
    table = RouteTable()
    for n in range(9000):  # Host values a client made up
        assert table.lookup(f"n{n}.localhost") is None
    assert len(table._snapshot.seen) <= 4096
    route = Route("id", "n1")
    table.set_app(route)
    assert table.lookup("n1.localhost") is route  # a new snapshot: nothing stale remembered
