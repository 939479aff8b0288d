"""Pending rendezvous sessions: a secret in an attach URL → the one-off dyno it may attach to.

A secret is good for one connection. A session nobody claims within the time to live is
dropped and its dyno discarded (the user's CLI never came), as Heroku does with a one-off
whose rendezvous nobody attends.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

TTL = 300.0  # seconds a session waits for its CLI


class Attachable(Protocol):
    """What the rendezvous server needs of a one-off dyno (waka/adapters/one_off.py:OneOff)."""

    @property
    def name(self) -> str: ...

    @property
    def tty(self) -> bool: ...

    def attach(self) -> socket.socket:
        """The process's stdio as a stream socket; before start()."""
        ...

    def decoder(self) -> Callable[[bytes], bytes]:
        """Turns the attached socket's bytes into the output the user sees."""
        ...

    def start(self) -> None: ...

    def kill(self) -> None: ...

    def finish(self) -> int | None:
        """Wait for the process to end and clean up; its exit status."""
        ...

    def discard(self) -> None:
        """Remove it without running it."""
        ...


@dataclass
class Session:
    dyno: Attachable
    expires: float = field(default_factory=lambda: time.monotonic() + TTL)


def _digest(secret: str) -> bytes:
    # Looked up by digest, so the lookup's timing tells nothing about the secrets held.
    return hashlib.sha256(secret.encode()).digest()


class Sessions:
    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._pending: dict[bytes, Session] = {}
        self._lock = threading.Lock()  # the API adds from worker threads; the server claims

    def add(self, dyno: Attachable) -> str:
        """Hold `dyno` for the CLI; the secret to put in its attach URL."""
        secret = secrets.token_urlsafe(32)
        with self._lock:
            self._pending[_digest(secret)] = Session(dyno, self.clock() + self.ttl)
        return secret

    def claim(self, secret: str) -> Session | None:
        """The session of this secret, once; None if unknown, used or expired."""
        key = _digest(secret)
        with self._lock:
            session = self._pending.get(key)
            if session is None or session.expires < self.clock():
                return None  # an expired one stays for expired(), which cleans it up
            return self._pending.pop(key)

    def expired(self) -> list[Session]:
        """Take out the sessions past their time; the caller discards their dynos."""
        now = self.clock()
        with self._lock:
            gone = [k for k, s in self._pending.items() if s.expires < now]
            return [self._pending.pop(k) for k in gone]

    def drain(self) -> list[Session]:
        """Take out every pending session (waka is stopping)."""
        with self._lock:
            sessions = list(self._pending.values())
            self._pending.clear()
        return sessions

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
