"""Idle keep-alive connections to dynos, reused across requests (as nginx's `keepalive`).

Reusing a connection saves a TCP handshake and a Python connection setup per request, which is
most of a small request's cost through the router.
"""

from __future__ import annotations

import asyncio

from waka.router.conn import Conn

Key = tuple[str, int]  # (host, port) of a dyno


class ConnectRefused(Exception):
    """Nothing accepts connections at the dyno's address (H21)."""


class ConnectTimeout(Exception):
    """The dyno did not accept the connection in time (H19)."""


class Pool:
    def __init__(self, max_idle: int = 64, idle_timeout: float = 30.0) -> None:
        self.max_idle = max_idle  # per dyno
        # Ours; app servers often close idle connections sooner (Node: 5 s): get() skips those.
        self.idle_timeout = idle_timeout
        self._idle: dict[Key, list[Conn]] = {}

    def get(self, key: Key) -> Conn | None:
        """The most recently used idle connection still open, or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.eof and not conn.buf:  # else closed by the dyno while idle, or it
                return conn  # sent something unasked
            conn.close()
        return None

    def put(self, key: Key, conn: Conn, now: float) -> None:
        """Keep `conn` (its response read to the end) for the next request to that dyno."""
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        elif len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    async def connect(self, key: Key, timeout: float) -> Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: Conn(loop), key[0], key[1])
        except TimeoutError:
            raise ConnectTimeout() from None
        except OSError as error:  # refused, unreachable, reset: nothing serves there
            raise ConnectRefused(str(error)) from None
        return conn

    def prune(self, now: float) -> None:
        """Close connections idle for longer than idle_timeout or closed by their dyno."""
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.eof or conn.closed or now - (conn.idle_since or now) > self.idle_timeout:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
