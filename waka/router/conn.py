"""One TCP connection as the proxy uses it: a buffer, read by callbacks or by a coroutine.

A bare asyncio.Protocol rather than StreamReader/StreamWriter. The router's common request is
handled entirely in callbacks (`on_data`, `on_lost`: no task wakes up, see proxy.py); anything
longer (connecting, streaming a body, a WebSocket) runs in a coroutine that waits with `more()`
and `drain()`, which callbacks (client gone, first-byte timeout) can interrupt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

HIGH_WATER = 256 * 1024  # stop reading from a peer that sends faster than the other side takes


class Closed(Exception):
    """The connection went away while the proxy still needed it."""


class ClientGone(Exception):
    """The client closed its connection before its response was complete (H27)."""


class Conn(asyncio.Protocol):
    __slots__ = (
        "_drain_waiter",
        "_loop",
        "_read_paused",
        "_waiter",
        "_write_paused",
        "buf",
        "deadline",
        "eof",
        "error",
        "exchange",
        "idle_since",
        "linger",
        "on_data",
        "on_lost",
        "on_made",
        "peer",
        "task",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.buf = bytearray()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.eof = False  # the peer will send nothing more (FIN, reset or closed by us)
        self.error: BaseException | None = None  # raised by the next wait: see interrupt()
        self.on_made: Callable[[Conn], None] | None = None
        self.on_data: Callable[[Conn], None] | None = None  # called when no coroutine waits
        self.on_lost: Callable[[Conn], None] | None = None
        # The router's state of the connection (see proxy.py):
        self.exchange: Any = None  # the request it carries while callbacks handle it
        self.task: asyncio.Task[None] | None = None  # a client's coroutine, while one runs
        self.peer: Conn | None = None  # a client's dyno connection while a request is in flight
        self.deadline = 0.0  # a dyno connection's first-byte deadline (monotonic), 0 for none
        self.idle_since: float | None = None  # set while waiting for a request or in the pool
        self.linger = False  # close it gently: the client may still be sending (see proxy.py)
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self._write_paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self.on_data is not None:
            self.on_data(self)

    def eof_received(self) -> bool:
        # A FIN from a client while its request is in flight is taken as the client leaving
        # (nginx does the same; H27): returning False closes the transport, connection_lost
        # follows and does the rest.
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(Closed())
        if self.on_lost is not None:
            self.on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- for the proxy ------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def more(self) -> None:
        """Wait until more data, EOF, or an interruption (raised here) arrives."""
        if self.error is not None:
            raise self.error
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        if self.eof:
            return
        waiter = self._waiter = self._loop.create_future()
        await waiter
        if self.error is not None:
            raise self.error

    def take(self, n: int) -> bytes | bytearray:
        """The first n bytes of the buffer, removed. Past the end, the whole buffer object is
        handed over (no copy) and a new one started, so the transport may keep it."""
        buf = self.buf
        if n >= len(buf):
            self.buf = bytearray()
            if self._read_paused:
                self._read_paused = False
                self.transport.resume_reading()
            return buf
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def consumed(self) -> None:
        """Callbacks took what they could from the buffer: read again if reading was paused."""
        if self._read_paused and len(self.buf) < HIGH_WATER:
            self._read_paused = False
            self.transport.resume_reading()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self.error is not None:
            raise self.error
        if self.transport.is_closing():
            raise Closed()
        if not self._write_paused:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None
        if self.error is not None:
            raise self.error

    def interrupt(self, error: BaseException) -> None:
        """Make the current and any later wait on this connection raise `error`."""
        self.error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(error)

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent data and all (a dyno connection in a bad state)."""
        if self.transport is not None:
            self.transport.abort()
