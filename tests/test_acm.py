"""The ACM reactor against a fake ACME server: it issues once per domain (a second pass does
nothing), records failures and stops retrying after three until a refresh, removes its
certificates when ACM is switched off, and resumes from the ledger in another process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from waka.adapters.acme import AcmeError, Challenges, Issued
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.projections.acm import acm_domains
from waka.projections.sni_endpoints import endpoint_domains, endpoints_of
from waka.reactors import acm as reactor
from waka.reactors.acm import CertificateManager
from waka.sni_endpoints import refresh_acm, set_acm


class FakeAcme:
    """Issues self-signed certificates, or fails for the names in `failing`."""

    def __init__(self, days: int = 90) -> None:
        self.orders: list[str] = []
        self.failing: set[str] = set()
        self.days = days  # how long the certificates it issues last

    def issue(self, hostname: str) -> Issued:
        self.orders.append(hostname)
        if hostname in self.failing:
            raise AcmeError(f"validation of {hostname} failed: connection refused")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
            .sign(key, hashes.SHA256())
        )
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        )


def manager(platform: Platform, acme: FakeAcme) -> CertificateManager:
    return CertificateManager(platform.ledger, platform.store, platform.projector.catch_up, acme)  # type: ignore[arg-type]


def test_issues_once_per_domain_and_removes_when_disabled(
    platform: Platform, actor: Actor, make_platform: Callable[..., Platform]
) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "acm-app")
    ledger.add_domain(actor, app.id, "www.acm.test")
    acme = FakeAcme()
    assert manager(platform, acme).reconcile() == 0  # ACM off: nothing
    set_acm(ledger, actor, app.id, True)

    assert manager(platform, acme).reconcile() == 1
    assert acme.orders == ["www.acm.test"]
    [endpoint] = endpoints_of(platform.store, str(app.id))
    assert endpoint["acm"]
    assert endpoint_domains(platform.store, str(app.id)) == {"www.acm.test": endpoint["id"]}
    assert acm_domains(platform.store, str(app.id))["www.acm.test"]["status"] == "cert issued"

    # Another process (a restart) reads the ledger: nothing to do.
    other = make_platform()
    assert manager(other, acme).reconcile() == 0
    assert acme.orders == ["www.acm.test"]

    set_acm(ledger, actor, app.id, False)
    manager(platform, acme).reconcile()
    assert endpoints_of(platform.store, str(app.id)) == []


def test_failures_retry_then_wait_for_refresh(
    platform: Platform, actor: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reactor, "RETRY_BASE", 0.0)
    ledger = platform.ledger
    app = ledger.create_app(actor, "acm-fail")
    ledger.add_domain(actor, app.id, "bad.acm.test")
    set_acm(ledger, actor, app.id, True)
    acme = FakeAcme()
    acme.failing.add("bad.acm.test")
    reconcile = manager(platform, acme).reconcile

    reconcile()
    state = acm_domains(platform.store, str(app.id))["bad.acm.test"]
    assert state["status"] == "failing" and "connection refused" in state["reason"]
    reconcile()
    reconcile()
    assert acm_domains(platform.store, str(app.id))["bad.acm.test"]["status"] == "failed"
    reconcile()
    assert len(acme.orders) == 3  # failed: no more orders

    acme.failing.clear()
    refresh_acm(ledger, actor, app.id)
    assert manager(platform, acme).reconcile() == 1
    assert acm_domains(platform.store, str(app.id))["bad.acm.test"]["status"] == "cert issued"


def test_challenges_answer_only_their_tokens(tmp_path: Path) -> None:
    challenges = Challenges()
    challenges.put("tok-1", "tok-1.thumb")
    assert challenges.answer(b"/.well-known/acme-challenge/tok-1") == b"tok-1.thumb"
    assert challenges.answer(b"/.well-known/acme-challenge/tok-2") is None
    assert challenges.answer(b"/tok-1") is None
    challenges.drop("tok-1")
    assert challenges.answer(b"/.well-known/acme-challenge/tok-1") is None


def test_renews_a_certificate_near_its_end_in_place(platform: Platform, actor: Actor) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "acm-renew")
    ledger.add_domain(actor, app.id, "www.renew.test")
    set_acm(ledger, actor, app.id, True)
    acme = FakeAcme(days=20)  # within RENEW_BEFORE (30 days) from the start
    assert manager(platform, acme).reconcile() == 1
    [first] = endpoints_of(platform.store, str(app.id))
    acme.days = 90
    assert manager(platform, acme).reconcile() == 1  # renewed
    [renewed] = endpoints_of(platform.store, str(app.id))
    assert renewed["id"] == first["id"]  # the same endpoint, a new certificate
    assert renewed["certificate_chain"] != first["certificate_chain"]
    assert manager(platform, acme).reconcile() == 0  # fresh now
    assert acme.orders == ["www.renew.test"] * 2


def test_audit_shows_certificates_and_acm_without_keys(platform: Platform, actor: Actor) -> None:
    from waka.audit import query

    ledger = platform.ledger
    app = ledger.create_app(actor, "acm-audit")
    ledger.add_domain(actor, app.id, "www.audit.test")
    set_acm(ledger, actor, app.id, True)
    acme = FakeAcme()
    acme.failing.add("www.audit.test")
    manager(platform, acme).reconcile()
    acme.failing.clear()
    refresh_acm(ledger, actor, app.id)
    manager(platform, acme).reconcile()
    set_acm(ledger, actor, app.id, False)
    manager(platform, acme).reconcile()
    lines = [(e.app, e.actor, e.action) for e in query(ledger, app="acm-audit")]
    actions = [action for _, _, action in lines]
    assert "Enable Automated Certificate Management" in actions
    assert any(
        a.startswith("ACM certificate for www.audit.test failed: validation") for a in actions
    )
    added = next(a for a in actions if a.startswith("Add ACM certificate "))
    assert added.endswith("(www.audit.test)")
    name = added.split()[3]
    assert f"Serve www.audit.test with {name}" in actions
    assert any(a.startswith("ACM certificate issued for www.audit.test, until ") for a in actions)
    assert f"Remove SSL certificate {name}" in actions
    assert "Disable Automated Certificate Management" in actions
    assert {app_name for app_name, _, _ in lines} == {"acm-audit"}
    assert ("acm-audit", "acm", f"Remove SSL certificate {name}") in lines
    assert not any("PRIVATE KEY" in a for a in actions)
