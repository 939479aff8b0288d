"""`waka`: the operator's command line. Start the platform, manage users, read the audit log."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from waka.config import Settings, is_loopback
from waka.roles import ALL, API, ROUTER, WORKER, Listen, say, serve

if TYPE_CHECKING:
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

    api = commands.add_parser(
        "api", help="serve the Platform API and git (one of several copies; on PostgreSQL)"
    )
    api.add_argument("--port", dest="api_port", type=int, default=None, help="API port (5000)")
    api.add_argument(
        "--tls-port", dest="api_tls_port", type=int, default=None, help="HTTPS port (5443; 0: none)"
    )
    api.add_argument("--host", default="localhost", help="address to listen on (localhost)")
    api.add_argument("--rendezvous-port", type=int, default=None, help="`heroku run` TLS port")
    router = commands.add_parser(
        "router", help="route apps' traffic (one of several copies; on PostgreSQL)"
    )
    router.add_argument("--port", dest="router_port", type=int, default=None, help="port (8080)")
    router.add_argument(
        "--tls-port", dest="router_tls_port", type=int, default=None, help="HTTPS (8443; 0: none)"
    )
    router.add_argument("--host", default="localhost", help="address to listen on (localhost)")
    commands.add_parser(
        "worker",
        help="build, run dynos, provision add-ons (one of several copies; on PostgreSQL)",
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
    from waka.adapters.swarm_dynos import SwarmUnavailable

    # The stores, keys and state files made here are waka's user's alone.
    args.operator_umask = os.umask(PRIVATE_UMASK)
    try:
        return _COMMANDS[args.command](args)
    except (CipherKeyError, SwarmUnavailable) as error:
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
    return _serve_roles(args, ALL)


def cmd_api(args: argparse.Namespace) -> int:
    return _serve_roles(args, frozenset({API}))


def cmd_router(args: argparse.Namespace) -> int:
    return _serve_roles(args, frozenset({ROUTER}))


def cmd_worker(args: argparse.Namespace) -> int:
    return _serve_roles(args, frozenset({WORKER}))


def _serve_roles(args: argparse.Namespace, roles: frozenset[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(args)
    if roles != ALL and not settings.database_url:
        print(
            "waka: the roles of separate processes share one PostgreSQL: set "
            "WAKA_DATABASE_URL (or run everything in one process with `waka up`)",
            file=sys.stderr,
        )
        return 1
    if roles != ALL and not settings.redis_url:
        print(
            "waka: warning: WAKA_REDIS_URL is not set, so each process keeps its own logs: "
            "`heroku logs` shows only the lines of the API process it reaches",
            file=sys.stderr,
        )
    host = getattr(args, "host", "localhost")
    listen = Listen(host=host, rendezvous_port=getattr(args, "rendezvous_port", None))
    binds: list[str] = []
    if API in roles:
        if settings.api_tls_port:
            listen.tls_binds = _binds(host, settings.api_tls_port)
        listen.api_binds = _plain_api_binds(host, settings.api_port, tls=bool(listen.tls_binds))
        binds += [*listen.api_binds, *listen.tls_binds]
    if ROUTER in roles and roles == ALL:  # router copies share their port (SO_REUSEPORT)
        binds += _binds(host, settings.router_port)
        if settings.router_tls_port:
            binds += _binds(host, settings.router_tls_port)
    listeners = [(n, p) for n, p in _listeners(settings, roles, listen.rendezvous_port) if p]
    ports = [p for _, p in listeners]
    twice = next((p for p in ports if ports.count(p) > 1), None)
    if twice:
        names = " and ".join(n for n, p in listeners if p == twice)
        print(f"waka: {names} are both port {twice}: each needs its own", file=sys.stderr)
        return 1
    for bind in binds:
        problem = _unbindable(bind)
        if problem:
            print(f"waka: cannot listen on {bind}: {problem}", file=sys.stderr)
            return 1
    if listen.tls_binds:
        from waka.api.tls import TlsSetupError, api_certificate

        try:
            listen.certificate = api_certificate(settings, host)
        except TlsSetupError as error:
            print(f"waka: cannot serve the API over HTTPS: {error}", file=sys.stderr)
            return 1
    platform = _bootstrap(args)
    # The stores and keys are made. From here on, builds and dynos make files that containers
    # read as users other than waka's (slugs): their adapters set those modes, under the umask
    # the operator gave; the home stays 0700 (waka.adapters.private_home).
    os.umask(args.operator_umask)
    where = (settings.database_url and "PostgreSQL") or f"SQLite under {settings.home}"
    say(f"ledger on {where}; roles: {', '.join(sorted(roles))}")
    say(_encryption_status(platform.settings))
    if WORKER in roles:
        if platform.runtime.name == "docker":
            say("builds run in Docker containers of the stack image")
        else:
            say(
                "builds run as processes on this host (no Docker engine or stack image;"
                " see `waka stack build`)"
            )
    from waka.router import eventloop  # uvloop when installed: cheaper per proxied request

    try:
        eventloop.run(serve(platform, roles, listen))
    finally:
        platform.close()
    say("stopped")
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


def _listeners(
    settings: Settings, roles: frozenset[str], rendezvous_port: int | None
) -> list[tuple[str, int]]:
    """This process's listeners and their ports (0: none, or any free one). Two on one port
    would each pass the probe below alone, and the second would fail mid-start."""
    listeners: list[tuple[str, int]] = []
    if API in roles:
        listeners += [("--api-port", settings.api_port), ("--api-tls-port", settings.api_tls_port)]
        listeners.append(("--rendezvous-port", rendezvous_port or 0))
    if ROUTER in roles:
        listeners.append(("--router-port", settings.router_port))
        listeners.append(("--router-tls-port", settings.router_tls_port))
    return listeners


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
    "api": cmd_api,
    "router": cmd_router,
    "worker": cmd_worker,
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
