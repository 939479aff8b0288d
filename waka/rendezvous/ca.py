"""waka's own certificate authority and the rendezvous server's certificate.

The Heroku CLI opens `rendezvous://` attach URLs with TLS and verifies the certificate against
the host in the URL, so waka needs a certificate a client can trust: a CA of its own, made once
under `$WAKA_HOME/tls/` and trusted by the CLI with `NODE_EXTRA_CA_CERTS=<home>/tls/ca.pem`.
The server certificate names `localhost`, `127.0.0.1` and `::1` (plus any extra host given) and
is renewed from the same CA when it nears its end, so a trusted ca.pem stays valid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept; nothing here depends on it being short
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts only waka's CA (tests, and any Python client)."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def ensure_tls(home: Path, hosts: Iterable[str] = DEFAULT_HOSTS) -> TlsFiles:
    """The CA and server certificate under `home/tls`, made on first use and reused after.
    Safe against a second waka process doing the same at the same time (a file lock)."""
    files = TlsFiles(home / "tls")
    files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = sorted({*DEFAULT_HOSTS, *hosts})
    with _locked(files.directory / ".lock"):
        if not (files.ca_cert.exists() and files.ca_key.exists()):
            key, cert = _new_ca()
            _write(files.ca_key, _key_pem(key), private=True)
            _write(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        if _needs_server_cert(files, ca_cert, names):
            key, cert = _new_server_cert(ca_key, ca_cert, names)  # type: ignore[arg-type]
            _write(files.server_key, _key_pem(key), private=True)
            _write(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def issue_certificate(home: Path, names: list[str]) -> tuple[bytes, bytes]:
    """A server certificate from waka's CA for `names`, kept in memory only: (cert PEM with
    the CA after it, key PEM). The router's default certificate for an app's host name."""
    files = ensure_tls(home)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    ca_pem = files.ca_cert.read_bytes()
    key, cert = _new_server_cert(ca_key, x509.load_pem_x509_certificate(ca_pem), names)  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM) + ca_pem, _key_pem(key)


def _needs_server_cert(files: TlsFiles, ca_cert: x509.Certificate, names: list[str]) -> bool:
    if not (files.server_cert.exists() and files.server_key.exists()):
        return True
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        cert.verify_directly_issued_by(ca_cert)  # a CA made again means a new server cert
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return True
    covered = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    covered |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    expiring = cert.not_valid_after_utc - _now() < RENEW_BEFORE
    return expiring or not set(names) <= covered


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "waka"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"waka local CA {os.uname().nodename}"[:64]),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, names: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    found: list[x509.GeneralName] = []
    for name in names:
        try:
            found.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            found.append(x509.DNSName(name))
    return found


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Atomically, so a reader never sees half a file; keys readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
