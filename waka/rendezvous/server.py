"""The rendezvous server: where `heroku run` meets its one-off dyno.

The protocol is the Heroku CLI's (lib/run/dyno.js): the CLI opens TLS to the host and port of
a `rendezvous://host:port/SECRET` attach URL, verifying the certificate against that host,
and writes `SECRET\\r\\n`. It discards the first chunk it receives (the handshake), then pipes
its stdin to the connection and the connection to its stdout, raw, until the server closes.

Here: read the secret, claim its session, send the handshake, attach to the dyno's stdio,
start it, and copy bytes both ways. The connection closes when the process has exited and all
its output is sent; a user who goes away (Ctrl-C) takes the process with them. Without a TTY
the CLI marks the end of its input with a lone ^D (0x04): that closes the process's stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Iterable

from waka.rendezvous.sessions import Attachable, Sessions

log = logging.getLogger("waka.rendezvous")

HANDSHAKE = b"rendezvous\r\n"
END_OF_INPUT = b"\x04"
SECRET_TIMEOUT = 30.0  # seconds a connection may take to say which session it wants
REAP_INTERVAL = 5.0
CHUNK = 65536
NO_SESSION = (
    b"waka: this one-off dyno's attach URL is unknown, used or expired; run the command again.\r\n"
)
_NO_ADDRESS = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


class RendezvousServer:
    def __init__(
        self, sessions: Sessions, tls: ssl.SSLContext, public_host: str = "localhost"
    ) -> None:
        self.sessions = sessions
        self.tls = tls
        self.public_host = public_host  # must be a name in the server certificate
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._attached: set[Attachable] = set()
        self._reaper: asyncio.Task[None] | None = None

    def attach_url(self, secret: str) -> str:
        return f"rendezvous://{self.public_host}:{self.port}/{secret}"

    async def start(self, hosts: Iterable[str] = ("127.0.0.1", "::1"), port: int = 0) -> None:
        """Listen on every host, all on one port (the first host's, when `port` is 0); a
        host other than the first whose address family is missing here is skipped."""
        for index, host in enumerate(hosts):
            try:
                server = await asyncio.start_server(
                    self._handle,
                    host,
                    port or self.port,
                    ssl=self.tls,
                    ssl_handshake_timeout=SECRET_TIMEOUT,
                )
            except OSError as error:
                if index and error.errno in _NO_ADDRESS:
                    continue
                for started in self._servers:
                    started.close()
                self._servers.clear()
                self.port = 0
                raise
            self._servers.append(server)
            if not self.port:
                # Seen once under uvloop with two servers racing for one port: no sockets.
                # Treat it as a taken port, so the caller falls back to any free one.
                sockets = server.sockets or ()
                if not sockets:
                    for started in self._servers:
                        started.close()
                    self._servers.clear()
                    raise OSError(errno.EADDRINUSE, f"could not listen on {host}:{port}")
                self.port = sockets[0].getsockname()[1]
        self._reaper = asyncio.create_task(self._reap_forever())

    async def serve_forever(self) -> None:
        """For a task of `waka up`: runs until cancelled, then closes."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening; end attached dynos (their users are cut off) and pending ones."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self._reaper is not None:
            self._reaper.cancel()
        for dyno in list(self._attached):
            await asyncio.to_thread(dyno.kill)
        for session in self.sessions.drain():
            await asyncio.to_thread(session.dyno.discard)
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)

    # --- one connection ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), SECRET_TIMEOUT)
            except (TimeoutError, ValueError, OSError, ssl.SSLError):
                return
            secret = line.decode("ascii", "replace").strip()
            session = self.sessions.claim(secret) if secret else None
            writer.write(HANDSHAKE)
            if session is None:
                writer.write(NO_SESSION)
                await writer.drain()
                return
            await writer.drain()
            await self._bridge(session.dyno, reader, writer)
        except (OSError, ssl.SSLError) as error:
            log.debug("rendezvous connection ended: %s", error)
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _bridge(
        self, dyno: Attachable, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._attached.add(dyno)
        try:
            sock: socket.socket | None = None
            dyno_writer: asyncio.StreamWriter | None = None
            try:
                sock = await asyncio.to_thread(dyno.attach)
                dyno_reader, dyno_writer = await asyncio.open_connection(sock=sock)
                await asyncio.to_thread(dyno.start)
            except Exception as error:
                log.warning("one-off dyno %s did not start: %s", dyno.name, error)
                if dyno_writer is not None:
                    dyno_writer.close()
                elif sock is not None:
                    sock.close()
                writer.write(f"waka: could not start {dyno.name}: {error}\r\n".encode())
                await asyncio.to_thread(dyno.discard)
                return
            stdin = asyncio.create_task(self._input(dyno, reader, dyno_writer))
            try:
                await self._output(dyno, dyno_reader, writer)
            finally:
                stdin.cancel()
                dyno_writer.close()
                self._attached.discard(dyno)  # its process has ended: nothing left to kill
                await _close(writer)  # the CLI ends when we close: before the clean-up
                await asyncio.to_thread(dyno.finish)
        finally:
            self._attached.discard(dyno)

    async def _output(
        self, dyno: Attachable, dyno_reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The process's output to the user until it ends (Docker closes the stream)."""
        decode = dyno.decoder()
        user_gone = False
        while data := await dyno_reader.read(CHUNK):
            out = decode(data)
            if out and not user_gone:
                try:
                    writer.write(out)
                    await writer.drain()
                except (OSError, ssl.SSLError):
                    user_gone = True  # keep reading: the stream ends once the kill lands
                    await asyncio.to_thread(dyno.kill)

    async def _input(
        self, dyno: Attachable, reader: asyncio.StreamReader, dyno_writer: asyncio.StreamWriter
    ) -> None:
        """The user's input to the process; when the user goes away, the process ends."""
        stdin_open = True
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(CHUNK):
                if not stdin_open:
                    continue
                ended = not dyno.tty and data.endswith(END_OF_INPUT)
                try:
                    dyno_writer.write(data[:-1] if ended else data)
                    if ended:
                        dyno_writer.write_eof()  # Docker closes the process's stdin
                        stdin_open = False
                    await dyno_writer.drain()
                except (OSError, RuntimeError):  # the process ended or closed its stdin
                    stdin_open = False
        await asyncio.to_thread(dyno.kill)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            for session in self.sessions.expired():
                log.info("nobody attached to %s in time; discarding it", session.dyno.name)
                await asyncio.to_thread(session.dyno.discard)


async def _close(writer: asyncio.StreamWriter) -> None:
    if writer.is_closing():
        return
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)
