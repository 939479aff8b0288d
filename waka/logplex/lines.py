"""One log line, in Heroku's format, and the rules that pick lines out of an app's stream."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

SOURCES = ("app", "heroku")
MAX_LINE = 10_000  # characters; Logplex splits longer lines rather than dropping them

_BREAK = re.compile(r"\r\n|\r|\n")  # only what SSE and syslog framing treat as line breaks


class LogLine(NamedTuple):
    """Immutable, and a NamedTuple because emit() makes one per line: a frozen dataclass
    costs five times as much to build."""

    app_id: str
    at: datetime  # aware, UTC
    source: str  # "app" or "heroku"
    dyno: str  # "web.1", "router", "api", "run.4821", ...
    message: str
    seq: int  # arrival order within the app's stream, from 1; the SSE event id

    def format(self) -> str:
        """`2026-11-26T15:04:05.123456+00:00 app[web.1]: message`, as `heroku logs` prints."""
        return f"{self.at.isoformat(timespec='microseconds')} {self.source}[{self.dyno}]: " + (
            self.message
        )


def matches(line: LogLine, source: str | None, dyno: str | None) -> bool:
    """Heroku's filters: `source` is exact; `dyno` is a dyno name (web.1) or a process type
    (web matches web.1 and web.2, run matches run.4821)."""
    if source is not None and line.source != source:
        return False
    if dyno is None:
        return True
    name = line.dyno
    return name == dyno or (name.startswith(dyno) and name[len(dyno) : len(dyno) + 1] == ".")


def split_message(message: str) -> list[str]:
    """A message's lines: one per line break (a trailing break ends a line, it does not start
    an empty one), each at most MAX_LINE characters."""
    if len(message) <= MAX_LINE and "\n" not in message and "\r" not in message:
        return [message]  # nearly every line: skip the regex
    # Newlines only (the router's batches, most output): str.split, ~100x cheaper than the regex
    parts = message.split("\n") if "\r" not in message else _BREAK.split(message)
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if all(len(p) <= MAX_LINE for p in parts):
        return parts
    return [p[i : i + MAX_LINE] for p in parts for i in range(0, max(len(p), 1), MAX_LINE)]


def utc(at: datetime | None) -> datetime:
    """Naive times are taken as UTC, as the ledger and Docker give them."""
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
