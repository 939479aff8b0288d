"""Hostile clients against a real `waka up`: raw sockets and curl at the router (request
smuggling, oversized heads, slowloris, bad Host values) in front of a real dyno, and key
guessing against the API (curl, the Heroku CLI) and git smart HTTP (a real `git push`).

The dyno is the shell-app fixture: Python's http.server, which logs every request it gets to
the app's log (honest requests ask for "/?honest-…": its page, with a marker). So "never
reached the dyno" is read from `heroku logs`: after the attacks, an honest request's line
shows up there, and none of the attacks' paths do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    Api,
    WakaServer,
    app_repo,
    flat,
    git_url,
    running_server,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

FAILURES_PER_MINUTE = 4  # the server's WAKA_AUTH_FAILURES_PER_MINUTE: one try back each 15 s
HEAD_TIMEOUT = 30  # the router's (waka/router/proxy.py)


@pytest.fixture(scope="module")
def server(heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WakaServer]:
    """The module's `waka up`, with a low limit of failed authentications."""
    env = {"WAKA_AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE)}
    with running_server(tmp_path_factory.mktemp("waka"), heroku_cli, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def app(server: WakaServer, api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An app whose web dyno is up behind the router."""
    name = api.create_app("hostile")
    repo = app_repo("shell-app", tmp_path_factory.mktemp("repo") / name)
    pushed = repo.push(git_url(server, name))
    assert pushed.returncode == 0, pushed.output
    wait_for(
        lambda: b"Hello from shell-app" in raw(server, get(name, "/")),
        timeout=180,
        what="the dyno to answer through the router",
    )
    return name


# --- raw HTTP ------------------------------------------------------------------------------------


def get(app: str, path: str, *fields: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {app}.localhost", *fields, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw(server: WakaServer, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` on a new connection to the router; everything it answers until it closes."""
    chunks = []
    with socket.create_connection(("127.0.0.1", server.router_port), timeout=timeout) as sock:
        with contextlib.suppress(ConnectionError):  # refused before the end: read the answer
            sock.sendall(data)
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def dyno_lines(log: str) -> list[str]:
    """The lines the dyno itself logged (http.server logs each request it gets)."""
    return [line for line in log.splitlines() if " app[web." in line]


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """Real curl: (status, headers with lower-case names, body)."""
    done = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split(" ")[1]), headers, body


def app_log(server: WakaServer, app: str) -> str:
    return server.heroku("logs", "-a", app, "-n", "1500").stdout


def dyno_saw(server: WakaServer, app: str, marker: str) -> str:
    """The app's log once the dyno has logged the honest request `marker` (sent last)."""
    assert status_of(raw(server, get(app, marker))) == 200

    def logged() -> str | None:
        log = app_log(server, app)
        return log if f"GET {marker} " in log else None

    return wait_for(logged, timeout=60, what=f"the dyno's log line for {marker}")


def operator_log_is_quiet(server: WakaServer) -> None:
    log = server.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-4000:]


# --- the router ----------------------------------------------------------------------------------


def test_smuggling_attempts_get_400_and_never_reach_the_dyno(server: WakaServer, app: str) -> None:
    host = f"Host: {app}.localhost"
    attacks = {
        "cl-te": f"POST /hostile-cl-te HTTP/1.1\r\n{host}\r\nContent-Length: 44\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hostile-smuggled HTTP/1.1\r\n\r\n",
        "te-te": f"POST /hostile-te-te HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        "cl-cl": f"POST /hostile-cl-cl HTTP/1.1\r\n{host}\r\nContent-Length: 5\r\n"
        "Content-Length: 40\r\n\r\nhello",
        "fold": f"GET /hostile-fold HTTP/1.1\r\n{host}\r\nX-A: 1\r\n Transfer-Encoding: chunked"
        "\r\n\r\n",
        "bare-lf": f"GET /hostile-bare-lf HTTP/1.1\r\n{host}\r\nX-A: 1\nContent-Length: 4\r\n\r\n",
    }
    for name, attack in attacks.items():
        response = raw(server, attack.encode())
        assert status_of(response) == 400, (name, response[:200])
        assert b"Connection: close" in response
    log = dyno_saw(server, app, "/?honest-after-smuggling")
    assert not [ln for ln in dyno_lines(log) if "/hostile-" in ln], log
    operator_log_is_quiet(server)


def test_bad_chunks_get_400_and_an_h26_line_but_no_traceback(server: WakaServer, app: str) -> None:
    host = f"Host: {app}.localhost"
    bodies = [b"zz\r\n", b"-1\r\n", b" 5\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n"]
    bodies += [b"1" * 17 + b"\r\n", b"5\nhello\r\n0\r\n\r\n"]
    for i, body in enumerate(bodies * 5):  # a flood: each would have logged a traceback
        head = f"POST /hostile-chunk-{i} HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\n"
        response = raw(server, head.encode() + body)
        assert status_of(response) == 400, (body, response[:200])
    log = dyno_saw(server, app, "/?honest-after-chunks")
    assert not [ln for ln in dyno_lines(log) if "/hostile-" in ln], log
    h26 = [ln for ln in log.splitlines() if "code=H26" in ln]
    assert len(h26) == len(bodies) * 5, log
    assert all('desc="Request Error"' in ln and "status=400" in ln for ln in h26), h26
    operator_log_is_quiet(server)


def test_oversized_request_lines_and_headers(server: WakaServer, app: str) -> None:
    url = f"http://127.0.0.1:{server.router_port}"
    host = f"Host: {app}.localhost"
    # 8 KB request line: served; a byte more: 414 (curl, the way a browser would send it).
    honest = "/?honest-long-" + "a" * (8192 - len("GET /?honest-long- HTTP/1.1"))
    assert curl("-H", host, url + honest)[0] == 200
    hostile = "/hostile-long-" + "a" * (8192 + 1 - len("GET /hostile-long- HTTP/1.1"))
    assert curl("-H", host, url + hostile)[0] == 414
    # An 8 KB header line: served; a byte more: 431.
    cookie = "c=" + "x" * (8192 - len("Cookie: c="))
    assert curl("-H", host, "-H", f"Cookie: {cookie}", url + "/?honest-cookie")[0] == 200
    status, _, _ = curl("-H", host, "-H", f"Cookie: {cookie}x", url + "/hostile-cookie")
    assert status == 431
    # 70 and 100 KB of header lines under 8 KB each: 431, whole or in pieces.
    for size_kb in (70, 100):
        pads = [f"X-Pad-{i}: {'p' * 1000}" for i in range(size_kb)]
        attack = get(app, f"/hostile-head-{size_kb}", *pads)
        assert status_of(raw(server, attack)) == 431
        with socket.create_connection(("127.0.0.1", server.router_port), timeout=10) as sock:
            for i in range(0, 64 * 1024 + 1000, 1000):  # in pieces, up to just past 64 KB
                sock.sendall(attack[i : i + 1000])
                time.sleep(0.001)
            assert status_of(sock.recv(65536)) == 431
    log = dyno_saw(server, app, "/?honest-after-oversized")
    assert "GET /?honest-long-" in log and "GET /?honest-cookie" in log
    assert not [ln for ln in dyno_lines(log) if "/hostile-" in ln], log
    operator_log_is_quiet(server)


def test_invalid_host_values_get_400(server: WakaServer, app: str) -> None:
    url = f"http://127.0.0.1:{server.router_port}/hostile-host"
    for host in (
        f"{app}.localhost/evil",
        f"{app}.localhost:80:80",
        f"evil@{app}.localhost",
        f"{app}.localhost:80 80",
    ):
        assert curl("-H", f"Host: {host}", url)[0] == 400, host
    two = f"GET /hostile-two-hosts HTTP/1.1\r\nHost: {app}.localhost\r\nHost: evil.example\r\n\r\n"
    assert status_of(raw(server, two.encode())) == 400
    assert curl("-H", "Host: nothing-here.localhost", url)[0] == 404
    log = dyno_saw(server, app, "/?honest-after-hosts")
    assert not [ln for ln in dyno_lines(log) if "/hostile-" in ln], log


def test_slowloris_is_cut_off_and_others_are_served_meanwhile(server: WakaServer, app: str) -> None:
    """Fifty clients each trickle a head a byte every 2 s: the router answers them 408 and
    closes HEAD_TIMEOUT after they began; honest requests go through all along."""
    head = get(app, "/hostile-slowloris", "X-Slow: " + "s" * 200)
    socks = [socket.create_connection(("127.0.0.1", server.router_port)) for _ in range(50)]
    answers: dict[int, bytes] = {}
    started = time.monotonic()

    def trickle(n: int, sock: socket.socket) -> None:
        sock.settimeout(2)
        for i in range(len(head)):
            try:
                sock.sendall(head[i : i + 1])
                answers[n] = sock.recv(4096)  # waits up to 2 s: the trickle's pace
                return
            except TimeoutError:
                continue
            except ConnectionError:
                answers[n] = b"reset"
                return

    threads = [threading.Thread(target=trickle, args=(n, s)) for n, s in enumerate(socks)]
    for t in threads:
        t.start()
    served = 0
    while any(t.is_alive() for t in threads) and time.monotonic() - started < HEAD_TIMEOUT + 20:
        t0 = time.monotonic()
        assert (
            curl("-H", f"Host: {app}.localhost", f"http://127.0.0.1:{server.router_port}/")[0]
            == 200
        )
        assert time.monotonic() - t0 < 2
        served += 1
        time.sleep(1)
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started
    for sock in socks:
        sock.close()
    assert served >= HEAD_TIMEOUT - 5
    assert sorted(set(map(status_of, answers.values()))) == [408], answers
    assert len(answers) == 50 and HEAD_TIMEOUT - 2 < elapsed < HEAD_TIMEOUT + 15
    log = dyno_saw(server, app, "/?honest-after-slowloris")
    assert not [ln for ln in dyno_lines(log) if "/hostile-" in ln], log


# --- guessing keys -------------------------------------------------------------------------------


def api_status(server: WakaServer, key: str, source: str = "127.0.0.1") -> tuple:
    """GET /account with `key` from the local address `source`, with real curl."""
    return curl(
        "--interface",
        source,
        "-H",
        f"Authorization: Bearer {key}",
        "-H",
        "Accept: application/vnd.heroku+json; version=3",
        f"http://127.0.0.1:{server.port}/account",
    )


def wait_until_unblocked(server: WakaServer, source: str) -> None:
    """Until `source`'s bucket has a try again (no key sent: it does not count)."""
    wait_for(
        lambda: api_status(server, "", source)[0] != 429,
        timeout=70,
        what=f"{source} to be let try again",
    )


def test_guessing_api_keys_gets_429_with_retry_after(server: WakaServer) -> None:
    me = "127.0.0.3"
    for _ in range(FAILURES_PER_MINUTE):
        assert api_status(server, "guess", me)[0] == 401
    status, headers, body = api_status(server, "guess", me)
    assert status == 429
    assert json.loads(body)["id"] == "rate_limit"
    assert 1 <= int(headers["retry-after"]) <= 60 // FAILURES_PER_MINUTE
    # While blocked, a right key is refused too (a right guess must not show) ...
    assert api_status(server, server.api_key, me)[0] == 429
    # ... but only from that address: other clients are not slowed down.
    assert api_status(server, server.api_key, "127.0.0.4")[0] == 200
    # A try comes back after Retry-After; successes then never count.
    time.sleep(int(headers["retry-after"]))
    for _ in range(FAILURES_PER_MINUTE * 3):
        assert api_status(server, server.api_key, me)[0] == 200
    operator_log_is_quiet(server)


def test_guessing_git_passwords_is_limited_too(
    server: WakaServer, app: str, tmp_path: Path
) -> None:
    wait_until_unblocked(server, "127.0.0.1")
    repo = app_repo("shell-app", tmp_path / "guess")
    pushes = []
    for _ in range(FAILURES_PER_MINUTE + 1):
        pushed = repo.push(git_url(server, app, api_key="guess"))
        assert pushed.returncode != 0
        pushes.append(pushed.output)
        if "429" in pushed.output:
            break
    assert "Authentication failed" in pushes[0], pushes
    assert len(pushes) > 1 and "The requested URL returned error: 429" in pushes[-1], pushes
    # Blocked from git and the API alike: it is one count per address.
    assert api_status(server, server.api_key)[0] == 429
    wait_until_unblocked(server, "127.0.0.1")
    fetched = repo.run("ls-remote", git_url(server, app), check=False)
    assert fetched.returncode == 0, fetched.output


def test_the_heroku_cli_with_a_wrong_key_is_told_to_wait(
    heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A server of its own: the module's has spent some of loopback's tries in other tests,
    # and one CLI command may make more than one request (its first answer must be a 401).
    env = {"WAKA_AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE)}
    with running_server(tmp_path_factory.mktemp("waka"), heroku_cli, env=env) as server:
        told_to_wait(server)


def told_to_wait(server: WakaServer) -> None:
    said = []
    for _ in range(FAILURES_PER_MINUTE + 1):  # (a command may make more than one request)
        result = server.heroku("apps", api_key="wrong-key", check=False)
        assert result.returncode != 0
        said.append(flat(result.stderr))
        if "Too many failed" in said[-1]:
            break
    assert "The token provided to HEROKU_API_KEY is invalid" in said[0], said
    assert "Too many failed authentication attempts from your address" in said[-1], said
    wait_until_unblocked(server, "127.0.0.1")
    assert server.heroku("apps").returncode == 0


def test_the_api_port_refuses_bad_chunks_and_huge_heads_quietly(
    server: WakaServer, app: str
) -> None:
    """The same attacks on the API's port (hypercorn), the API and git smart HTTP: answered,
    and no traceback logged (the API's body reader used to log one per bad chunk)."""

    def to_api(data: bytes) -> bytes:
        chunks = []
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            with contextlib.suppress(ConnectionError):
                sock.sendall(data)
            with contextlib.suppress(ConnectionError, TimeoutError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        return b"".join(chunks)

    head = "POST /apps HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    for _ in range(10):
        answer = to_api(f"{head}Authorization: Bearer {server.api_key}\r\n\r\nzz\r\n".encode())
        assert status_of(answer) in (0, 400), answer[:200]
    git = head.replace("/apps", f"/{app}.git/git-receive-pack")
    password = base64.b64encode(f"x:{server.api_key}".encode()).decode()
    answer = to_api(f"{git}Authorization: Basic {password}\r\n\r\n5\r\n0000X\r\nzz\r\n".encode())
    assert status_of(answer) in (0, 400), answer[:200]
    pads = "".join(f"X-Pad-{i}: {'p' * 1000}\r\n" for i in range(100))
    answer = to_api(f"GET /account HTTP/1.1\r\nHost: localhost\r\n{pads}\r\n".encode())
    assert status_of(answer) in (0, 400, 431), answer[:200]
    operator_log_is_quiet(server)
