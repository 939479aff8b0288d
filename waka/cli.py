"""`waka`: the operator's command line. Start the platform, manage users, read the audit log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from waka.config import Settings, is_loopback

if TYPE_CHECKING:
    from waka.api.tls import ApiCertificate
    from waka.domain.account import Account
    from waka.ledger import Ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="waka", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start the platform in one process")
    up.add_argument("--api-port", type=int, default=None, help="Platform API port (5000)")
    up.add_argument(
        "--router-port",
        type=int,
        default=None,
        help="router port: apps answer at http://<app>.localhost:PORT (8080)",
    )
    up.add_argument(
        "--api-tls-port",
        type=int,
        default=None,
        help="HTTPS port of the Platform API and git (5443; 0: none)",
    )
    up.add_argument(
        "--router-tls-port",
        type=int,
        default=None,
        help="router HTTPS port: apps answer at https://<app>.localhost:PORT (8443; 0: none)",
    )
    up.add_argument("--host", default="localhost", help="address to listen on (localhost)")
    up.add_argument(
        "--rendezvous-port",
        type=int,
        default=None,
        help="TLS port `heroku run` attaches to (5001, or a free one if that is taken)",
    )

    create = commands.add_parser(
        "users:create", help="create a user; prints its password, then its API key last"
    )
    create.add_argument("email")
    create.add_argument("--name", default="")
    create.add_argument(
        "--password",
        action="store_true",
        help="ask for the password (or read it from stdin) instead of making one",
    )

    password = commands.add_parser(
        "users:password", help="set a user's password (asked for, or read from stdin)"
    )
    password.add_argument("email")

    regenerate = commands.add_parser("users:regenerate-key", help="give a user a new API key")
    regenerate.add_argument("email")

    audit = commands.add_parser("audit", help="what happened, read from the ledger")
    audit.add_argument("--app", help="only this app (any name it has had)")
    audit.add_argument("--actor", help="only what this user did (email)")
    audit.add_argument("--since", help="only from this time on (ISO 8601)")
    audit.add_argument("--team", help="only this team and its apps")

    team = commands.add_parser("teams:create", help="create a team (Heroku Teams) with an admin")
    team.add_argument("name")
    team.add_argument("--admin", required=True, help="the email of the team's first admin")

    projections = commands.add_parser("projections", help="manage the read models")
    projections.add_argument("action", choices=["rebuild"])

    cipher = commands.add_parser(
        "cipher-key", help="print a new key for WAKA_CIPHER_KEY; `rotate`: change the key"
    )
    cipher.add_argument(
        "action",
        nargs="?",
        choices=["rotate"],
        help="re-encrypt the ledger with a new key (every waka process of the home stopped)",
    )

    stack = commands.add_parser("stack", help="the stack image that builds and runs apps")
    stack.add_argument(
        "action",
        choices=["build"],
        help="build the image from this machine's apt mirror (or $WAKA_STACK_MIRROR)",
    )
    stack.add_argument("--force", action="store_true", help="rebuild even if the image exists")

    args = parser.parse_args(argv)
    from waka.adapters.cipher_key import CipherKeyError
    from waka.adapters.private_home import PRIVATE_UMASK

    # The stores, keys and state files made here are waka's user's alone.
    args.operator_umask = os.umask(PRIVATE_UMASK)
    try:
        return _COMMANDS[args.command](args)
    except CipherKeyError as error:
        print(f"waka: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`waka audit | head`): stop quietly, like any Unix filter.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {}
    if getattr(args, "api_port", None):
        overrides["api_port"] = args.api_port
    if getattr(args, "api_tls_port", None) is not None:
        overrides["api_tls_port"] = args.api_tls_port
    if getattr(args, "router_tls_port", None) is not None:
        overrides["router_tls_port"] = args.router_tls_port
    if getattr(args, "router_port", None):
        overrides["router_port"] = args.router_port
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    return settings


def _bootstrap(args: argparse.Namespace):
    from waka.bootstrap import bootstrap

    return bootstrap(_settings(args))


def cmd_users_create(args: argparse.Namespace) -> int:
    from waka.domain.errors import DomainError
    from waka.domain.passwords import check_password, new_password

    password = _ask_password() if args.password else new_password()
    try:
        check_password(password)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1

    def register(ledger: Ledger) -> tuple[Account, str]:
        account, key = ledger.register_user(args.email, args.name)
        ledger.set_password(account.email, password)
        return account, key

    shown = "" if args.password else f"\nPassword (for `heroku login -i`): {password}"
    return _issue_key(
        args, register, "Created user {account.email} ({account.id})." + shown + "\nAPI key:"
    )


def cmd_users_password(args: argparse.Namespace) -> int:
    from waka.domain.errors import DomainError

    password = _ask_password()
    platform = _bootstrap(args)
    try:
        platform.ledger.set_password(args.email, password)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    platform.projector.catch_up()
    print(f"Password set for {args.email.lower()}.")
    return 0


def _ask_password() -> str:
    """From the terminal, twice; or one line of stdin (scripts: `... < file`)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        print("error: the passwords differ", file=sys.stderr)
        raise SystemExit(1)
    return first


def cmd_users_regenerate(args: argparse.Namespace) -> int:
    return _issue_key(
        args,
        lambda ledger: ledger.regenerate_api_key(args.email),
        "New API key for {account.email}; the old one no longer works:",
    )


def _issue_key(
    args: argparse.Namespace, command: Callable[[Ledger], tuple[Account, str]], headline: str
) -> int:
    """Run a ledger command that makes an API key; print the key as the last line."""
    from waka.domain.errors import DomainError

    platform = _bootstrap(args)
    try:
        account, key = command(platform.ledger)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    platform.projector.catch_up()
    print(headline.format(account=account))
    print(key)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from waka import audit

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            print(f"error: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr)
            return 2
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    platform = _bootstrap(args)
    found = audit.query(
        platform.ledger, app=args.app, actor=args.actor, since=since, team=args.team
    )
    for entry in found:
        print(entry.line())
    return 0


def cmd_teams_create(args: argparse.Namespace) -> int:
    from waka.domain.actors import OPERATOR
    from waka.domain.errors import DomainError

    platform = _bootstrap(args)
    try:
        team = platform.ledger.create_team(OPERATOR, args.name, admin_email=args.admin)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    platform.projector.catch_up()
    print(f"Created team {team.name} ({team.id}); admin: {args.admin.lower()}.")
    return 0


def cmd_projections(args: argparse.Namespace) -> int:
    platform = _bootstrap(args)
    count = platform.projector.rebuild()
    print(f"Rebuilt the read models from {count} ledger events.")
    return 0


def cmd_cipher_key(args: argparse.Namespace) -> int:
    from eventsourcing.cipher import AESCipher

    key = AESCipher.create_key(num_bytes=32)
    if args.action == "rotate":
        return _rotate_cipher_key(args, key)
    print(key)
    return 0


def _rotate_cipher_key(args: argparse.Namespace, key: str) -> int:
    from dataclasses import replace

    from waka.adapters import cipher_key
    from waka.bootstrap import bootstrap

    settings = cipher_key.resolve(_settings(args))
    count = cipher_key.rotate(settings, key)
    in_file = settings.cipher_key_file is not None or settings.cipher_key is None
    rotated = replace(settings, cipher_key=None if in_file else key, cipher_key_file=None)
    platform = bootstrap(rotated)  # reads the new key file, or takes the new key as given
    try:
        platform.projector.rebuild()  # the read models' secrets, sealed with the new key
    finally:
        platform.close()
    print(f"Re-encrypted {count} stored events and snapshots with a new key.")
    if in_file:
        print(f"The new key is in {cipher_key.key_file(settings)}: back it up now.")
        return 0
    print("Set WAKA_CIPHER_KEY to this new key on every waka host before starting them:")
    print(key)
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from waka.adapters import stack

    try:
        stack.build_stack(force=args.force, say=lambda line: print(line, flush=True))
    except stack.StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(args)
    tls_binds = _binds(args.host, settings.api_tls_port) if settings.api_tls_port else []
    api_binds = _plain_api_binds(args.host, settings.api_port, tls=bool(tls_binds))
    router_binds = _binds(args.host, settings.router_port)
    if settings.router_tls_port:
        router_binds += _binds(args.host, settings.router_tls_port)
    for bind in [*api_binds, *tls_binds, *router_binds]:
        problem = _unbindable(bind)
        if problem:
            print(f"waka: cannot listen on {bind}: {problem}", file=sys.stderr)
            return 1
    certificate = None
    if tls_binds:
        from waka.api.tls import TlsSetupError, api_certificate

        try:
            certificate = api_certificate(settings, args.host)
        except TlsSetupError as error:
            print(f"waka: cannot serve the API over HTTPS: {error}", file=sys.stderr)
            return 1
    platform = _bootstrap(args)
    # The stores and keys are made. From here on, builds and dynos make files that containers
    # read as users other than waka's (slugs): their adapters set those modes, under the umask
    # the operator gave; the home stays 0700 (waka.adapters.private_home).
    os.umask(args.operator_umask)
    where = (settings.database_url and "PostgreSQL") or f"SQLite under {settings.home}"
    print(f"waka: ledger on {where}", flush=True)
    print(f"waka: {_encryption_status(platform.settings)}", flush=True)
    runtime = platform.runtime
    if runtime.name == "docker":
        print("waka: builds run in Docker containers of the stack image", flush=True)
    else:
        print(
            "waka: builds run as processes on this host (no Docker engine or stack image;"
            " see `waka stack build`)",
            flush=True,
        )
    from waka.router import eventloop  # uvloop when installed: cheaper per proxied request

    try:
        eventloop.run(
            _serve(
                platform,
                args.host,
                args.rendezvous_port,
                api_binds=api_binds,
                tls_binds=tls_binds,
                certificate=certificate,
            )
        )
    finally:
        platform.close()
    print("waka: stopped", flush=True)
    return 0


def _encryption_status(settings: Settings) -> str:
    if settings.cipher_key_file:
        return f"stored events and secrets are encrypted with the key in {settings.cipher_key_file}"
    if settings.cipher_key:
        return "stored events and secrets are encrypted with WAKA_CIPHER_KEY"
    return (
        "this ledger was made before encryption was the default and stays UNENCRYPTED "
        "(see the README: Backing up and rotating the key)"
    )


async def _serve(
    platform,
    host: str,
    rendezvous_port: int | None = None,
    *,
    api_binds: list[str] | None = None,
    tls_binds: list[str] | None = None,
    certificate: ApiCertificate | None = None,
) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from waka.api.app import create_api
    from waka.api.routes import run
    from waka.rendezvous import start_rendezvous
    from waka.router import Router

    try:
        rendezvous = await start_rendezvous(
            platform.settings.home, host, rendezvous_port, platform.settings.public_host
        )
    except OSError as error:
        print(f"waka: cannot listen for `heroku run`: {error}", file=sys.stderr)
        raise SystemExit(1) from None

    class ApiConfig(Config):
        def create_sockets(self):  # type: ignore[no-untyped-def]
            # Hypercorn makes its listening sockets inheritable (for its worker processes,
            # which `waka up` does not use). Every child (git http-backend and its hooks,
            # builds, Redis servers) would then hold the API's port: after a crash, waka could
            # not listen again while one of them lived.
            sockets = super().create_sockets()
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
                sock.set_inheritable(False)
            return sockets

    config = ApiConfig()
    api_binds = api_binds if api_binds is not None else _binds(host, platform.settings.api_port)
    if tls_binds and certificate:
        # Hypercorn: `bind` is TLS once a certificate is set; plain HTTP goes to insecure_bind.
        config.bind = tls_binds
        config.insecure_bind = api_binds
        config.certfile = str(certificate.certfile)
        config.keyfile = str(certificate.keyfile)
    else:
        config.bind = api_binds
    config.accesslog = None
    config.errorlog = logging.getLogger("waka.http")  # one handler (ours), not hypercorn's too
    config.graceful_timeout = 5
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def follow_ledger() -> None:
        # Other processes (the `waka` CLI, a second API) write too: keep the read models current.
        while not stop.is_set():
            try:
                await asyncio.to_thread(platform.projector.catch_up)
            except Exception:
                logging.getLogger("waka.projector").exception("catch-up failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def build_forever() -> None:
        # The builder reconciles: every pending build in the read model gets built, also
        # the ones a crash interrupted. Woken at once by builds requested in this process.
        builder = platform.builder
        while not stop.is_set():
            try:
                builder.run_pending()
            except Exception:
                logging.getLogger("waka.builder").exception("builder failed; retrying")
            builder.wakeup.wait(timeout=0.2)
            builder.wakeup.clear()

    from waka.reactors.api_log import ApiLog

    api_log = ApiLog(platform.ledger, platform.logplex)  # app[api] lines from the ledger
    api_log.start()
    from waka.router.follower import RouteFollower

    route_follower = RouteFollower(platform.ledger, platform.routes)  # renames route at once
    route_follower.start()
    platform.drains.start()
    from waka.reactors.webhooks import WebhookReactor

    webhooks = WebhookReactor(platform.ledger, platform.store)  # app webhooks, from the ledger
    webhooks.start()
    rendezvousing = asyncio.create_task(rendezvous.serve_forever())
    recovering = asyncio.create_task(asyncio.to_thread(run.recover, platform))  # old one-offs
    follower = asyncio.create_task(follow_ledger())
    building = asyncio.create_task(asyncio.to_thread(build_forever))
    manager = platform.dyno_manager
    manager.dyno_events = webhooks.dyno_changed  # `dyno` webhooks: observed, not ledger
    print(f"waka: dynos run as {manager.dynos.kind}", flush=True)
    # Add-on URLs carry this address: a wrong one (a fresh engine's bridge) broke them all.
    print(f"waka: dynos reach this host's services at {platform.addons_host}", flush=True)
    # Add-ons: made and removed by their providers; their servers outlive a stop of waka.
    addon_manager = platform.addon_manager
    for line in addon_summary(platform):
        print(f"waka: {line}", flush=True)
    provisioning = asyncio.create_task(asyncio.to_thread(addon_manager.run_forever, stop.is_set))

    async def wake(app_id: str) -> None:
        """A request for a sleeping app: start its dynos; return once one is routed."""
        manager.wake(app_id)
        while not ((route := platform.routes.get(app_id)) and route.backends):
            await asyncio.sleep(0.05)

    router = Router(
        platform.routes,
        log=lambda app_id, line: platform.logplex.emit(app_id, "heroku", "router", line),
        wake=wake,
    )
    manager.last_request = router.last_request.get
    from waka.router.tls import RouterTlsError, router_tls

    settings = platform.settings
    try:
        tls, certificates = router_tls(platform)  # (None, None) with --router-tls-port 0
    except RouterTlsError as error:
        print(f"waka: cannot serve apps over HTTPS: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    from waka.adapters.acme import AcmeClient, Challenges
    from waka.reactors.acm import CertificateManager

    router.challenges = Challenges()  # HTTP-01 answers: ACM's orders, validated via the router
    acme = AcmeClient(
        settings.acme_directory,
        settings.home,
        router.challenges,
        settings.acme_ca_file,
        settings.acme_email,
    )
    certificate_manager = CertificateManager(
        platform.ledger, platform.store, platform.projector.catch_up, acme
    )
    certificate_manager.start()
    routing = asyncio.create_task(
        router.serve(host, settings.router_port, settings.router_tls_port, tls)
    )
    managing = asyncio.create_task(asyncio.to_thread(manager.run_forever, stop.is_set))
    plain_host = "localhost" if tls_binds and not is_loopback(host) else host
    print(f"waka: API on http://{plain_host}:{platform.settings.api_port}", flush=True)
    if tls_binds and certificate:
        trust = f"; trust {certificate.ca_file}" if certificate.ca_file else ""
        print(
            f"waka: API and git over HTTPS on {platform.settings.api_tls_url}"
            f" (certificate from {certificate.issuer}{trust})",
            flush=True,
        )
    print(f"waka: router on http://<app>.{host}:{platform.settings.router_port}", flush=True)
    if tls is not None:
        print(f"waka: router on https://<app>.{host}:{settings.router_tls_port}", flush=True)
    ca = platform.settings.home / "tls" / "ca.pem"
    print(f"waka: heroku run on port {rendezvous.port}; NODE_EXTRA_CA_CERTS={ca}", flush=True)
    await serve(create_api(platform, rendezvous), config, shutdown_trigger=stop.wait)
    stop.set()
    platform.builder.wakeup.set()
    routing.cancel()
    rendezvousing.cancel()  # ends attached one-offs: their users are cut off anyway
    with contextlib.suppress(asyncio.CancelledError):
        await rendezvousing
    await recovering
    api_log.stop()
    route_follower.stop()
    if certificates is not None:
        certificates.stop()
    certificate_manager.stop()
    platform.drains.stop()
    webhooks.stop()
    await follower
    await building
    platform.wake_dyno_manager()
    platform.wake_addon_manager()
    await provisioning
    await managing
    manager.dynos.shutdown()


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


def _unbindable(bind: str) -> str | None:
    """Why the API could not listen on `bind` ("host:port" or "[v6]:port"), or None."""
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} is already in use (is another waka running?)"
            return error.strerror or str(error)
    return None


def _plain_api_binds(host: str, port: int, *, tls: bool) -> list[str]:
    """Beside HTTPS, plain HTTP listens on loopback only: keys must not cross a network in
    clear. Without TLS (`--api-tls-port 0`) it listens where it is told, as before."""
    return _binds(host if not tls or is_loopback(host) else "localhost", port)


def _binds(host: str, port: int) -> list[str]:
    """`localhost` means both loopback families: clients may resolve it to ::1 or 127.0.0.1."""
    if host != "localhost":
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    binds = [f"127.0.0.1:{port}"]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
            binds.append(f"[::1]:{port}")
        except OSError:
            pass
    return binds


_COMMANDS = {
    "up": cmd_up,
    "users:create": cmd_users_create,
    "users:regenerate-key": cmd_users_regenerate,
    "users:password": cmd_users_password,
    "audit": cmd_audit,
    "teams:create": cmd_teams_create,
    "projections": cmd_projections,
    "cipher-key": cmd_cipher_key,
    "stack": cmd_stack,
}

if __name__ == "__main__":
    sys.exit(main())
