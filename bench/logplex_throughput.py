"""Log lines per second through Logplex: emit → buffer → a `--tail` reader, and drains.

Cases, each with --lines lines of 100 bytes emitted as fast as one thread (or four) can:

- emit → buffer: the cost of emit() alone (the ring buffer, no readers);
- emit → buffer → asyncio feed: one in-process subscription read by `async for` on an event
  loop in another thread, as the SSE route reads it;
- emit → buffer → SSE over HTTP: a real `GET /log-streams/<token>` tail served by Hypercorn
  (as `waka up` serves the API) to a reader in a child process that counts events;
- the same with a syslog (TCP) drain, and with an HTTP drain (Logplex's application/logplex-1
  POSTs), each received by a child process that counts the lines it got;
- all three readers at once with lines emitted at a steady PACE (a very busy app) rather than
  flat out: does every reader keep up, and how far behind is it (lag)?

Emitters never wait for readers: a reader that falls behind loses its oldest lines (the
feed's queue holds 10,000, a drain's too). So each reader's row says how many lines it got,
at what rate (from the first emit to the last line received), how many it lost, and its lag
(from the last emit to the last line received; 0 when the reader was there first, as the
emitting thread's end is only seen after a switch of the GIL). When a reader loses lines,
its rate is the most it can take while the emitter holds the CPU; when it loses none, it
kept up.

Everything runs on loopback. SQLite holds the one app the log session needs.

    python bench/logplex_throughput.py            # 200,000 lines per case (~40 s)
    python bench/logplex_throughput.py --quick    # 20,000 lines: checks the script works
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import report  # noqa: E402
from machine import CpuWatch, describe  # noqa: E402

IDLE = 2.0  # a reader stops this long after the last line it got
PACE = 10_000  # lines per second of the paced case: a very busy app
ROUTER_LINE = "at=info method=GET path=/ host=shop.localhost fwd=127.0.0.1 status=200 bytes=512"
MESSAGE = ROUTER_LINE.ljust(100, ".")  # 100 bytes


@dataclass
class Row:
    case: str
    emitted: int
    emit_seconds: float
    reader: str
    received: int
    seconds: float  # from the first emit to the last line received
    lost: int
    lag: float | None = None  # from the last emit to the last line received
    paced: bool = False  # emitted at a set rate: the cost per emit means nothing

    def cells(self) -> tuple[str, ...]:
        emit_rate = self.emitted / self.emit_seconds if self.emit_seconds else 0
        rate = self.received / self.seconds if self.seconds else 0
        per_emit = self.emit_seconds / self.emitted * 1e6
        return (
            self.case,
            f"{self.emitted:,}",
            f"{emit_rate:,.0f}",
            "-" if self.paced else f"{per_emit:.2f}",
            self.reader,
            f"{self.received:,}",
            f"{rate:,.0f}" if self.received else "-",
            f"{self.lost:,}",
            "-" if self.lag is None else f"{max(self.lag, 0) * 1000:,.0f}",
        )


HEADER = (
    "case",
    "lines",
    "emit lines/s",
    "µs per emit",
    "reader",
    "received",
    "received lines/s",
    "lost",
    "lag ms",
)


def print_table(rows: list[Row]) -> None:
    cells = [r.cells() for r in rows]
    report.print_table(HEADER, cells, numeric={1, 2, 3, 5, 6, 7, 8})


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# --- emitters --------------------------------------------------------------------------------


def emit_lines(
    logplex: Any, app_id: str, lines: int, threads: int = 1, rate: float | None = None
) -> tuple[float, float]:
    """Emit `lines` lines from `threads` threads, as fast as they can or at `rate` lines per
    second in all; returns (start, end) wall-clock times."""
    per_thread = lines // threads
    barrier = threading.Barrier(threads + 1)

    def pump(n: int) -> None:
        emit, dyno = logplex.emit, f"web.{n + 1}"
        barrier.wait()
        if rate is None:
            for _ in range(per_thread):
                emit(app_id, "app", dyno, MESSAGE)
            return
        began, step = time.perf_counter(), threads / rate
        for sent in range(0, per_thread, 100):  # in bursts of 100, on schedule
            for _ in range(min(100, per_thread - sent)):
                emit(app_id, "app", dyno, MESSAGE)
            ahead = began + (sent + 100) * step - time.perf_counter()
            if ahead > 0 and sent + 100 < per_thread:
                time.sleep(ahead)

    workers = [threading.Thread(target=pump, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    start = time.time()
    barrier.wait()
    for w in workers:
        w.join()
    return start, time.time()


# --- readers in child processes (`--child ...`) ----------------------------------------------


def count_stream(sock: socket.socket, needle: bytes, expected: int) -> dict[str, float]:
    """Count `needle` in what arrives until `expected` were seen or the stream idles."""
    sock.settimeout(IDLE)
    count, carry, last = 0, b"", 0.0
    while count < expected:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not chunk:
            break
        data = carry + chunk
        count += data.count(needle)
        carry = data[-(len(needle) - 1) :]
        last = time.time()
    return {"count": count, "last": last}


def child_sse(port: int, path: str, expected: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(request.encode())
    print(json.dumps({"ready": True}), flush=True)
    print(json.dumps(count_stream(sock, b"\ndata: ", expected)), flush=True)


def child_syslog(expected: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    conn, _ = listener.accept()
    print(json.dumps(count_stream(conn, b"<190>1 ", expected)), flush=True)


def child_http(expected: int) -> None:
    got = {"count": 0, "last": 0.0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE  # the drain keeps its connection open: end it when it idles

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            got["count"] += int(self.headers["Logplex-Msg-Count"])
            got["last"] = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = IDLE
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    while got["count"] < expected:
        before = got["count"]
        server.handle_request()  # one connection: the drain keeps it alive
        if got["count"] == before:
            break
    print(json.dumps(got), flush=True)


class Child:
    """This script run as a reader; its first JSON line says it is ready (or its port)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.hello = json.loads(self.process.stdout.readline())

    def result(self) -> dict[str, float]:
        assert self.process.stdout is not None
        out = json.loads(self.process.stdout.readline())
        self.process.wait(10)
        return out


# --- the platform, the API and drains --------------------------------------------------------


@contextlib.contextmanager
def serving(api: Any) -> Iterator[int]:
    """The API on a loopback port, served by Hypercorn in a thread (as `waka up` serves it)."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None  # the table is the output
    config.graceful_timeout = 1
    ready, state = threading.Event(), {}

    async def run() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await serve(api, config, shutdown_trigger=state["stop"].wait)

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.2)
    try:
        yield port
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)


@dataclass
class Stage:
    platform: Any
    app_id: str
    key: str
    port: int
    owner: dict[str, str]

    def tail_path(self) -> str:
        """A new `--tail` log session's stream path, made through the API."""
        import httpx

        created = httpx.post(
            f"http://127.0.0.1:{self.port}/apps/bench/log-sessions",
            json={"tail": True, "lines": 1},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        created.raise_for_status()
        return urlsplit(created.json()["logplex_url"]).path

    def add_drain(self, url: str) -> None:
        self.platform.ledger.add_drain(self.owner, UUID(self.app_id), url)
        self.platform.projector.catch_up()


@contextlib.contextmanager
def stage(logplex: Any) -> Iterator[Stage]:
    """A platform on a temporary SQLite home with one app, and the logs API served."""
    from starlette.applications import Starlette

    from waka.api.app import RequestIdMiddleware
    from waka.api.routes.logs import routes
    from waka.bootstrap import bootstrap
    from waka.config import Settings
    from waka.projections.drains import DrainsProjection

    with tempfile.TemporaryDirectory(prefix="waka-bench-") as home:
        platform = bootstrap(Settings(home=Path(home)))
        try:
            projector = platform.projector
            if not any(isinstance(p, DrainsProjection) for p in projector.projections):
                projector.projections.append(DrainsProjection())  # until it is registered
                projector.setup()
            account, key = platform.ledger.register_user("bench@example.com")
            app = platform.ledger.create_app(account.as_actor(), "bench")
            projector.catch_up()
            api = Starlette(routes=routes(platform, logplex))
            api.add_middleware(RequestIdMiddleware)
            with serving(api) as port:
                yield Stage(platform, str(app.id), key, port, account.as_actor())
        finally:
            platform.close()


# --- the cases -------------------------------------------------------------------------------


def case_buffer(lines: int, threads: int) -> list[Row]:
    from waka.logplex import Logplex

    logplex = Logplex()
    start, end = emit_lines(logplex, "app", lines, threads)
    label = f"emit → buffer ({threads} thread{'s' if threads > 1 else ''})"
    return [Row(label, lines // threads * threads, end - start, "-", 0, 0, 0)]


def case_feed(lines: int) -> list[Row]:
    from waka.logplex import Logplex

    logplex = Logplex()
    got = {"count": 0, "last": 0.0, "lost": 0}
    subscribed = threading.Event()

    async def read() -> None:
        feed = logplex.subscribe("app")
        subscribed.set()
        with feed:
            while got["count"] < lines:
                try:
                    batch = await asyncio.wait_for(feed.batch(), IDLE)
                except TimeoutError:
                    break
                got["count"] += len(batch)
                got["last"] = time.time()
            got["lost"] = feed.dropped

    reader = threading.Thread(target=asyncio.run, args=(read(),))
    reader.start()
    subscribed.wait(10)
    start, end = emit_lines(logplex, "app", lines)
    reader.join()
    return [
        Row("emit → buffer → asyncio feed", lines, end - start, "async for", got["count"],
            got["last"] - start, got["lost"])
    ]  # fmt: skip


def case_http(lines: int, drains: tuple[str, ...] = (), rate: float | None = None) -> list[Row]:
    from waka.logplex import Logplex
    from waka.logplex.drains import DrainForwarder
    from waka.projections.drains import all_drains

    logplex = Logplex()
    label = "emit → buffer → SSE over HTTP" + "".join(f" + {d} drain" for d in drains)
    if rate is not None:
        label += f", paced at {rate:,.0f}/s"
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        st = stack.enter_context(stage(logplex))
        receivers: dict[str, Child] = {}
        for drain in drains:
            receivers[drain] = Child(drain, str(lines))
            scheme = "syslog" if drain == "syslog" else "http"
            st.add_drain(f"{scheme}://127.0.0.1:{receivers[drain].hello['port']}/{drain}")
        forwarder = DrainForwarder(logplex, st.platform.store, refresh_interval=3600)
        forwarder.start()
        stack.callback(forwarder.stop)
        sse = Child("sse", str(st.port), st.tail_path(), str(lines))
        deadline = time.time() + 10
        while logplex.subscribers(st.app_id) < 1 and time.time() < deadline:
            time.sleep(0.01)
        start, end = emit_lines(logplex, st.app_id, lines, rate=rate)
        paced = rate is not None

        def row(reader: str, got: dict[str, float], lost: int) -> Row:
            received = int(got["count"])
            last = got["last"]
            return Row(label, lines, end - start, reader, received, last - start, lost,
                       last - end if received else None, paced)  # fmt: skip

        got = sse.result()
        rows.append(row("SSE tail", got, lines - int(got["count"])))
        kinds = {r["id"]: urlsplit(r["url"]).path.strip("/") for r in all_drains(st.platform.store)}
        stats = {kinds[drain_id]: s for drain_id, s in forwarder.stats().items()}
        for drain, receiver in receivers.items():
            rows.append(row(f"{drain} drain", receiver.result(), stats[drain].dropped))
    return rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "sse":
            child_sse(int(rest[0]), rest[1], int(rest[2]))
        elif kind == "syslog":
            child_syslog(int(rest[0]))
        else:
            child_http(int(rest[0]))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 lines: checks it works")
    parser.add_argument("--lines", type=int, default=None, help="lines per case (200,000)")
    args = parser.parse_args()
    lines = args.lines or (20_000 if args.quick else 200_000)

    machine = describe()
    for line in machine:
        say(line)
    watch = CpuWatch()
    watch.start()
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        ("emit → buffer", lambda: case_buffer(lines, 1)),
        ("emit → buffer, 4 threads", lambda: case_buffer(lines, 4)),
        ("asyncio feed", lambda: case_feed(lines)),
        ("SSE over HTTP", lambda: case_http(lines)),
        ("SSE + syslog drain", lambda: case_http(lines, ("syslog",))),
        ("SSE + HTTP drain", lambda: case_http(lines, ("http",))),
        (
            f"SSE + both drains at {PACE:,}/s",
            lambda: case_http(min(lines, PACE * 5), ("syslog", "http"), PACE),
        ),
    ]
    rows: list[Row] = []
    for name, step in steps:
        say(f"{name}...")
        rows += step()
    others = watch.others_share()

    print()
    print(
        f"waka Logplex throughput ({'quick' if args.quick else 'full'} run; {lines:,} lines of "
        f"{len(MESSAGE)} bytes per case; Python {platform.python_version()})"
    )
    print("\n".join(machine))
    print(f"CPU used by other processes (over 5% means noisy figures): {others:.0%}")
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
