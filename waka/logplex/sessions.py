"""Log sessions: what `POST /apps/:app/log-sessions` asked for, behind an unguessable token.

The Heroku CLI opens the session's `logplex_url` without credentials, so the URL itself is
the permission, as Heroku's is. Sessions live in memory for a few minutes after their last
use; a reconnecting `--tail` within that time resumes, later it gets a 404.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

TTL = 300.0  # seconds
MAX_SESSIONS = 10_000  # bounds the memory an API key holder can make us spend


@dataclass
class LogSession:
    app_id: str
    lines: int
    source: str | None
    dyno: str | None
    tail: bool
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # 256 bits
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires: float = 0.0


class LogSessions:
    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: dict[str, LogSession] = {}
        self._lock = threading.Lock()

    def open(
        self, app_id: str, lines: int, source: str | None, dyno: str | None, tail: bool
    ) -> LogSession:
        session = LogSession(app_id=app_id, lines=lines, source=source, dyno=dyno, tail=tail)
        with self._lock:
            now = self._clock()
            session.expires = now + self.ttl
            self._prune(now)
            self._sessions[session.token] = session
        return session

    def get(self, token: str) -> LogSession | None:
        """The live session for `token`, its lifetime renewed; None if unknown or expired."""
        with self._lock:
            now = self._clock()
            session = self._sessions.get(token)
            if session is None or session.expires <= now:
                self._sessions.pop(token, None)
                return None
            session.expires = now + self.ttl
            return session

    def _prune(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
        while len(self._sessions) >= MAX_SESSIONS:  # oldest first: dicts keep insertion order
            del self._sessions[next(iter(self._sessions))]
