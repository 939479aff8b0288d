"""The router's TLS port: SNI picks the certificate (an app's own, a domain's chosen one, one
from waka's CA for `<app>.localhost`), and requests reach the dyno marked as HTTPS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.test_router import LOOPBACK, app, dyno, echo_dyno, router, run
from waka.domain.certificate import check_certificate, covers
from waka.domain.errors import InvalidParams
from waka.rendezvous.ca import ensure_tls
from waka.router.tls import RouterCertificates


def self_signed(*names: str, days: int = 30) -> tuple[str, str]:
    """A certificate for `names` and its key, as PEM text (what `heroku certs:add` uploads)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


async def https_get(port: int, server_name: str, cafile: str | None = None) -> tuple[dict, str]:
    """GET / over TLS with SNI `server_name` -> (the echo dyno's JSON, the peer's CN)."""
    context = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=context, server_hostname=server_name
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    cn = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    writer.write(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body), cn


def test_app_host_gets_a_certificate_of_waka_ca_and_https_headers(tmp_path: Path) -> None:
    ca = str(ensure_tls(tmp_path).ca_cert)

    async def main() -> None:
        async with dyno(echo_dyno()) as d, router() as r:
            r.table.set_app(app((d.backend("web.1"),)), ["www.example.test"])
            certificates = RouterCertificates(r.table, tmp_path)
            port = await r.router.start_tls(LOOPBACK, 0, certificates.context())
            seen, _ = await https_get(port, "myapp.localhost", cafile=ca)  # verified by name
            assert seen["headers"]["x-forwarded-proto"] == "https"
            assert seen["headers"]["x-forwarded-port"] == str(port)
            plain = await asyncio.open_connection(LOOPBACK, r.port)
            plain[1].write(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: close\r\n\r\n")
            body = (await plain[0].read()).partition(b"\r\n\r\n")[2]
            plain[1].close()
            assert json.loads(body)["headers"]["x-forwarded-proto"] == "http"
            # A name that routes nowhere gets waka's own certificate: verification fails.
            with pytest.raises(ssl.SSLCertVerificationError):
                await https_get(port, "nosuchapp.localhost", cafile=ca)

    run(main())


def test_custom_domain_certificates_chosen_by_sni(tmp_path: Path) -> None:
    www_cert, www_key = self_signed("www.example.test")
    star_cert, star_key = self_signed("*.example.test")

    async def main() -> None:
        async with dyno(echo_dyno()) as d, router() as r:
            r.table.set_app(app((d.backend("web.1"),)), ["www.example.test", "api.example.test"])
            certificates = RouterCertificates(r.table, tmp_path)
            rows = [
                {
                    "id": "e1",
                    "app_id": "app-1",
                    "certificate_chain": www_cert,
                    "private_key": www_key,
                },
                {
                    "id": "e2",
                    "app_id": "app-1",
                    "certificate_chain": star_cert,
                    "private_key": star_key,
                },
            ]
            certificates.load(rows, {})
            port = await r.router.start_tls(LOOPBACK, 0, certificates.context())
            seen, cn = await https_get(port, "www.example.test")
            assert cn == "CN=www.example.test"
            assert seen["headers"]["x-forwarded-proto"] == "https"
            # The wildcard, newest, covers api.; www. is served by its own.
            _, cn = await https_get(port, "api.example.test")
            assert cn == "CN=*.example.test"
            certificates.load(rows, {"www.example.test": "e2"})  # domains:update --cert
            _, cn = await https_get(port, "www.example.test")
            assert cn == "CN=*.example.test"

    run(main())


def test_certificate_checks() -> None:
    cert, key = self_signed("www.example.test", "example.test")
    info = check_certificate(cert, key)
    assert info.cert_domains == ("www.example.test", "example.test")
    assert info.self_signed and info.subject == "/CN=www.example.test"
    _, other_key = self_signed("www.example.test")
    with pytest.raises(InvalidParams, match="does not match"):
        check_certificate(cert, other_key)
    with pytest.raises(InvalidParams, match="not valid"):
        check_certificate("not a certificate", key)
    with pytest.raises(InvalidParams, match="private key is not valid"):
        check_certificate(cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    old_cert, old_key = self_signed("old.example.test", days=1)
    with pytest.raises(InvalidParams, match="expired"):
        check_certificate(old_cert, old_key, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert covers(("*.example.test",), "www.example.test")
    assert not covers(("*.example.test",), "a.b.example.test")
    assert not covers(("*.example.test",), "example.test")
    assert covers(("Example.test",), "example.test.")


def test_acme_challenges_answered_by_the_router_for_any_host() -> None:
    from waka.adapters.acme import Challenges

    async def get(port: int, host: str, path: str) -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data

    async def main() -> None:
        async with dyno(echo_dyno()) as d, router() as r:
            r.table.set_app(app((d.backend("web.1"),)), ["www.example.test"])
            r.router.challenges = Challenges()
            r.router.challenges.put("tok-1", "tok-1.thumbprint")
            path = "/.well-known/acme-challenge/tok-1"
            for host in ("www.example.test", "not-routed.example"):
                data = await get(r.port, host, path)
                assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
                assert data.endswith(b"\r\n\r\ntok-1.thumbprint")
            assert d.connections == 0  # never reached the dyno
            # Another token is the app's own business.
            data = await get(r.port, "www.example.test", "/.well-known/acme-challenge/tok-2")
            assert b'"path": "/.well-known/acme-challenge/tok-2"' in data

    run(main())


def test_operator_wildcard_for_app_hosts(tmp_path: Path) -> None:
    cert, key = self_signed("*.apps.example.test")
    (tmp_path / "wild.crt").write_text(cert)
    (tmp_path / "wild.key").write_text(key)

    async def main() -> None:
        async with dyno(echo_dyno()) as d, router() as r:
            r.table.set_app(app((d.backend("web.1"),)), ["myapp.apps.example.test"])
            certificates = RouterCertificates(
                r.table,
                tmp_path,
                "apps.example.test",
                (tmp_path / "wild.crt", tmp_path / "wild.key"),
            )
            port = await r.router.start_tls(LOOPBACK, 0, certificates.context())
            _, cn = await https_get(port, "myapp.apps.example.test")
            assert cn == "CN=*.apps.example.test"
            # A name it does not cover gets one of waka's CA instead.
            ca = str(tmp_path / "tls" / "ca.pem")
            seen, _ = await https_get(port, "myapp.localhost", cafile=ca)
            assert seen["headers"]["x-forwarded-proto"] == "https"

    run(main())
