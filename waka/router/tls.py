"""TLS termination at the router: the certificate for each handshake, chosen by its SNI name.

In order: the certificate a custom domain was given (`heroku domains:update --cert`), else the
newest of the app's certificates that names the domain (`heroku certs:add`, or ACM's; an exact
name before a wildcard), else, for an
app's own host name (`<app>.localhost`, `<app>.<public host>`), the operator's wildcard
(WAKA_ROUTER_TLS_CERT/KEY) where it names the host, else a certificate waka's CA makes for
that name on first use (kept
in memory: a wildcard under a one-label domain such as `localhost` is refused by clients).
Anything else gets waka's server certificate, so the client's verification says what is wrong.

Keys go from the read model into OpenSSL through an anonymous in-memory file (memfd): never
onto the disk in clear. The handshake callback runs on the router's loop and only looks up
prepared contexts, except the first handshake for an app host name, which signs one
certificate (about a millisecond).
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from waka.domain.certificate import covers, parse_chain
from waka.rendezvous.ca import ensure_tls, issue_certificate
from waka.router.table import LOCAL_SUFFIX, RouteTable, normalize_host

log = logging.getLogger("waka.router")

MINTED_MAX = 4096  # app host names with a certificate from waka's CA, kept in memory


class RouterTlsError(Exception):
    """The router's TLS setup cannot work; the message says why, for the operator."""


def context_from_pem(chain: bytes, key: bytes) -> ssl.SSLContext:
    """A server context for a PEM chain and key held in memory."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    fd = os.memfd_create("waka-certificate", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context


class Endpoint:
    __slots__ = ("app_id", "context", "digest", "domains", "id")

    def __init__(self, row: dict[str, Any], context: ssl.SSLContext, digest: str) -> None:
        self.id: str = row["id"]
        self.app_id: str = row["app_id"]
        self.domains = parse_chain(row["certificate_chain"]).cert_domains
        self.context = context
        self.digest = digest


class RouterCertificates:
    def __init__(
        self,
        table: RouteTable,
        home: Path,
        public_host: str = "localhost",
        wildcard: tuple[Path, Path] | None = None,
    ) -> None:
        self.table = table
        self.home = home
        self.suffixes = tuple({LOCAL_SUFFIX, "." + public_host.lower()})
        files = ensure_tls(home)
        self.fallback = context_from_pem(
            files.server_cert.read_bytes(), files.server_key.read_bytes()
        )
        self.wildcard: ssl.SSLContext | None = None
        self.wildcard_names: tuple[str, ...] = ()
        if wildcard is not None:
            self.wildcard = _operator_context(*wildcard)
            self.wildcard_names = parse_chain(wildcard[0].read_text()).cert_domains
        self._endpoints: dict[str, Endpoint] = {}  # id -> endpoint
        self._by_app: dict[str, list[Endpoint]] = {}
        self._chosen: dict[str, str] = {}  # hostname -> endpoint id (domains:update --cert)
        self._minted: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()  # writers only: readers see whole dicts swapped in

    def context(self) -> ssl.SSLContext:
        """The context the router listens with: its callback picks the real one."""
        context = self._base()
        context.sni_callback = self._sni
        return context

    def _base(self) -> ssl.SSLContext:
        files = ensure_tls(self.home)
        return context_from_pem(files.server_cert.read_bytes(), files.server_key.read_bytes())

    # --- the certificates of apps, from the read model -----------------------------------------

    def load(self, endpoints: list[dict[str, Any]], chosen: dict[str, str]) -> None:
        """State every endpoint (with its key) and the domains' choices; only changed
        certificates are loaded into OpenSSL again."""
        with self._lock:
            old = self._endpoints
            fresh: dict[str, Endpoint] = {}
            for row in endpoints:
                chain, key = row["certificate_chain"], row["private_key"]
                digest = hashlib.sha256(f"{chain}\0{key}".encode()).hexdigest()
                known = old.get(row["id"])
                if known is not None and known.digest == digest:
                    fresh[row["id"]] = known
                    continue
                try:
                    context = context_from_pem(chain.encode(), key.encode())
                except (ssl.SSLError, OSError) as error:  # checked when added: should not be
                    log.warning("certificate %s cannot be loaded: %s", row["id"], error)
                    continue
                fresh[row["id"]] = Endpoint(row, context, digest)
            by_app: dict[str, list[Endpoint]] = {}
            for endpoint in fresh.values():
                by_app.setdefault(endpoint.app_id, []).append(endpoint)
            self._endpoints, self._by_app, self._chosen = fresh, by_app, dict(chosen)

    # --- the handshake --------------------------------------------------------------------------

    def choose(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.fallback
        name = normalize_host(server_name)
        chosen = self._chosen.get(name)
        if chosen is not None and (endpoint := self._endpoints.get(chosen)) is not None:
            return endpoint.context
        route = self.table.lookup(name)
        if route is None:
            return self.fallback
        endpoints = self._by_app.get(route.app_id, ())
        for endpoint in reversed(endpoints):  # newest first, one naming the host exactly
            if name in endpoint.domains:
                return endpoint.context
        for endpoint in reversed(endpoints):  # then a wildcard
            if covers(endpoint.domains, name):
                return endpoint.context
        if name.endswith(self.suffixes):
            if self.wildcard is not None and covers(self.wildcard_names, name):
                return self.wildcard
            return self._minted_for(name)
        return self.fallback

    def _minted_for(self, name: str) -> ssl.SSLContext:
        context = self._minted.get(name)
        if context is None:
            if len(self._minted) >= MINTED_MAX:
                self._minted.clear()
            chain, key = issue_certificate(self.home, [name])
            context = self._minted[name] = context_from_pem(chain, key)
        return context

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        try:
            sslobj.context = self.choose(server_name)
        except Exception:  # a handshake must not take the loop down; the client sees a failure
            log.exception("choosing a certificate for %r failed", server_name)


def _operator_context(cert: Path, key: Path) -> ssl.SSLContext:
    for setting, path in (("WAKA_ROUTER_TLS_CERT", cert), ("WAKA_ROUTER_TLS_KEY", key)):
        if not path.is_file():
            raise RouterTlsError(f"{setting}={path}: no such file")
    try:
        return context_from_pem(cert.read_bytes(), key.read_bytes())
    except ssl.SSLError as error:
        raise RouterTlsError(
            f"WAKA_ROUTER_TLS_CERT={cert} and WAKA_ROUTER_TLS_KEY={key} are not a PEM certificate "
            f"(chain) and its unencrypted private key ({error.reason or error})"
        ) from None


class CertificateFollower:
    """Keeps the router's certificates current: a reactor (waka.reactors.lifecycle) of every
    process that routes, woken when a certificate or a domain changes, and every `interval`
    seconds."""

    name = "router-certificates"

    def __init__(
        self,
        certificates: RouterCertificates,
        read: Callable[[], tuple[list[dict[str, Any]], dict[str, str]]],
        interval: float = 2.0,
    ) -> None:
        from waka.domain.app import App
        from waka.domain.certificate import SniEndpoint
        from waka.reactors.lifecycle import topics_of

        self.certificates = certificates
        self.read = read
        self.interval = interval
        self.topics = topics_of(SniEndpoint, App.DomainRemoved)

    def refresh(self) -> None:
        self.certificates.load(*self.read())

    def tick(self) -> None:
        self.refresh()  # the read model is caught up before a reactor is woken


def router_tls(platform: Any) -> tuple[ssl.SSLContext | None, CertificateFollower | None]:
    """The router's TLS context and the follower keeping its certificates current (for the
    composition root to run), from the platform's settings; (None, None) when the router's
    TLS port is 0."""
    from waka.projections.sni_endpoints import all_domain_choices, all_endpoints

    settings = platform.settings
    if not settings.router_tls_port:
        return None, None
    cert, key = settings.router_tls_cert, settings.router_tls_key
    if bool(cert) != bool(key):
        raise RouterTlsError(
            "WAKA_ROUTER_TLS_CERT and WAKA_ROUTER_TLS_KEY go together: give both, or neither "
            "for certificates from waka's CA"
        )
    certificates = RouterCertificates(
        platform.routes,
        settings.home,
        settings.public_host,
        (cert, key) if cert and key else None,
    )
    store = platform.store
    follower = CertificateFollower(
        certificates, lambda: (all_endpoints(store), all_domain_choices(store))
    )
    follower.refresh()
    return certificates.context(), follower
