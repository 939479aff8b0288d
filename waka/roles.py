"""The roles a waka process plays, and serving them until it is told to stop.

- api: the Platform API and git over HTTP(S), `heroku run`'s rendezvous;
- router: apps' HTTP(S) traffic to their web dynos;
- worker: the builder, the dyno manager, the add-on manager, the API log, webhooks, drains.
`waka up` plays all three in one process; `waka api`, `waka router` and `waka worker` one each,
in any number of copies sharing one PostgreSQL. What each role runs in the background is
decided by the composition root (`Platform.reactors`); this module only starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waka.config import is_loopback

if TYPE_CHECKING:
    from waka.api.tls import ApiCertificate
    from waka.bootstrap import Platform

API, ROUTER, WORKER = "api", "router", "worker"
ALL = frozenset({API, ROUTER, WORKER})


@dataclass
class Listen:
    """Where the process listens (only what its roles need)."""

    host: str = "localhost"
    api_binds: list[str] = field(default_factory=list)
    tls_binds: list[str] = field(default_factory=list)
    certificate: ApiCertificate | None = None
    rendezvous_port: int | None = None
    reuse_port: bool = False  # several router processes on one port (SO_REUSEPORT)


def say(line: str) -> None:
    print(f"waka: {line}", flush=True)


async def serve(platform: Platform, roles: frozenset[str], listen: Listen) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    extra: list[tuple[Any, str | None]] = []
    tasks: list[asyncio.Task[Any]] = []
    router = None
    if ROUTER in roles:
        router, router_extra = _router(platform, roles)
        extra += router_extra
    if WORKER in roles and ROUTER not in roles:
        from waka.router.route_store import LastRequests

        platform.dyno_manager.last_request = LastRequests(platform.route_store).get
    reactors = platform.reactors(roles, tuple(extra))
    platform.notifications.start()
    reactors.start()
    say("reactors: " + ", ".join(reactors.names()))
    if WORKER in roles:
        manager = platform.dyno_manager
        say(f"dynos run as {manager.dynos.kind}")
        # Add-on URLs carry this address: a wrong one (a fresh engine's bridge) broke them all.
        say(f"dynos reach this host's services at {platform.addons_host}")
        for line in addon_summary(platform):
            say(line)
    settings = platform.settings
    if router is not None:
        tls = getattr(router, "tls_context", None)
        tasks.append(
            asyncio.create_task(
                router.serve(
                    listen.host,
                    settings.router_port,
                    settings.router_tls_port,
                    tls,
                    # `waka router` copies share their ports; `waka up` stays alone on its own
                    reuse_port=listen.reuse_port or roles != ALL,
                )
            )
        )
        say(f"router on http://<app>.{listen.host}:{settings.router_port}")
        if tls is not None:
            say(f"router on https://<app>.{listen.host}:{settings.router_tls_port}")
    try:
        if API in roles:
            await _serve_api(platform, listen, stop)
        else:
            await stop.wait()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        reactors.stop()
        platform.notifications.stop()


def _router(platform: Platform, roles: frozenset[str]) -> tuple[Any, list[tuple[Any, str | None]]]:
    from waka.adapters.acme import AcmeClient, Challenges
    from waka.adapters.acme_challenges import SharedChallenges
    from waka.reactors.acm import CertificateManager
    from waka.router import Router
    from waka.router.route_store import RouteActivity
    from waka.router.tls import RouterTlsError, router_tls

    extra: list[tuple[Any, str | None]] = []
    # Who starts a sleeping app's dynos: this process's dyno manager, or, from a router of
    # its own, whichever worker leads (told through the ledger's channel).
    ask = platform.dyno_manager.wake if WORKER in roles else platform.route_store.wake

    async def wake(app_id: str) -> None:
        """A request for a sleeping app: have its dynos started; return once one is routed."""
        await asyncio.to_thread(ask, app_id)
        while not ((route := platform.routes.get(app_id)) and route.backends):
            await asyncio.sleep(0.05)

    router = Router(
        platform.routes,
        log=lambda app_id, line: platform.logplex.emit(app_id, "heroku", "router", line),
        wake=wake,
    )
    if WORKER in roles:
        platform.dyno_manager.last_request = router.last_request.get
    else:  # the dyno manager reads when each app last had a request from the store
        extra.append((RouteActivity(platform.route_store, router.last_request), None))
    try:
        tls, certificates = router_tls(platform)  # (None, None) with --router-tls-port 0
    except RouterTlsError as error:
        print(f"waka: cannot serve apps over HTTPS: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    router.tls_context = tls  # type: ignore[attr-defined]
    if certificates is not None:
        extra.append((certificates, None))
    settings = platform.settings
    # HTTP-01 answers (ACM's orders, validated via the router): shared by every router copy.
    if settings.database_url:
        router.challenges = SharedChallenges(
            platform.store, settings.database_url, settings.database_schema
        )
        extra.append((router.challenges, None))
    else:
        router.challenges = Challenges()
    acme = AcmeClient(
        settings.acme_directory,
        settings.home,
        router.challenges,
        settings.acme_ca_file,
        settings.acme_email,
    )
    # Orders run where their challenges are answered: in a router process, one at a time.
    acm = CertificateManager(platform.ledger, platform.store, platform.projector.catch_up, acme)
    extra.append((acm, "acm"))
    return router, extra


async def _serve_api(platform: Platform, listen: Listen, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from waka.api.app import create_api
    from waka.api.routes import run
    from waka.rendezvous import start_rendezvous

    settings = platform.settings
    try:
        rendezvous = await start_rendezvous(
            settings.home, listen.host, listen.rendezvous_port, settings.public_host
        )
    except OSError as error:
        print(f"waka: cannot listen for `heroku run`: {error}", file=sys.stderr)
        raise SystemExit(1) from None

    class ApiConfig(Config):
        def create_sockets(self):  # type: ignore[no-untyped-def]
            # Hypercorn makes its listening sockets inheritable (for its worker processes,
            # which waka does not use). Every child (git http-backend and its hooks, builds,
            # Redis servers) would then hold the API's port: after a crash, waka could not
            # listen again while one of them lived.
            try:
                sockets = super().create_sockets()
            except OSError as error:  # taken since `waka` probed it: say so, no traceback
                print(f"waka: cannot listen for the API: {error.strerror}", file=sys.stderr)
                raise SystemExit(1) from None
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
                sock.set_inheritable(False)
            return sockets

    config = ApiConfig()
    if listen.tls_binds and listen.certificate:
        # Hypercorn: `bind` is TLS once a certificate is set; plain HTTP goes to insecure_bind.
        config.bind = listen.tls_binds
        config.insecure_bind = listen.api_binds
        config.certfile = str(listen.certificate.certfile)
        config.keyfile = str(listen.certificate.keyfile)
    else:
        config.bind = listen.api_binds
    config.accesslog = None
    config.errorlog = logging.getLogger("waka.http")  # one handler (ours), not hypercorn's too
    config.graceful_timeout = 5
    rendezvousing = asyncio.create_task(rendezvous.serve_forever())
    recovering = asyncio.create_task(asyncio.to_thread(run.recover, platform))  # old one-offs
    tls = bool(listen.tls_binds) and not is_loopback(listen.host)
    plain_host = "localhost" if tls else listen.host
    say(f"API on http://{plain_host}:{settings.api_port}")
    if listen.tls_binds and listen.certificate:
        ca = listen.certificate.ca_file
        trust = f"; trust {ca}" if ca else ""
        say(
            f"API and git over HTTPS on {settings.api_tls_url}"
            f" (certificate from {listen.certificate.issuer}{trust})"
        )
    ca = settings.home / "tls" / "ca.pem"
    say(f"heroku run on port {rendezvous.port}; NODE_EXTRA_CA_CERTS={ca}")
    try:
        await hypercorn_serve(create_api(platform, rendezvous), config, shutdown_trigger=stop.wait)
    finally:
        stop.set()
        rendezvousing.cancel()  # ends attached one-offs: their users are cut off anyway
        with contextlib.suppress(asyncio.CancelledError):
            await rendezvousing
        await recovering


def addon_summary(platform: Any) -> list[str]:
    """What each add-on service runs on here, for the operator (no passwords)."""
    from urllib.parse import urlparse

    from waka.addons.provider import Unavailable

    lines = []
    for name, provider in platform.providers.items():
        if isinstance(provider, Unavailable):
            lines.append(f"add-on {name} unavailable: {provider.reason}")
            continue
        where = getattr(provider, "admin_url", None) or getattr(provider, "base_url", None)
        if where:
            url = urlparse(where)
            port = f":{url.port}" if url.port else ""
            where = f"{url.scheme}://{url.hostname}{port}{url.path}"  # no user or password
        else:
            where = "a redis-server process per add-on"
        lines.append(f"add-on {name}: {where}; dynos reach it at {platform.addons_host}")
    return lines
