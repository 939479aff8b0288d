"""Bodies and tunnels that outlast one callback: coroutines moving bytes with back-pressure.

Each raises Failed(H18) when the dyno stops in the middle of a response and ClientGone when
the client does; the router turns those into its log line.
"""

from __future__ import annotations

import asyncio
import contextlib

from waka.router.conn import ClientGone, Closed, Conn
from waka.router.http import CHUNKED, BadMessage, ChunkedScanner, Request
from waka.router.logline import H18, Code

LINGER = 2.0  # seconds to read and drop a client's unread body before closing (see linger)


class Failed(Exception):
    """The exchange ends with a router error."""

    def __init__(self, code: Code) -> None:
        super().__init__(code.code)
        self.code = code


class BadBody(Exception):
    """The client's chunked body broke its framing while being uploaded (H26)."""


class Sent:
    """Counts the response bytes written to the client, for the log line."""

    __slots__ = ("sent",)

    def __init__(self, sent: int = 0) -> None:
        self.sent = sent


async def upload(client: Conn, conn: Conn, left: int | ChunkedScanner) -> bool:
    """Stream the rest of a request body from the client to the dyno; True once all went."""
    try:
        scanner = left if isinstance(left, ChunkedScanner) else None
        while True:
            buf = client.buf
            if buf:
                if scanner is None:
                    data = client.take(left)  # type: ignore[arg-type]
                    left -= len(data)  # type: ignore[operator]
                else:
                    try:
                        data = client.take(scanner.scan(buf, []))
                    except BadMessage:
                        conn.interrupt(BadBody())  # the exchange waits on the dyno: end it
                        return False
                conn.transport.write(data)
                if scanner.done if scanner is not None else not left:
                    return True
                if conn.write_paused:
                    await conn.drain()
            if client.eof:
                return False
            await client.more()
    except Exception:  # client gone, dyno gone or timed out: the exchange itself tells which
        return False


async def body(
    conn: Conn, client: Conn, count: Sent, length: int, decode: bool, rechunk: bool
) -> None:
    """Relay a response body as it arrives: `length` bytes, or CHUNKED (its framing kept, or
    removed for an HTTP/1.0 client), or until the dyno closes (framed as chunks when
    `rechunk`, so that the client's connection can stay open)."""
    try:
        if length >= 0:
            await _copy_length(conn, client, count, length)
        elif length == CHUNKED:
            await _copy_chunked(conn, client, count, decode)
        else:
            await _copy_until_close(conn, client, count, rechunk)
    except BadMessage:
        raise Failed(H18) from None


async def _copy_length(conn: Conn, client: Conn, count: Sent, left: int) -> None:
    while left:
        if conn.buf:
            data = conn.take(left)
            left -= len(data)
            _to_client(client, count, data)
            if client.write_paused:
                await client.drain()
        elif conn.eof:
            raise Failed(H18)
        else:
            await conn.more()


async def _copy_chunked(conn: Conn, client: Conn, count: Sent, decode: bool) -> None:
    scanner = ChunkedScanner(decode=decode)
    payload: list[bytes] = []
    while True:
        if conn.buf:
            data = conn.take(scanner.scan(conn.buf, payload))
            if decode:
                data = b"".join(payload)
                payload.clear()
            if data:
                _to_client(client, count, data)
            if scanner.done:
                return
            if client.write_paused:
                await client.drain()
        if conn.eof:
            raise Failed(H18)
        await conn.more()


async def _copy_until_close(conn: Conn, client: Conn, count: Sent, rechunk: bool) -> None:
    while True:
        if conn.buf:
            data = conn.take(len(conn.buf))
            if rechunk:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            _to_client(client, count, data)
            if client.write_paused:
                await client.drain()
        if conn.eof:
            if rechunk:
                _to_client(client, count, b"0\r\n\r\n")
            return
        await conn.more()


def _to_client(client: Conn, count: Sent, data: bytes | bytearray) -> None:
    if client.eof:
        raise ClientGone()
    client.transport.write(data)
    count.sent += len(data)


def skip_body(client: Conn, req: Request) -> bool:
    """Drop a request body that has arrived whole; False when it has not."""
    if req.body == 0:
        return True
    buf = client.buf
    if req.body > 0:
        if len(buf) < req.body:
            return False
        del buf[: req.body]
        return True
    scanner = ChunkedScanner()
    try:
        end = scanner.scan(buf, [])
    except BadMessage:
        return False
    if scanner.done:
        del buf[:end]
    return scanner.done


async def linger(client: Conn) -> None:
    """Close after reading what the client still sends, for a little while: closing a socket
    with unread data sends a reset that can destroy the response on its way (nginx's
    lingering_close)."""
    with contextlib.suppress(Exception):
        if client.transport.can_write_eof():
            client.transport.write_eof()
        async with asyncio.timeout(LINGER):
            while not client.eof:
                client.buf.clear()
                await client.more()
    client.close()


async def pipe(src: Conn, dst: Conn) -> None:
    """One direction of a tunnel; closing both ends when it ends stops the other direction."""
    try:
        while True:
            if src.buf:
                dst.transport.write(src.take(len(src.buf)))
                if dst.write_paused:
                    await dst.drain()
            if src.eof:
                return
            await src.more()
    except (Closed, ClientGone, ConnectionError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()
            src.close()
