"""The rendezvous server of `heroku run`: waka's CA, sessions, the CLI's protocol, and
`POST /apps/:app/dynos`. Dynos here are fakes on a socket pair; tests/e2e/test_heroku_run.py
runs the real CLI against real containers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import socket
import ssl
import stat
import struct
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from starlette.applications import Starlette
from starlette.testclient import TestClient

from waka import audit
from waka.adapters.one_off import FrameDecoder, OneOffSpec
from waka.api.app import RequestIdMiddleware
from waka.api.routes import run
from waka.bootstrap import Platform
from waka.rendezvous import rendezvous_server
from waka.rendezvous import server as server_module
from waka.rendezvous.ca import TlsFiles, ensure_tls
from waka.rendezvous.server import HANDSHAKE, NO_SESSION, RendezvousServer
from waka.rendezvous.sessions import Sessions

T = TypeVar("T")
WAIT = 10.0


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


# --- the CA ---------------------------------------------------------------------------------


def test_the_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path)
    assert files.directory == tmp_path / "tls"
    made = {p: p.read_bytes() for p in (files.ca_cert, files.ca_key, files.server_cert)}
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ensure_tls(tmp_path)
    assert {p: p.read_bytes() for p in made} == made

    # A lost server certificate is made again by the same CA: a trusted ca.pem stays good.
    files.server_cert.unlink()
    ensure_tls(tmp_path)
    assert files.ca_cert.read_bytes() == made[files.ca_cert]
    assert files.server_cert.read_bytes() != made[files.server_cert]


def test_the_server_certificate_names_loopback_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    # Another public host gets a new server certificate that also names it.
    ensure_tls(tmp_path, hosts=["waka.test"])
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "waka.test"}


def test_clients_verify_the_server_by_host_name(tmp_path: Path) -> None:
    server = rendezvous_server(tmp_path)
    files = TlsFiles(tmp_path / "tls")

    async def handshake(name: str, context: ssl.SSLContext) -> None:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=context, server_hostname=name
        )
        writer.close()

    async def main() -> None:
        await server.start(["127.0.0.1"])
        try:
            await handshake("localhost", files.client_context())
            await handshake("127.0.0.1", files.client_context())
            with pytest.raises(ssl.SSLCertVerificationError):
                await handshake("example.com", files.client_context())
            with pytest.raises(ssl.SSLCertVerificationError):  # without waka's CA
                await handshake("localhost", ssl.create_default_context())
        finally:
            await server.close()

    run_async(main())


NODE_CLIENT = """
const tls = require('node:tls');
const c = tls.connect(Number(process.argv[1]), 'localhost', {rejectUnauthorized: true});
c.on('secureConnect', () => { c.write(process.argv[2] + '\\r\\n'); });
let seen = '';
c.setEncoding('utf8');
c.on('data', d => { seen += d; });
c.on('close', () => { process.stdout.write(JSON.stringify(seen)); });
c.on('error', e => { console.error(e.code || e.message); process.exit(2); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_trusts_the_ca_through_node_extra_ca_certs(tmp_path: Path) -> None:
    """What the Heroku CLI does: tls.connect(port, 'localhost') with verification."""
    server = rendezvous_server(tmp_path)

    async def node(port: int, *, trust: bool) -> tuple[int, str, str]:
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin"}
        if trust:
            env["NODE_EXTRA_CA_CERTS"] = str(tmp_path / "tls" / "ca.pem")
        proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", "-e", NODE_CLIENT, str(port), "nosuchsecret",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    async def main() -> None:
        await server.start(["127.0.0.1", "::1"])
        try:
            code, out, _ = await node(server.port, trust=True)
            assert (
                code == 0
                and out == '"' + (HANDSHAKE + NO_SESSION).decode().replace("\r\n", "\\r\\n") + '"'
            )
            code, _, err = await node(server.port, trust=False)
            assert code == 2 and "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in err
        finally:
            await server.close()

    run_async(main())


# --- sessions -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_secret_is_good_once_and_until_it_expires() -> None:
    clock = Clock()
    sessions = Sessions(ttl=300, clock=clock)
    first, second = FakeDyno(lambda d: 0), FakeDyno(lambda d: 0)
    secret = sessions.add(first)
    assert len(secret) >= 40 and sessions.add(second) != secret
    assert sessions.claim("nope") is None
    claimed = sessions.claim(secret)
    assert claimed is not None and claimed.dyno is first
    assert sessions.claim(secret) is None  # used
    clock.now += 301
    assert sessions.expired()[0].dyno is second
    assert len(sessions) == 0

    late = sessions.add(first)
    clock.now += 301
    assert sessions.claim(late) is None  # too late; it stays for expired() to clean up
    assert [s.dyno for s in sessions.drain()] == [first]


# --- the protocol, with fake dynos ----------------------------------------------------------


class FakeDyno:
    """A one-off whose "process" is a function on the far end of a socket pair. Without a TTY
    it frames its output as Docker does, so the server's decoding is exercised too."""

    def __init__(self, program: Callable[[FakeDyno], int], tty: bool = False) -> None:
        self.name = "run.1234"
        self.tty = tty
        self.program = program
        self.events: list[str] = []
        self.killed = threading.Event()
        self.before_attach = threading.Event()
        self.before_attach.set()
        self.inner: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.code: int | None = None

    def attach(self) -> socket.socket:
        assert self.before_attach.wait(WAIT), "attach() held up"
        outer, self.inner = socket.socketpair()
        self.events.append("attach")
        return outer

    def decoder(self) -> Callable[[bytes], bytes]:
        return (lambda data: data) if self.tty else FrameDecoder()

    def start(self) -> None:
        self.events.append("start")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.inner is not None
        try:
            self.code = self.program(self)
        finally:
            self.inner.close()

    def write(self, data: bytes, stream: int = 1) -> None:
        assert self.inner is not None
        if not self.tty:  # Docker's 8-byte frame header; split so frames straddle reads
            data = struct.pack(">BxxxI", stream, len(data)) + data
        for i in range(0, len(data), 5):
            self.inner.sendall(data[i : i + 5])

    def read_all(self) -> bytes:
        assert self.inner is not None
        chunks = []
        while chunk := self.inner.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        self.events.append("kill")
        self.killed.set()
        if self.inner is not None:
            with contextlib.suppress(OSError):
                self.inner.shutdown(socket.SHUT_RDWR)

    def finish(self) -> int | None:
        if self.thread is not None:
            self.thread.join(WAIT)
        self.events.append("finish")
        return self.code

    def discard(self) -> None:
        self.events.append("discard")


Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[], Awaitable[Client]]


async def with_server(
    tmp_path: Path, body: Callable[[RendezvousServer, Connect], Awaitable[None]]
) -> None:
    server = rendezvous_server(tmp_path)
    context = TlsFiles(tmp_path / "tls").client_context()

    async def connect() -> Client:
        return await asyncio.open_connection(
            "localhost", server.port, ssl=context, server_hostname="localhost"
        )

    await server.start(["127.0.0.1", "::1"])
    try:
        await body(server, connect)
    finally:
        await server.close()


async def attach(server: RendezvousServer, connect: Connect, dyno: FakeDyno) -> Client:
    """Connect as the CLI does: the secret line, then the handshake (checked and dropped)."""
    reader, writer = await connect()
    secret = server.attach_url(server.sessions.add(dyno)).rsplit("/", 1)[1]
    writer.write(secret.encode() + b"\r\n")
    assert await reader.readexactly(len(HANDSHAKE)) == HANDSHAKE
    return reader, writer


def test_handshake_first_then_the_output_until_the_process_ends(tmp_path: Path) -> None:
    def program(dyno: FakeDyno) -> int:
        dyno.write(b"hello\n")
        dyno.write(b"oops\n", stream=2)
        return 0

    dyno = FakeDyno(program)
    dyno.before_attach.clear()  # the dyno is only attached once the CLI has its handshake

    async def body(server: RendezvousServer, connect: Connect) -> None:
        reader, writer = await connect()
        secret = server.attach_url(server.sessions.add(dyno)).rsplit("/", 1)[1]
        assert server.attach_url(secret) == f"rendezvous://localhost:{server.port}/{secret}"
        writer.write(secret.encode() + b"\r\n")
        assert await reader.readexactly(len(HANDSHAKE)) == HANDSHAKE
        dyno.before_attach.set()
        assert await reader.read() == b"hello\noops\n"  # then the server closes
        writer.close()

    run_async(with_server(tmp_path, body))
    assert dyno.events == ["attach", "start", "finish"]


def test_an_unknown_or_used_secret_gets_no_dyno(tmp_path: Path) -> None:
    dyno = FakeDyno(lambda d: 0)

    async def body(server: RendezvousServer, connect: Connect) -> None:
        reader, writer = await connect()
        writer.write(b"not-a-secret\r\n")
        assert await reader.read() == HANDSHAKE + NO_SESSION
        secret = server.sessions.add(dyno)
        for expected in (b"", NO_SESSION):
            reader, writer = await connect()
            writer.write(secret.encode() + b"\r\n")
            assert await reader.read() == HANDSHAKE + expected
            writer.close()

    run_async(with_server(tmp_path, body))
    assert dyno.events == ["attach", "start", "finish"]


def test_without_a_tty_ctrl_d_ends_the_process_s_input(tmp_path: Path) -> None:
    def program(dyno: FakeDyno) -> int:
        dyno.write(dyno.read_all().upper())  # like `cat`: only returns at end of input
        return 0

    dyno = FakeDyno(program)

    async def body(server: RendezvousServer, connect: Connect) -> None:
        reader, writer = await attach(server, connect, dyno)
        writer.write(b"line one\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"line two\n\x04")  # how the CLI ends piped input
        assert await reader.read() == b"LINE ONE\nLINE TWO\n"
        writer.close()

    run_async(with_server(tmp_path, body))
    assert dyno.events == ["attach", "start", "finish"]


def test_with_a_tty_ctrl_d_is_typed_into_it(tmp_path: Path) -> None:
    def program(dyno: FakeDyno) -> int:
        assert dyno.inner is not None
        got = b""
        while b"\x04" not in got:
            got += dyno.inner.recv(100)
        dyno.write(b"got " + repr(got).encode())
        return 0

    dyno = FakeDyno(program, tty=True)

    async def body(server: RendezvousServer, connect: Connect) -> None:
        reader, writer = await attach(server, connect, dyno)
        writer.write(b"ls\r\x04")
        assert await reader.read() == b"got b'ls\\r\\x04'"
        writer.close()

    run_async(with_server(tmp_path, body))


def test_a_user_who_leaves_takes_the_process_along(tmp_path: Path) -> None:
    def program(dyno: FakeDyno) -> int:
        dyno.write(b"started\n")
        dyno.killed.wait(WAIT)
        return 137

    dyno = FakeDyno(program)

    async def body(server: RendezvousServer, connect: Connect) -> None:
        reader, writer = await attach(server, connect, dyno)
        assert await reader.readexactly(8) == b"started\n"
        writer.close()  # Ctrl-C in the CLI
        for _ in range(100):
            if "finish" in dyno.events:
                break
            await asyncio.sleep(0.05)

    run_async(with_server(tmp_path, body))
    assert dyno.events[:3] == ["attach", "start", "kill"] and dyno.events[-1] == "finish"
    assert dyno.code == 137


def test_a_dyno_that_cannot_start_is_reported_and_discarded(tmp_path: Path) -> None:
    dyno = FakeDyno(lambda d: 0)

    def broken() -> socket.socket:
        raise RuntimeError("no engine")

    dyno.attach = broken  # type: ignore[method-assign]

    async def body(server: RendezvousServer, connect: Connect) -> None:
        reader, writer = await attach(server, connect, dyno)
        assert await reader.read() == b"waka: could not start run.1234: no engine\r\n"
        writer.close()

    run_async(with_server(tmp_path, body))
    assert dyno.events == ["discard"]


def test_sessions_nobody_claims_are_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "REAP_INTERVAL", 0.05)
    dyno = FakeDyno(lambda d: 0)

    async def body(server: RendezvousServer, connect: Connect) -> None:
        server.sessions.ttl = 0.1
        server.sessions.add(dyno)
        await asyncio.sleep(0.5)
        assert dyno.events == ["discard"] and len(server.sessions) == 0

    run_async(with_server(tmp_path, body))


def test_closing_ends_attached_and_pending_dynos(tmp_path: Path) -> None:
    attached = FakeDyno(lambda d: 137 if d.killed.wait(WAIT) else 0)
    pending = FakeDyno(lambda d: 0)

    async def main() -> None:
        server = rendezvous_server(tmp_path)
        await server.start(["127.0.0.1"])
        context = TlsFiles(tmp_path / "tls").client_context()

        async def connect() -> Client:
            return await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            )

        await attach(server, connect, attached)
        server.sessions.add(pending)
        for _ in range(100):
            if "start" in attached.events:
                break
            await asyncio.sleep(0.05)
        await server.close()

    run_async(main())
    assert attached.events == ["attach", "start", "kill", "finish"]
    assert pending.events == ["discard"]


def test_frame_decoder_joins_split_frames() -> None:
    decode = FrameDecoder()
    data = struct.pack(">BxxxI", 1, 3) + b"abc" + struct.pack(">BxxxI", 2, 2) + b"de"
    assert b"".join(decode(data[i : i + 3]) for i in range(0, len(data), 3)) == b"abcde"
    assert decode.buffer == b""


# --- POST /apps/:app/dynos ------------------------------------------------------------------


class FakeOneOffs:
    def __init__(self) -> None:
        self.created: list[OneOffSpec] = []
        self.detached: list[OneOffSpec] = []

    def names_in_use(self, app_id: str) -> set[str]:
        return set()

    def create(self, spec: OneOffSpec) -> FakeDyno:
        self.created.append(spec)
        return FakeDyno(lambda d: 0)

    def run_detached(self, spec: OneOffSpec) -> None:
        self.detached.append(spec)


@pytest.fixture
def run_api(platform: Platform, tmp_path: Path) -> tuple[TestClient, FakeOneOffs, Any]:
    account, key = platform.ledger.register_user("owner@example.com")
    actor = account.as_actor()
    app = platform.ledger.create_app(actor, "shop")
    (tmp_path / "slug").mkdir()
    slug = platform.slugs.create(tmp_path / "slug")
    build = platform.ledger.request_build(actor, app.id, "http://127.0.0.1/source.tgz")
    slug_info = {
        "id": slug.id,
        "process_types": {"web": "python app.py", "worker": "python work.py"},
        "commit": "",
        "checksum": slug.checksum,
        "size": slug.size,
    }
    platform.ledger.finish_build(app.id, build, slug_info, None, actor)
    platform.ledger.create_app(actor, "empty")
    platform.ledger.set_config(actor, app.id, {"FOO": "from-config", "TERM": "dumb"})
    platform.projector.catch_up()
    rendezvous = RendezvousServer(Sessions(), ssl.create_default_context())
    rendezvous.port = 5001
    one_offs = FakeOneOffs()
    api = Starlette(routes=run.routes(platform, rendezvous, one_offs))  # type: ignore[arg-type]
    api.add_middleware(RequestIdMiddleware)
    client = TestClient(api, raise_server_exceptions=False)
    client.headers.update({"Authorization": f"Bearer {key}"})
    return client, one_offs, rendezvous


def test_run_attached_answers_with_an_attach_url(run_api: Any) -> None:
    client, one_offs, rendezvous = run_api
    env = {"TERM": "xterm", "COLUMNS": 120, "LINES": 40, "X": "1"}
    reply = client.post("/apps/shop/dynos", json={"attach": True, "command": "bash", "env": env})
    assert reply.status_code == 201, reply.text
    dyno = reply.json()
    assert dyno["name"].startswith("run.") and len(dyno["name"]) == 8
    assert (dyno["type"], dyno["state"], dyno["command"]) == ("run", "starting", "bash")
    assert dyno["app"]["name"] == "shop" and dyno["release"]["version"] == 3  # build v2, config v3
    assert dyno["size"] == "Standard-1X"
    prefix = "rendezvous://localhost:5001/"
    assert dyno["attach_url"].startswith(prefix)
    (spec,) = one_offs.created
    assert spec.tty and spec.attach and spec.name == dyno["name"]
    assert spec.env == {"FOO": "from-config", "TERM": "xterm", "COLUMNS": "120", "LINES": "40",
                        "X": "1"}  # fmt: skip
    session = rendezvous.sessions.claim(dyno["attach_url"][len(prefix) :])
    assert session is not None and session.dyno.name == "run.1234"

    no_tty = {"attach": True, "command": "cat", "force_no_tty": True, "size": "standard-2x"}
    assert client.post("/apps/shop/dynos", json=no_tty).status_code == 201
    assert not one_offs.created[1].tty and one_offs.created[1].memory_mb == 1024


def test_run_detached_and_process_types(run_api: Any) -> None:
    client, one_offs, _ = run_api
    reply = client.post("/apps/shop/dynos", json={"command": "worker --fast"})
    assert reply.status_code == 201 and reply.json()["attach_url"] is None
    (spec,) = one_offs.detached
    assert spec.command == "python work.py --fast" and not spec.attach and not spec.tty


def test_run_detached_sent_again_runs_once(run_api: Any, platform: Platform) -> None:
    """`heroku run:detached` sent again by the CLI (its connection broke before the answer):
    the command ran; it is answered with the dyno it runs in, not run a second time."""
    client, one_offs, _ = run_api
    sent = {"Request-Id": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"}
    first = client.post("/apps/shop/dynos", json={"command": "rake once"}, headers=sent)
    again = client.post("/apps/shop/dynos", json={"command": "rake once"}, headers=sent)
    assert first.status_code == again.status_code == 201, again.text
    assert (again.json()["name"], again.json()["id"]) == (first.json()["name"], first.json()["id"])
    assert [spec.command for spec in one_offs.detached] == ["rake once"]
    # Another request runs it again, as does the same id for another command.
    other = {"Request-Id": "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"}
    again = client.post("/apps/shop/dynos", json={"command": "rake once"}, headers=other)
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    other_command = {"command": "rake twice"}
    assert client.post("/apps/shop/dynos", json=other_command, headers=sent).status_code == 201
    assert [spec.command for spec in one_offs.detached] == ["rake once"] * 2 + ["rake twice"]
    ran = [e.action for e in audit.query(platform.ledger, app="shop") if e.action.startswith("Run")]
    names = [spec.name for spec in one_offs.detached]
    assert ran == [f"Run {name} (detached)" for name in names]  # never the command


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"attach": True}, 422, "command must be"),
        ({"command": "  "}, 422, "command must be"),
        ({"command": "ls", "attach": "yes"}, 422, "attach must be true or false"),
        ({"command": "ls", "env": {"A B": "1"}}, 422, "env 'A B'"),
        ({"command": "ls", "size": "huge"}, 422, "Invalid dyno size"),
    ],
)
def test_run_rejects_bad_requests(run_api: Any, body: dict, status: int, text: str) -> None:
    client, one_offs, _ = run_api
    reply = client.post("/apps/shop/dynos", json=body)
    assert reply.status_code == status and text in reply.json()["message"], reply.text
    assert one_offs.created == one_offs.detached == []


def test_run_needs_code_and_access(run_api: Any) -> None:
    client, one_offs, _ = run_api
    reply = client.post("/apps/empty/dynos", json={"command": "ls", "attach": True})
    assert reply.status_code == 422 and "no release with code" in reply.json()["message"]
    assert client.post("/apps/nope/dynos", json={"command": "ls"}).status_code == 404
    anonymous = client.post("/apps/shop/dynos", json={"command": "ls"}, headers={
        "Authorization": "Bearer wrong"})  # fmt: skip
    assert anonymous.status_code == 401
    assert one_offs.created == one_offs.detached == []


def test_a_runtime_that_fails_is_a_503_that_quotes_nothing_of_the_dyno(
    run_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, one_offs, _ = run_api

    def refuse(spec: OneOffSpec) -> None:
        raise RuntimeError(f"manager refused the spec {spec.env}")  # as an engine might

    one_offs.create = one_offs.run_detached = refuse
    for body in ({"command": "ls", "attach": True}, {"command": "ls"}):
        reply = client.post("/apps/shop/dynos", json=body)
        assert reply.status_code == 503, reply.text
        error = reply.json()
        assert error["id"] == "unavailable" and "the dyno runtime failed" in error["message"]
        assert "from-config" not in reply.text  # a config var's value
    assert "manager refused the spec" in caplog.text and "from-config" not in caplog.text
