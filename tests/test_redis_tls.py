"""Each Redis add-on's server also speaks TLS on its port + 1, where the Heroku CLI's
`redis:cli` connects for every plan not named "hobby" (so the Data API can report the real
plan): the same data, the same password, nothing without it."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from tests.test_addon_providers import make_redis, new_id, redis, redis_server  # noqa: F401
from waka.adapters.redis_addons import RedisProvider
from waka.addons.catalogue import HEROKU_REDIS


def tls_command(port: int, *commands: list[str]) -> bytes:
    """RESP commands over TLS as redis:cli sends them (no certificate check); the replies."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what the CLI does (rejectUnauthorized: false)
    wire = b"".join(
        b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in c)
        for c in commands
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(wire)
        replies = b""
        while replies.count(b"\r\n") < len(commands):
            chunk = tls.recv(4096)
            if not chunk:
                break
            replies += chunk
        return replies


def test_the_server_speaks_tls_on_the_next_port(redis: RedisProvider) -> None:  # noqa: F811
    addon_id = new_id()
    premium = HEROKU_REDIS.find_plan("premium-0")
    assert premium is not None
    url = urlsplit(redis.provision(addon_id, premium)["URL"])
    assert url.port is not None and url.password
    assert redis.tls_port(addon_id) == url.port + 1

    replies = tls_command(url.port + 1, ["AUTH", url.password], ["SET", "k", "v"], ["GET", "k"])
    assert replies == b"+OK\r\n+OK\r\n$1\r\nv\r\n"
    refused = tls_command(url.port + 1, ["GET", "k"])
    assert refused.startswith(b"-NOAUTH"), refused

    # A plain-text client on the TLS port gets nothing.
    with socket.create_connection(("127.0.0.1", url.port + 1), timeout=5) as plain:
        plain.sendall(b"PING\r\n")
        plain.settimeout(2)
        try:
            answer = plain.recv(100)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert b"PONG" not in answer

    # The certificate and key are the server's own, readable by waka's user only.
    home = redis.root / addon_id
    assert (home / "tls.key").stat().st_mode & 0o077 == 0


def test_a_restarted_server_keeps_its_tls_port(redis: RedisProvider) -> None:  # noqa: F811
    addon_id = new_id()
    url = urlsplit(redis.provision(addon_id, HEROKU_REDIS.default_plan)["URL"])
    redis.stop_all()
    redis.ensure_running(addon_id, HEROKU_REDIS.default_plan, {"URL": url.geturl()})
    assert redis.tls_port(addon_id) == url.port + 1
    assert tls_command(url.port + 1, ["AUTH", url.password or ""], ["PING"]) == b"+OK\r\n+PONG\r\n"


def test_a_server_made_before_tls_ports_gets_one_at_its_next_start(
    redis: RedisProvider,  # noqa: F811
) -> None:
    import json

    addon_id = new_id()
    url = urlsplit(redis.provision(addon_id, HEROKU_REDIS.default_plan)["URL"])
    redis.stop_all()
    state_file = redis.root / addon_id / "state.json"
    old = {k: v for k, v in json.loads(state_file.read_text()).items() if k != "tls_port"}
    state_file.write_text(json.dumps(old))  # as servers were made before
    assert redis.tls_port(addon_id) is None

    redis.ensure_running(addon_id, HEROKU_REDIS.default_plan, {"URL": url.geturl()})
    assert redis.tls_port(addon_id) == url.port + 1
    assert tls_command(url.port + 1, ["AUTH", url.password or ""], ["PING"]) == b"+OK\r\n+PONG\r\n"
