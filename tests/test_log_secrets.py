"""No secret reaches waka's own log or the audit log: a drain that keeps failing is logged by
its scheme, host and port only; buildpack URLs lose their credentials."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.test_drains import FAST, Delivery, with_drains_projection
from waka import audit
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.logplex import Logplex
from waka.redaction import redact_url

SECRETS = ("drain-user", "s3cret-pw", "tok3n-path", "k3y-query")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@logs.example.com:8443/t0ken?key=k", "https://logs.example.com:8443"),
        ("syslog+tls://logs.example.com:6514", "syslog+tls://logs.example.com:6514"),
        ("http://[::1]:8080/secret", "http://[::1]:8080"),
        ("https://u:p@host:notaport/", "(unparseable URL)"),
        ("no url at all", "(unparseable URL)"),
    ],
)
def test_redact_url_keeps_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("scheme", ["http", "syslog"])
def test_a_failing_drain_is_logged_without_its_secrets(
    platform: Platform, actor: Actor, caplog: pytest.LogCaptureFixture, scheme: str
) -> None:
    with_drains_projection(platform)
    app = platform.ledger.create_app(actor, "shop")
    delivery = Delivery(platform, Logplex(), actor, app.id)
    port = closed_port()
    url = f"{scheme}://{SECRETS[0]}:{SECRETS[1]}@127.0.0.1:{port}/{SECRETS[2]}?key={SECRETS[3]}"
    drain = delivery.add(url)
    caplog.set_level(logging.DEBUG)
    with delivery.forwarder(FAST) as forwarder:
        delivery.emit("hello")
        deadline = time.monotonic() + 10
        while forwarder.stats()[drain["id"]].failures < 3:  # several retries, each logged
            assert time.monotonic() < deadline, "the drain never failed"
            time.sleep(0.01)
    retries = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(retries) >= 3
    assert all(f"drain {scheme}://127.0.0.1:{port} unavailable" in m for m in retries), retries
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in SECRETS:
        assert secret not in logged
    for stats in forwarder.stats().values():
        assert all(secret not in stats.last_error for secret in SECRETS)


def test_the_audit_log_shows_no_drain_or_buildpack_credentials(
    platform: Platform, actor: Actor
) -> None:
    app = platform.ledger.create_app(actor, "shop")
    platform.ledger.add_drain(actor, app.id, "https://u:s3cret-pw@logs.example.com/tok3n-path")
    platform.ledger.set_buildpacks(
        actor, app.id, ["https://u:s3cret-pw@git.example.com/team/buildpack.git"]
    )
    actions = [e.action for e in audit.query(platform.ledger, app="shop")]
    assert "Add log drain https://logs.example.com" in actions
    assert "Set buildpacks: https://git.example.com/team/buildpack.git" in actions
    assert not any("s3cret" in a or "tok3n" in a for a in actions)


def test_an_internal_error_logs_the_route_not_a_log_streams_token(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace
    from urllib.parse import urlsplit

    from tests.test_api import Api, BrokenStore

    broken = BrokenStore(platform.store)
    api = Api(replace(platform, store=broken))
    api.post("/apps", json={"name": "shop"})
    session = api.post("/apps/shop/log-sessions", json={}).json()
    path = urlsplit(session["logplex_url"]).path
    token = path.rsplit("/", 1)[1]
    broken.broken = True
    caplog.set_level(logging.ERROR, logger="waka.api")
    assert api.client.get(path).status_code == 500
    messages = [r.getMessage() for r in caplog.records]
    assert "internal error on GET /log-streams/{token}" in messages
    assert token not in caplog.text
