"""The rendezvous server of `heroku run`: TLS with waka's own CA, secrets that name one-off
dynos, and the bridge between the CLI's terminal and the dyno's stdio."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from waka.rendezvous.ca import TlsFiles, ensure_tls
from waka.rendezvous.server import RendezvousServer
from waka.rendezvous.sessions import Attachable, Session, Sessions

DEFAULT_PORT = 5001

__all__ = [
    "DEFAULT_PORT",
    "Attachable",
    "RendezvousServer",
    "Session",
    "Sessions",
    "TlsFiles",
    "ensure_tls",
    "listen_hosts",
    "rendezvous_server",
    "start_rendezvous",
]


def rendezvous_server(home: Path, public_host: str = "localhost") -> RendezvousServer:
    """A server with the certificate under `home/tls` (made on first use); `public_host` is
    the host in attach URLs and must be a name in that certificate."""
    tls = ensure_tls(home, hosts=[public_host])
    return RendezvousServer(Sessions(), tls.server_context(), public_host)


def listen_hosts(host: str) -> list[str]:
    """`localhost` means both loopback families: a client may resolve it to either."""
    if host != "localhost":
        return [host]
    return ["127.0.0.1", "::1"] if socket.has_ipv6 else ["127.0.0.1"]


async def start_rendezvous(
    home: Path, host: str, port: int | None, public_host: str = "localhost"
) -> RendezvousServer:
    """The server of `waka up`, listening. `port` None means DEFAULT_PORT, or any free port
    when that one is taken (attach URLs carry the port, so clients need not know it); a port
    asked for explicitly must be free."""
    server = rendezvous_server(home, public_host)
    try:
        await server.start(listen_hosts(host), DEFAULT_PORT if port is None else port)
    except OSError as error:
        if port is not None or error.errno != errno.EADDRINUSE:
            raise
        await server.start(listen_hosts(host), 0)
    return server
