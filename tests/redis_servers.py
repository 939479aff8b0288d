"""A real redis-server for Logplex's tests: on a free loopback port (never 6379), in a
temporary directory, stopped (or killed, or restarted on the same port) by the test.

    from tests.redis_servers import logplex_redis  # noqa: F401  (the fixture)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = loopback_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "redis.log").open("ab")
        options = {"port": str(self.port), "bind": "127.0.0.1", "dir": str(self.root)}
        options |= {"save": "", "appendonly": "no"}  # a test's Redis keeps nothing on disk
        self.process = subprocess.Popen(
            [self.binary, *(x for k, v in options.items() for x in (f"--{k}", v))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe,
            ):
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not start: {(self.root / 'redis.log').read_text()}")

    def stop(self) -> None:
        """kill -9: Redis goes away at once, as a crash or a cut network would look."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def logplex_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (scripts/test-deps installs it)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = RedisServer(binary, tmp_path / "logplex-redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
