"""Log drains: the drains API as the Heroku CLI uses it (both backends), and delivery by the
DrainForwarder to local HTTP(S) and syslog (TCP, TLS) servers in Logplex's framing."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from waka import audit
from waka.api.app import RequestIdMiddleware
from waka.api.routes.logs import routes
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.logplex import Logplex
from waka.logplex.drains import DrainForwarder, DrainOptions
from waka.logplex.syslog import parse_frames
from waka.projections.drains import DrainsProjection

ACCEPT = "application/vnd.heroku+json; version=3"
FAST = DrainOptions(timeout=2.0, backoff_min=0.02, backoff_max=0.1)


def with_drains_projection(platform: Platform) -> Platform:
    """The drains read model, also while the projector does not list it yet."""
    projector = platform.projector
    if not any(isinstance(p, DrainsProjection) for p in projector.projections):
        projector.projections.append(DrainsProjection())
        projector.setup()
    projector.catch_up()
    return platform


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# --- the drains API --------------------------------------------------------------------------


@dataclass
class Api:
    platform: Platform
    client: TestClient
    key: str
    actor: Actor
    app_id: str

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Accept": ACCEPT, "Authorization": f"Bearer {key or self.key}"}
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def api(platform: Platform) -> Api:
    with_drains_projection(platform)
    account, key = platform.ledger.register_user("owner@example.com")
    app = platform.ledger.create_app(account.as_actor(), "shop")
    platform.projector.catch_up()
    starlette = Starlette(routes=routes(platform, Logplex()))
    starlette.add_middleware(RequestIdMiddleware)
    client = TestClient(starlette, raise_server_exceptions=False)
    return Api(platform, client, key, account.as_actor(), str(app.id))


def test_add_list_show_and_remove_drains_as_the_cli_does(api: Api) -> None:
    url = "https://user:secret@logs.example.com/drain?app=shop"
    added = api.call("POST", "/apps/shop/log-drains", json={"url": url})  # drains:add URL
    assert added.status_code == 201, added.text
    drain = added.json()
    assert set(drain) == {"addon", "app", "created_at", "id", "token", "updated_at", "url"}
    assert drain["url"] == url and drain["addon"] is None
    assert drain["app"] == {"id": api.app_id, "name": "shop"}
    assert drain["token"].startswith("d.") and UUID(drain["id"])
    syslog = api.call("POST", "/apps/shop/log-drains", json={"url": "syslog+tls://127.0.0.1:6514"})
    assert syslog.status_code == 201

    listed = api.call("GET", "/apps/shop/log-drains").json()  # `heroku drains`
    assert [d["url"] for d in listed] == [url, "syslog+tls://127.0.0.1:6514"]
    assert listed[0] == drain
    for ident in (drain["id"], drain["token"], quote(url, safe="")):
        shown = api.call("GET", f"/apps/shop/log-drains/{ident}")
        assert shown.status_code == 200 and shown.json()["id"] == drain["id"]

    # drains:remove URL sends encodeURIComponent(URL)
    removed = api.call("DELETE", f"/apps/shop/log-drains/{quote(url, safe='')}")
    assert removed.status_code == 200 and removed.json()["url"] == url
    by_token = api.call("DELETE", f"/apps/shop/log-drains/{syslog.json()['token']}")
    assert by_token.status_code == 200
    assert api.call("GET", "/apps/shop/log-drains").json() == []
    gone = api.call("DELETE", f"/apps/shop/log-drains/{drain['id']}")
    assert gone.status_code == 404 and gone.json()["message"] == "Couldn't find that log drain."

    actions = [e.action for e in audit.query(api.platform.ledger, app="shop")]
    assert actions[-4:] == [
        "Add log drain https://logs.example.com",  # no credentials, path or query
        "Add log drain syslog+tls://127.0.0.1:6514",
        "Remove a log drain",
        "Remove a log drain",
    ]
    app = api.platform.ledger.get_app(UUID(api.app_id))
    assert app.drains == []


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 422, "url is required"),
        ({"url": 5}, 422, "url is required"),
        ({"url": "ftp://127.0.0.1/x"}, 422, "Invalid log drain URL"),
        ({"url": "syslog://127.0.0.1"}, 422, "needs a port"),
    ],
)
def test_bad_drains_are_refused(api: Api, body: Any, status: int, needle: str) -> None:
    response = api.call("POST", "/apps/shop/log-drains", json=body)
    assert response.status_code == status
    assert needle in response.json()["message"]


def test_a_drain_is_added_once_and_only_by_the_owner(api: Api) -> None:
    url = "https://127.0.0.1/drain"
    assert api.call("POST", "/apps/shop/log-drains", json={"url": url}).status_code == 201
    again = api.call("POST", "/apps/shop/log-drains", json={"url": url})
    assert again.status_code == 409 and "already" in again.json()["message"]

    _, stranger = api.platform.ledger.register_user("stranger@example.com")
    api.platform.projector.catch_up()
    for method, path in [
        ("GET", "/apps/shop/log-drains"),
        ("POST", "/apps/shop/log-drains"),
        ("DELETE", f"/apps/shop/log-drains/{quote(url, safe='')}"),
    ]:
        response = api.call(method, path, key=stranger, json={"url": "https://127.0.0.1/x"})
        assert response.status_code == 403, (method, path)
    assert api.client.get("/apps/shop/log-drains").status_code == 401
    assert len(api.call("GET", "/apps/shop/log-drains").json()) == 1


# --- local drain servers ---------------------------------------------------------------------


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpDrainServer:
    """Records every POST; answers `status`."""

    status: int = 200
    posts: list[Posted] = field(default_factory=list)

    def frames(self) -> list[bytes]:
        return [f for p in list(self.posts) for f in parse_frames(p.body)]

    def messages(self) -> list[str]:
        return [f.decode().split(" - ", 1)[1] for f in self.frames()]


@contextlib.contextmanager
def http_drain(
    port: int = 0, context: ssl.SSLContext | None = None, status: int = 200
) -> Iterator[tuple[HttpDrainServer, int]]:
    record = HttpDrainServer(status=status)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as drains are used

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            record.posts.append(Posted(self.path, headers, body))
            self.send_response(record.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield record, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class SyslogServer:
    port: int
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0

    def frames(self) -> list[bytes]:
        return parse_frames(bytes(self.received))


@contextlib.contextmanager
def syslog_drain(context: ssl.SSLContext | None = None) -> Iterator[SyslogServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    record = SyslogServer(port=listener.getsockname()[1])
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            record.connections += 1
            conn.settimeout(5)
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            with conn:
                while not stopping.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    record.received += chunk

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield record
    finally:
        stopping.set()
        thread.join()
        listener.close()


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1 and localhost, and a client that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "waka test drain")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return Tls(server=server, client=client)


# --- delivery --------------------------------------------------------------------------------


@dataclass
class Delivery:
    platform: Platform
    logplex: Logplex
    actor: Actor
    app_id: UUID

    def add(self, url: str) -> dict[str, str]:
        drain = self.platform.ledger.add_drain(self.actor, self.app_id, url)
        self.platform.projector.catch_up()
        return drain

    @contextlib.contextmanager
    def forwarder(self, options: DrainOptions = FAST) -> Iterator[DrainForwarder]:
        forwarder = DrainForwarder(self.logplex, self.platform.store, options, refresh_interval=60)
        forwarder.start()
        try:
            yield forwarder
        finally:
            forwarder.stop()

    def emit(self, message: str, source: str = "app", dyno: str = "web.1") -> None:
        self.logplex.emit(self.app_id, source, dyno, message)


@pytest.fixture
def delivery(platform: Platform, actor: Actor) -> Delivery:
    with_drains_projection(platform)
    app = platform.ledger.create_app(actor, "shop")
    return Delivery(platform, Logplex(), actor, app.id)


def test_http_drain_gets_logplex_framed_batches(delivery: Delivery) -> None:
    with http_drain() as (server, port):
        drain = delivery.add(f"http://drain:s3cret@127.0.0.1:{port}/logs?x=1")
        with delivery.forwarder() as forwarder:
            delivery.emit("Listening on 5000\nready")
            delivery.emit("at=info method=GET path=/ status=200", "heroku", "router")
            wait_for(lambda: forwarder.stats()[drain["id"]].delivered == 3)

    post = server.posts[0]
    assert post.path == "/logs?x=1"
    assert post.headers["content-type"] == "application/logplex-1"
    assert post.headers["logplex-drain-token"] == drain["token"]
    assert post.headers["authorization"] == "Basic ZHJhaW46czNjcmV0"  # drain:s3cret
    assert post.headers["user-agent"].startswith("Logplex/")
    assert len(post.headers["logplex-frame-id"]) == 32
    counts = [int(p.headers["logplex-msg-count"]) for p in server.posts]
    assert counts == [len(parse_frames(p.body)) for p in server.posts] and sum(counts) == 3
    lines = delivery.logplex.recent(delivery.app_id)
    expected = [
        f"<{pri}>1 {x.at.isoformat(timespec='microseconds')} host {x.source} {x.dyno} - {x.message}"
        for pri, x in zip((190, 190, 158), lines, strict=True)
    ]
    assert [f.decode() for f in server.frames()] == expected


def test_https_drain(delivery: Delivery, tls: Tls) -> None:
    with http_drain(context=tls.server) as (server, port):
        delivery.add(f"https://127.0.0.1:{port}/drain")
        with delivery.forwarder(DrainOptions(timeout=2, ssl_context=tls.client)):
            for i in range(1200):  # more than one batch
                delivery.emit(f"line {i}")
            wait_for(lambda: len(server.frames()) == 1200)
    assert server.messages() == [f"line {i}" for i in range(1200)]
    assert len(server.posts) >= 3  # batches of at most 500
    assert all(int(p.headers["logplex-msg-count"]) <= 500 for p in server.posts)


def test_https_drain_with_an_untrusted_certificate_gets_nothing(
    delivery: Delivery, tls: Tls
) -> None:
    with http_drain(context=tls.server) as (server, port):
        drain = delivery.add(f"https://127.0.0.1:{port}/drain")
        with delivery.forwarder(FAST) as forwarder:  # the system CAs: no trust in ours
            delivery.emit("secret")
            wait_for(lambda: forwarder.stats()[drain["id"]].failures >= 2)
            assert "CERTIFICATE_VERIFY_FAILED" in forwarder.stats()[drain["id"]].last_error
    assert server.posts == []


def test_syslog_tcp_drain_gets_octet_counted_rfc5424(delivery: Delivery) -> None:
    with syslog_drain() as server:
        drain = delivery.add(f"syslog://127.0.0.1:{server.port}")
        with delivery.forwarder():
            delivery.emit("héllo wörld")
            delivery.emit("State changed from starting to up", "heroku", "web.1")
            wait_for(lambda: len(server.received) > 0 and len(server.frames()) == 2)
    first, second = (f.decode() for f in server.frames())
    lines = delivery.logplex.recent(delivery.app_id)
    stamp = lines[0].at.isoformat(timespec="microseconds")
    assert first == f"<190>1 {stamp} {drain['token']} app web.1 - héllo wörld"
    assert second.startswith("<158>1 ")
    assert second.endswith(f" {drain['token']} heroku web.1 - State changed from starting to up")
    assert server.received.startswith(b"%d <190>1 " % len(first.encode()))
    assert server.connections == 1  # one connection for everything


def test_syslog_tls_drain(delivery: Delivery, tls: Tls) -> None:
    with syslog_drain(context=tls.server) as server:
        delivery.add(f"syslog+tls://localhost:{server.port}")
        with delivery.forwarder(DrainOptions(timeout=2, ssl_context=tls.client)):
            for i in range(50):
                delivery.emit(f"over tls {i}")
            wait_for(lambda: len(server.frames()) == 50)
    assert [f.decode().rsplit(" - ", 1)[1] for f in server.frames()][-1] == "over tls 49"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_a_dead_drain_never_blocks_emit_and_recovers(delivery: Delivery) -> None:
    port = free_port()  # nothing listens here yet
    drain = delivery.add(f"http://127.0.0.1:{port}/logs")
    options = DrainOptions(
        queue_size=50, batch_size=10, timeout=1, backoff_min=0.02, backoff_max=0.1
    )
    with delivery.forwarder(options) as forwarder:
        started = time.perf_counter()
        for i in range(200):
            delivery.emit(f"line {i}")
        assert time.perf_counter() - started < 0.5
        stats = forwarder.stats()[drain["id"]]
        wait_for(lambda: stats.failures >= 2)
        assert stats.delivered == 0 and stats.dropped > 0

        with http_drain(port=port) as (server, _):
            wait_for(lambda: stats.delivered + stats.dropped == 200)
            got = server.messages()
    assert len(got) == stats.delivered
    assert got[-50:] == [f"line {i}" for i in range(150, 200)]  # the newest lines survive
    numbers = [int(m.split()[1]) for m in got]
    assert numbers == sorted(numbers)  # in order, oldest dropped in between
    assert stats.dropped == 200 - stats.delivered > 0


def test_a_drain_that_stops_reading_does_not_slow_emit(delivery: Delivery) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never reads
    try:
        drain = delivery.add(f"syslog://127.0.0.1:{listener.getsockname()[1]}")
        options = DrainOptions(queue_size=1000, timeout=1, backoff_min=0.02, backoff_max=0.1)
        with delivery.forwarder(options) as forwarder:
            payload = "x" * 1000
            started = time.perf_counter()
            for _ in range(20_000):  # 20 MB: far more than the socket buffers hold
                delivery.emit(payload)
            elapsed = time.perf_counter() - started
            stats = forwarder.stats()[drain["id"]]
            wait_for(lambda: stats.dropped > 0)
    finally:
        listener.close()
    assert elapsed < 5  # emit only queued; the stuck drain thread waits on its own
    assert len(delivery.logplex.recent(delivery.app_id, lines=1500)) == 1500


def test_a_refusing_drain_drops_batches_without_retrying(delivery: Delivery) -> None:
    with http_drain(status=400) as (server, port):
        drain = delivery.add(f"http://127.0.0.1:{port}/")
        with delivery.forwarder() as forwarder:
            delivery.emit("one")
            stats = forwarder.stats()[drain["id"]]
            wait_for(lambda: stats.rejected == 1)
            delivery.emit("two")
            wait_for(lambda: stats.rejected == 2)
            time.sleep(0.2)
    assert server.messages() == ["one", "two"]  # each tried once
    assert stats.failures == 0 and stats.delivered == 0


def test_only_the_apps_own_lines_go_to_its_drains(delivery: Delivery, actor: Actor) -> None:
    other = delivery.platform.ledger.create_app(actor, "other")
    with syslog_drain() as server:
        delivery.add(f"syslog://127.0.0.1:{server.port}")
        with delivery.forwarder():
            delivery.logplex.emit(other.id, "app", "web.1", "not mine")
            delivery.emit("mine")
            wait_for(lambda: len(server.received) > 0)
            time.sleep(0.1)
    assert [f.decode().rsplit(" - ", 1)[1] for f in server.frames()] == ["mine"]


def test_drains_added_and_removed_through_the_api_take_effect_at_once(
    platform: Platform,
) -> None:
    with_drains_projection(platform)
    account, key = platform.ledger.register_user("owner@example.com")
    app = platform.ledger.create_app(account.as_actor(), "shop")
    platform.projector.catch_up()
    from waka.reactors.lifecycle import Reactors

    logplex = Logplex()
    # No timer: the forwarder is a reactor woken by the ledger's DrainAdded/DrainRemoved.
    forwarder = DrainForwarder(logplex, platform.store, FAST, refresh_interval=3600)
    starlette = Starlette(routes=routes(platform, logplex))
    starlette.add_middleware(RequestIdMiddleware)
    client = TestClient(starlette, raise_server_exceptions=False)
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {key}"}
    reactors = Reactors(platform.leases, platform.projector.catch_up)
    reactors.add(forwarder)
    platform.notifications.subscribe(reactors.saved)
    platform.notifications.start()
    reactors.start()
    try:
        wait_for(lambda: reactors.leading("drains"))
        with syslog_drain() as server:
            url = f"syslog://127.0.0.1:{server.port}"
            added = client.post("/apps/shop/log-drains", json={"url": url}, headers=headers)
            assert added.status_code == 201
            wait_for(lambda: forwarder.stats() != {})  # woken by the ledger, not a timer
            logplex.emit(app.id, "app", "web.1", "first")
            wait_for(lambda: len(server.received) > 0)
            removed = client.delete(f"/apps/shop/log-drains/{quote(url, safe='')}", headers=headers)
            assert removed.status_code == 200
            wait_for(lambda: forwarder.stats() == {})
            logplex.emit(app.id, "app", "web.1", "after removal")
            time.sleep(0.2)
    finally:
        reactors.stop()
        platform.notifications.stop()
    assert [f.decode().rsplit(" - ", 1)[1] for f in server.frames()] == ["first"]


def test_a_forwarder_sends_nothing_before_start_or_after_stop(delivery: Delivery) -> None:
    with syslog_drain() as server:
        delivery.add(f"syslog://127.0.0.1:{server.port}")
        forwarder = DrainForwarder(delivery.logplex, delivery.platform.store, FAST)
        forwarder.refresh()  # a reactor's wake-up in a process that never started it
        delivery.emit("before start")
        assert forwarder.stats() == {}
        forwarder.start()
        delivery.emit("while running")
        wait_for(lambda: len(server.received) > 0)
        forwarder.stop()
        delivery.emit("after stop")
        forwarder.refresh()
        time.sleep(0.1)
        assert forwarder.stats() == {}
    assert [f.decode().rsplit(" - ", 1)[1] for f in server.frames()] == ["while running"]
