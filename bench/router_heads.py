"""What parsing a head costs: waka's router (the regex engine) against llhttp (`httptools`).

For four heads (wrk's request, a browser's, nginx's response to wrk, an Express app's), the
time per head of:

- waka:             parse_request / parse_response, as the router calls them (checks, the
                    fields it acts on found, the forwarded fields cut out)
- llhttp, check:    a new llhttp parser fed the head, no callbacks: its syntax checked, nothing
                    taken out (what llhttp alone costs; the router would still have to find
                    Host, Content-Length and Connection, and cut Connection out)
- llhttp, fields:   the same with an `on_header` callback collecting each field, lower-cased
                    name and value (how a Python program gets the fields out of llhttp)

    python bench/router_heads.py      # needs `pip install httptools`
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from waka.router.http import parse_request, parse_response

HEADS = {
    "wrk's request": b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n",
    "a browser's request": (
        b"GET /some/path?x=1 HTTP/1.1\r\nHost: bench.localhost\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
        b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.9\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\nCookie: session=abcdef0123456789; theme=dark\r\n"
        b"Connection: keep-alive\r\n"
    ),
    "nginx's response (static file)": (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 128\r\n"
        b"Last-Modified: Mon, 30 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n"
        b'ETag: "6757f0a0-80"\r\nAccept-Ranges: bytes\r\n'
    ),
    "an Express app's response": (
        b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Content-Type: application/json; charset=utf-8\r\nContent-Length: 1234\r\n"
        b'ETag: W/"4d2-abcdefabcdef"\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n'
        b"Connection: keep-alive\r\nVary: Accept-Encoding\r\nCache-Control: no-cache\r\n"
        b"Set-Cookie: a=b; Path=/; HttpOnly\r\n"
    ),
}


class _Quiet:
    __slots__ = ()


class _Fields:
    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))


def ns(call: object, number: int = 50_000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9  # type: ignore[arg-type]


def main() -> int:
    try:
        from httptools import HttpRequestParser, HttpResponseParser
    except ImportError:
        print("needs httptools: pip install httptools", file=sys.stderr)
        return 2
    print("| head | bytes | waka (regex) ns | llhttp, check ns | llhttp, fields ns |")
    print("|---|--:|--:|--:|--:|")
    for name, head in HEADS.items():
        whole = head + b"\r\n"
        if head.startswith(b"HTTP/"):
            parser = HttpResponseParser

            def waka(head: bytes = head) -> object:
                return parse_response(head, b"GET")
        else:
            parser = HttpRequestParser

            def waka(head: bytes = head) -> object:
                return parse_request(head)

        def check(parser: type = parser, whole: bytes = whole) -> None:
            parser(_Quiet()).feed_data(whole)

        def fields(parser: type = parser, whole: bytes = whole) -> list[tuple[bytes, bytes]]:
            sink = _Fields()
            parser(sink).feed_data(whole)
            return sink.fields

        print(f"| {name} | {len(head) + 2} | {ns(waka):.0f} | {ns(check):.0f} | {ns(fields):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
