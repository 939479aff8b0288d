"""The router's own Python work per request, without the kernel or the event loop.

One client connection and one pooled dyno connection with fake transports (writes are kept,
nothing goes to a socket); each request is wrk's head handed to the client's data_received,
and the backend's answer (nginx serving a 128-byte file) to the dyno's: the router's callbacks
do all they do for a real request, and the time per request is theirs alone. What this
leaves out (reads, writes, epoll: the "floor" row of router_throughput.py) costs the same
for any proxy written this way.

    python bench/router_inprocess.py             # the time per request, best of 7 rounds
    python bench/router_inprocess.py --profile   # and where it goes (cProfile, by own time)
    python bench/router_inprocess.py --heads python  # in Python only, not waka/router/_heads.c
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from waka.router.conn import Conn
from waka.router.proxy import Router
from waka.router.table import Backend, Route, RouteTable

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n"  # what wrk sends
BODY = (b"Hello from a dyno. " * 7)[:128]
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 128\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6757f0a0-80"\r\nAccept-Ranges: bytes\r\n\r\n' + BODY
)


FLUSH_EVERY = 500  # requests per batch of log lines (20 ms at 25,000 requests/s)


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int], sockname: tuple[str, int]) -> None:
        super().__init__()
        self.extra = {"peername": peer, "sockname": sockname, "sslcontext": None}
        self.written = 0
        self.last = b""
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += 1
        self.last = data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def setup(loop: asyncio.AbstractEventLoop, request: bytes, response: bytes):  # type: ignore[no-untyped-def]
    table = RouteTable()
    table.set_app(Route("app-1", "bench", backends=(Backend("127.0.0.1", 9, "web.1"),)))
    lines: list[str] = []

    def log(app_id: str, text: str) -> None:
        lines.append(text)
        if len(lines) > 100:
            lines.clear()

    router = Router(table, log=log, log_every=0.02)
    router._loop = loop
    client = router._protocol()
    client.connection_made(FakeTransport(("127.0.0.1", 40000), ("127.0.0.1", 8080)))
    dyno = Conn(loop)
    dyno.connection_made(FakeTransport(("127.0.0.1", 9), ("127.0.0.1", 50000)))
    dyno.on_data = router._dyno_data
    dyno.on_lost = router._dyno_lost
    key = ("127.0.0.1", 9)

    def one() -> None:
        client.data_received(request)
        dyno.data_received(response)

    router._pool.put(key, dyno, 0.0)

    return router, client, dyno, one, lines


def run(n: int, request: bytes, response: bytes, profile: bool) -> float:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    router, client, _, one, lines = setup(loop, request, response)
    for _ in range(1000):
        one()
    router._flush_lines()
    assert lines[-1].count("\n") == 999 and "status=200 bytes=" in lines[-1], lines[-1][-300:]
    assert client.transport.last.endswith(BODY), client.transport.last  # type: ignore[attr-defined]
    assert client.task is None and client.exchange is None
    best = float("inf")
    for _ in range(1 if profile else 7):
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        begun = time.perf_counter()
        for _ in range(n // FLUSH_EVERY):
            for _ in range(FLUSH_EVERY):
                one()
            router._flush_lines()  # as every 20 ms: the log lines are made and handed on
        took = time.perf_counter() - begun
        if prof is not None:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        best = min(best, took / n)
    loop.close()
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="requests per round")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--heads",
        choices=("c", "python"),
        default="c",
        help="the commonest heads and messages taken in C (waka/router/_heads.c, when built) "
        "or in Python",
    )
    args = parser.parse_args()
    if args.heads == "python":
        from waka.router import http, proxy

        http.simple_request, http.simple_response = http.simple_request_re, http.simple_response_re
        proxy.take_request, proxy.relay_response = http.take_request_py, http.relay_response_py
    else:
        import waka.router._heads  # noqa: F401  (fails clearly when it was not built)
    print(f"router callbacks: {run(args.n, REQUEST, RESPONSE, args.profile):.2f} µs per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
