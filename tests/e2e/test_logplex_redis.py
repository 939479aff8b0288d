"""Logplex on Redis, driven by the real Heroku CLI: `waka up` on PostgreSQL with WAKA_REDIS_URL
(a redis-server of the test's own) serves `heroku logs` and `--tail` with lines that ANOTHER
OS process wrote through waka.logplex.redis_logplex; the lines outlive a restart of `waka up`;
a syslog drain added with `heroku drains:add` gets the other process's lines; with Redis down
`heroku logs` says so clearly, and works again once Redis is back."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    REPO,
    Api,
    WakaServer,
    clean_env,
    flat,
    start_server,
    unique_name,
    wait_for,
)
from tests.redis_servers import RedisServer, logplex_redis  # noqa: F401

pytestmark = pytest.mark.e2e

# Another process: writes each line of its stdin into an app's log through Redis, as a
# router, a worker or a dyno's pump of another waka process would; "ok" once it is in Redis.
EMITTER = """
import sys
from waka.logplex.redis_logplex import RedisLogplex
plex = RedisLogplex(sys.argv[1])
for text in sys.stdin:
    plex.emit(sys.argv[2], "app", "web.1", text.rstrip("\\n"))
    print("ok" if plex.flush(5) and plex.dropped == 0 else "dropped", flush=True)
"""


class Emitter:
    def __init__(self, redis_url: str, app_id: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", EMITTER, redis_url, app_id],
            cwd=REPO,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def emit(self, text: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@pytest.fixture
def waka_on_redis(
    heroku_cli: Path,
    logplex_redis: RedisServer,  # noqa: F811
    pg_schema_url: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WakaServer]:
    url, schema = pg_schema_url
    server = start_server(
        tmp_path_factory.mktemp("waka"),
        heroku_cli,
        url,
        schema,
        env={"WAKA_REDIS_URL": logplex_redis.url},
    )
    try:
        yield server
    finally:
        try:
            if server.process is not None:
                server.stop_cleanly()
        finally:
            server.remove_dynos()


def logs(server: WakaServer, app: str, *args: str) -> str:
    return server.heroku("logs", "-n", "1500", "-a", app, *args).stdout


def test_heroku_logs_shows_lines_another_process_wrote_and_they_outlive_a_restart(
    waka_on_redis: WakaServer,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    server = waka_on_redis
    app = unique_name("redis-logs")
    server.heroku("apps:create", app)
    api = Api(server)
    app_id = api.get(f"/apps/{app}")["id"]
    api.close()
    server.heroku("config:set", "GREETING=hello", "-a", app)  # waka up's own app[api] lines

    emitter = Emitter(logplex_redis.url, app_id)
    try:
        emitter.emit("hello from another process")
    finally:
        emitter.close()
    shown = wait_for(
        lambda: (out := logs(server, app)) and "Release v2 created" in out and out,
        timeout=20,
        what="waka's own lines and the other process's",
    )
    assert "app[web.1]: hello from another process" in shown
    assert "app[api]: Set GREETING config vars by owner@example.com" in shown
    assert (
        logs(server, app, "--dyno", "web")
        .strip()
        .endswith("app[web.1]: hello from another process")
    )

    server.stop_cleanly()  # the API process that read them goes; Redis keeps them
    server.start()
    again = logs(server, app)
    assert "app[web.1]: hello from another process" in again
    assert "Release v2 created by owner@example.com" in again


def test_tail_gets_another_process_line_within_a_second_and_a_drain_gets_it_once(
    waka_on_redis: WakaServer,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    server = waka_on_redis
    app = unique_name("redis-tail")
    server.heroku("apps:create", app)
    api = Api(server)
    app_id = api.get(f"/apps/{app}")["id"]
    api.close()

    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def accept() -> None:
        connection, _ = listener.accept()
        with connection:
            while chunk := connection.recv(65536):
                received.extend(chunk)

    threading.Thread(target=accept, daemon=True).start()
    server.heroku("drains:add", f"syslog://127.0.0.1:{listener.getsockname()[1]}", "-a", app)
    time.sleep(3)  # the forwarder rereads the drains every 2 s

    emitter = Emitter(logplex_redis.url, app_id)
    tail = subprocess.Popen(
        [str(server.heroku_cli), "logs", "--tail", "-a", app],
        env=server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[tuple[float, str]] = []

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            seen.append((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    try:
        emitter.emit("warming up")  # the tail is open once it prints this
        wait_for(lambda: any("warming up" in x for _, x in seen), timeout=30, what="the tail")
        delays = []
        for n in range(3):
            marker = f"tail-check-{n}-{time.monotonic_ns()}"
            sent = time.monotonic()
            emitter.emit(marker)
            arrived = wait_for(
                lambda m=marker: next((at for at, x in seen if m in x), None),
                timeout=10,
                what="the other process's line in the tail",
            )
            delays.append(arrived - sent)
        assert max(delays) < 1.0, f"lines took {delays} s"
    finally:
        tail.terminate()
        tail.wait(timeout=10)
        emitter.close()
    wait_for(lambda: b"tail-check-2" in received, timeout=20, what="the drain")
    time.sleep(1)
    for n in range(3):  # forwarded once each, in syslog framing
        assert received.count(f"tail-check-{n}-".encode()) == 1
    assert b" app web.1 - warming up" in received
    listener.close()


def test_with_redis_down_heroku_logs_says_so_and_recovers(
    waka_on_redis: WakaServer,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    server = waka_on_redis
    app = unique_name("redis-down")
    server.heroku("apps:create", app)
    server.heroku("config:set", "A=1", "-a", app)
    wait_for(lambda: "Release v2" in logs(server, app), timeout=20, what="app[api] lines")

    logplex_redis.stop()
    for args in ((), ("--tail",)):
        down = server.heroku("logs", "-a", app, *args, check=False)
        assert down.returncode != 0
        assert "waka cannot reach its log store (Redis)" in flat(down.stderr), down
    server.heroku("config:set", "B=2", "-a", app)  # the platform goes on without its log
    assert "Traceback" not in server.log()

    logplex_redis.start()  # an empty Redis (the test's keeps nothing on disk)
    server.heroku("config:set", "C=3", "-a", app)
    shown = wait_for(
        lambda: (out := logs(server, app)) and "Release v4" in out and out,
        timeout=30,
        what="lines again",
    )
    assert "Set C config vars" in shown
