"""SNI endpoints: an app's TLS certificates for its custom domains (`heroku certs:add`).

One aggregate per endpoint. Its events carry the certificate chain and the private key: the
ledger encrypts stored events with its key, and the read model seals the private key again
(see waka/projections/sni_endpoints.py). A certificate is checked before it is recorded: a PEM
chain, a private key that is the certificate's, a date range that has not ended.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from uuid import UUID

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from eventsourcing.domain import Aggregate, event

from waka.domain.actors import Actor
from waka.domain.errors import InvalidParams, NotFound

# Heroku names its SNI endpoints after dinosaurs ("tyrannosaurus-12345").
_NAMES = (
    "allosaurus", "ankylosaurus", "brachiosaurus", "diplodocus", "iguanodon", "parasaurolophus",
    "stegosaurus", "triceratops", "tyrannosaurus", "velociraptor",
)  # fmt: skip
MAX_PEM = 64 * 1024  # a chain of a few certificates is a few KB


def new_endpoint_name() -> str:
    return f"{secrets.choice(_NAMES)}-{secrets.randbelow(90000) + 10000}"


@dataclass(frozen=True)
class CertificateInfo:
    """What `heroku certs:info` shows of a certificate (Heroku's ssl_cert object)."""

    cert_domains: tuple[str, ...]
    subject: str
    issuer: str
    starts_at: dt.datetime
    expires_at: dt.datetime
    self_signed: bool

    def covers(self, hostname: str) -> bool:
        return covers(self.cert_domains, hostname)


def covers(cert_domains: tuple[str, ...] | list[str], hostname: str) -> bool:
    """Does a certificate for these names serve `hostname` (one `*.` level, as TLS clients do)?"""
    hostname = hostname.lower().rstrip(".")
    for name in cert_domains:
        name = name.lower()
        if name == hostname:
            return True
        if name.startswith("*.") and hostname.partition(".")[2] == name[2:]:
            return True
    return False


def check_certificate(
    chain: object, key: object, now: dt.datetime | None = None
) -> CertificateInfo:
    """The chain's first certificate, checked against its key; InvalidParams saying what is
    wrong otherwise (never quoting the key)."""
    if not isinstance(chain, str) or not chain.strip():
        raise InvalidParams("certificate_chain is required: the PEM certificate (and its chain).")
    if not isinstance(key, str) or not key.strip():
        raise InvalidParams("private_key is required: the certificate's PEM private key.")
    if len(chain) > MAX_PEM or len(key) > MAX_PEM:
        raise InvalidParams("The certificate chain or private key is too large.")
    try:
        certs = x509.load_pem_x509_certificates(chain.encode())
    except ValueError:
        raise InvalidParams(
            "The certificate chain is not valid: expected PEM certificates "
            "(-----BEGIN CERTIFICATE-----)."
        ) from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        raise InvalidParams("The private key is encrypted: give it without a passphrase.") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidParams(
            "The private key is not valid: expected an unencrypted PEM private key."
        ) from None
    cert = certs[0]
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InvalidParams("The private key's type is not supported (RSA or EC keys are).")
    if _public_der(private.public_key()) != _public_der(cert.public_key()):
        raise InvalidParams("The private key does not match the certificate's public key.")
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise InvalidParams(
            f"The certificate expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC."
        )
    return certificate_info(cert)


def certificate_info(cert: x509.Certificate) -> CertificateInfo:
    names: list[str] = []
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n).lower() for n in sans.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:  # an old-style certificate naming its host in the CN only
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        names = [str(a.value).lower() for a in cns]
    return CertificateInfo(
        cert_domains=tuple(dict.fromkeys(names)),
        subject=_openssl_name(cert.subject),
        issuer=_openssl_name(cert.issuer),
        starts_at=cert.not_valid_before_utc,
        expires_at=cert.not_valid_after_utc,
        self_signed=cert.subject == cert.issuer,
    )


def parse_chain(chain: str) -> CertificateInfo:
    """A recorded chain's info (it was checked when recorded)."""
    return certificate_info(x509.load_pem_x509_certificates(chain.encode())[0])


def _public_der(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _openssl_name(name: x509.Name) -> str:
    """`/C=US/O=Org/CN=example.com`, as Heroku shows subject and issuer."""
    return "".join(f"/{a.rfc4514_attribute_name}={a.value}" for a in name)


class SniEndpoint(Aggregate):
    @event("Created")
    def __init__(
        self,
        app_id: UUID,
        name: str,
        certificate_chain: str,
        private_key: str,
        actor: Actor,
        acm: bool = False,
    ) -> None:
        self.app_id = app_id
        self.name = name
        self.certificate_chain = certificate_chain
        self.private_key = private_key
        self.acm = acm
        self.domains: list[str] = []
        self.removed = False

    def _check_live(self) -> None:
        if self.removed:
            raise NotFound("Couldn't find that SNI endpoint.")

    def update(self, certificate_chain: str, private_key: str, actor: Actor) -> None:
        self._check_live()
        self._update(certificate_chain=certificate_chain, private_key=private_key, actor=actor)

    @event("Updated")
    def _update(self, certificate_chain: str, private_key: str, actor: Actor) -> None:
        self.certificate_chain = certificate_chain
        self.private_key = private_key

    def attach_domain(self, hostname: str, actor: Actor) -> None:
        self._check_live()
        if hostname not in self.domains:
            self._attach(hostname=hostname, actor=actor)

    @event("DomainAttached")
    def _attach(self, hostname: str, actor: Actor) -> None:
        self.domains.append(hostname)

    def detach_domain(self, hostname: str, actor: Actor) -> None:
        if hostname in self.domains:
            self._detach(hostname=hostname, actor=actor)

    @event("DomainDetached")
    def _detach(self, hostname: str, actor: Actor) -> None:
        self.domains.remove(hostname)

    def remove(self, actor: Actor) -> None:
        self._check_live()
        self._remove(actor=actor)

    @event("Removed")
    def _remove(self, actor: Actor) -> None:
        self.removed = True
