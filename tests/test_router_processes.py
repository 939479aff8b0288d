"""Several router processes on one host share a port (SO_REUSEPORT), as `waka router` copies
do: real processes, real HTTP, each logging what it served to a file of its own. And every
request's router line reaches Logplex once, under load."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import test_router
from tests.test_router import INFO_LINE, LOOPBACK, dyno, echo_dyno, get, router, run
from waka.logplex import Logplex
from waka.router import Route, RouteTable
from waka.router.proxy import LOG_EVERY

PROCESS = Path(__file__).resolve().parent / "router_process.py"


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello from the dyno"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _Hello)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def router_process(port: int, backend_port: int, log: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, str(PROCESS), str(port), str(backend_port), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "listening":
            process.kill()
            raise AssertionError(f"router process did not start: {process.stderr.read()}")  # type: ignore[union-attr]
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def fetch(port: int) -> bytes:
    """GET / of myapp on a new connection (the kernel picks a process per connection)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": "myapp.localhost"})
        answer = conn.getresponse()
        assert answer.status == 200
        return answer.read()
    finally:
        conn.close()


def served(log: Path) -> int:
    """How many requests a process logged (its lines reach the file at the end of a turn)."""
    return sum(1 for line in log.read_text().splitlines() if INFO_LINE.fullmatch(line))


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_two_router_processes_serve_one_port_and_one_survives_the_other(tmp_path: Path) -> None:
    port = free_port()
    logs = [tmp_path / "router-a.log", tmp_path / "router-b.log"]
    for log in logs:
        log.touch()
    with (
        backend() as backend_port,
        router_process(port, backend_port, logs[0]) as first,
        router_process(port, backend_port, logs[1]),
    ):
        for _ in range(60):
            assert fetch(port) == b"hello from the dyno"
        wait_for(lambda: served(logs[0]) + served(logs[1]) == 60, "60 log lines")
        # The kernel spread the connections over both processes (all 60 on one of two
        # listeners: a chance of 2 in 2**60).
        assert served(logs[0]) > 0 and served(logs[1]) > 0
        before = served(logs[1])

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        for _ in range(20):  # the survivor takes every new connection
            assert fetch(port) == b"hello from the dyno"
        wait_for(lambda: served(logs[1]) == before + 20, "the survivor's 20 lines")


def test_a_router_without_reuse_port_cannot_join(tmp_path: Path) -> None:
    """SO_REUSEPORT is what lets them share the port: a router without it is refused."""
    port = free_port()
    log = tmp_path / "router.log"
    log.touch()
    with backend() as backend_port, router_process(port, backend_port, log):

        async def main() -> None:
            from waka.router import Router

            alone = Router(RouteTable(), log=lambda app_id, text: None)
            with pytest.raises(OSError):
                await alone.start(LOOPBACK, port)
            await alone.close()

        run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_every_request_under_load_has_its_line_in_logplex(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 requests at once, with the router's default log_every (lines handed over together,
    every 20 ms): 40 lines in Logplex, one per request id, in Heroku's format, in order, and
    none lost when the router closes with lines still held."""
    monkeypatch.setattr(test_router, "_loop", loop)
    texts: list[str] = []

    def emit(app_id: str, text: str) -> None:
        texts.append(text)
        logplex.emit(app_id, "heroku", "router", text)

    async def main() -> None:
        async with dyno(echo_dyno("one")) as one:
            table = RouteTable()
            table.set_app(Route("app-1", "myapp", backends=(one.backend("web.1"),)))
            async with router(table, log_every=LOG_EVERY) as r:
                r.router.log = emit
                replies = await asyncio.gather(*(get(r.port, f"/n/{i}") for i in range(30)))
                assert all(reply.status == 200 for reply in replies)
                await asyncio.sleep(LOG_EVERY * 3)
                assert len(logplex.recent("app-1", 1500)) == 30  # handed over meanwhile
                replies = await asyncio.gather(*(get(r.port, f"/n/{i}") for i in range(30, 40)))
                assert all(reply.status == 200 for reply in replies)
            # closed at once: the last lines were handed over by close()
        lines = logplex.recent("app-1", 1500)
        assert len(lines) == 40
        assert all(line.dyno == "router" and line.source == "heroku" for line in lines)
        matches = [INFO_LINE.fullmatch(line.message) for line in lines]
        assert all(matches)
        assert sorted(m["path"] for m in matches) == sorted(f"/n/{i}" for i in range(40))  # type: ignore[index]
        assert len({m["request_id"] for m in matches}) == 40  # type: ignore[index]
        assert [line.seq for line in lines] == sorted(line.seq for line in lines)
        assert len(texts) < 40  # some turns served several requests: their lines went together

    logplex = Logplex()
    run(main())


@pytest.mark.parametrize(
    "message",
    ["a\nb", "a\nb\n", "a\n\nb", "\n", "a\r\nb\nc\rd", "x" * 10_001 + "\n" + "y", "one"],
)
def test_split_message_takes_newline_batches_apart_as_the_regex_does(message: str) -> None:
    """Logplex splits a router batch with str.split: the same lines as its regex gives."""
    from waka.logplex.lines import _BREAK, MAX_LINE, split_message

    parts = _BREAK.split(message)
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    expected = [p[i : i + MAX_LINE] for p in parts for i in range(0, max(len(p), 1), MAX_LINE)]
    assert split_message(message) == expected
