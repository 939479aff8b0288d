"""The certificate the Platform API (and git over HTTPS) presents on its TLS port.

An operator's certificate and key (WAKA_API_TLS_CERT, WAKA_API_TLS_KEY) when given, else the
server certificate of waka's own CA (`waka.rendezvous.ca`, the one `heroku run` already uses),
issued for every name waka answers as: loopback, the public host, and the address it listens
on. Both are checked before `waka up` listens, so a bad pair stops it with a clear message
rather than failing every handshake later.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from waka.config import Settings
from waka.rendezvous.ca import DEFAULT_HOSTS, ensure_tls

ANY_ADDRESS = ("0.0.0.0", "::", "")


class TlsSetupError(Exception):
    """The API's certificate cannot be used; the message says why, for the operator."""


@dataclass(frozen=True)
class ApiCertificate:
    certfile: Path
    keyfile: Path
    issuer: str  # "waka's CA" or "the operator"
    ca_file: Path | None = None  # what clients trust, when it is waka's CA


def host_names(settings: Settings, listen_host: str) -> list[str]:
    """The names a client may use for the API: loopback, the public host, and the listen
    address when it is one host (not 0.0.0.0 or ::, which no client dials)."""
    names = [*DEFAULT_HOSTS, settings.public_host]
    if listen_host not in ANY_ADDRESS:
        names.append(listen_host.strip("[]"))
    return sorted(set(names))


def api_certificate(settings: Settings, listen_host: str) -> ApiCertificate:
    cert, key = settings.api_tls_cert, settings.api_tls_key
    if cert or key:
        if not (cert and key):
            raise TlsSetupError(
                "WAKA_API_TLS_CERT and WAKA_API_TLS_KEY go together: give both, or neither "
                "for a certificate from waka's CA"
            )
        check_pair(cert, key)
        return ApiCertificate(cert, key, "the operator")
    files = ensure_tls(settings.home, hosts=host_names(settings, listen_host))
    return ApiCertificate(files.server_cert, files.server_key, "waka's CA", files.ca_cert)


def check_pair(cert: Path, key: Path) -> None:
    """Load the pair as the server will; any problem becomes a TlsSetupError naming it."""
    for setting, path in (("WAKA_API_TLS_CERT", cert), ("WAKA_API_TLS_KEY", key)):
        if not path.is_file():
            raise TlsSetupError(f"{setting}={path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=lambda: _encrypted(key))
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise TlsSetupError(
                f"WAKA_API_TLS_KEY={key} is not the key of the certificate WAKA_API_TLS_CERT={cert}"
            ) from None
        raise TlsSetupError(
            f"WAKA_API_TLS_CERT={cert} and WAKA_API_TLS_KEY={key} are not a PEM certificate "
            f"(chain) and its unencrypted private key ({error.reason or error})"
        ) from None
    except OSError as error:
        raise TlsSetupError(f"cannot read the API's certificate or key: {error}") from None


def _encrypted(key: Path) -> str:
    # Else OpenSSL would prompt for its passphrase on the terminal, at every start.
    raise TlsSetupError(f"WAKA_API_TLS_KEY={key} is encrypted: waka needs it unencrypted (0600)")
