"""Logplex: every app's log lines in one time-ordered stream, read by `heroku logs` over
Server-Sent Events and forwarded to log drains. In this process's memory, or on Redis when
waka runs as several processes (WAKA_REDIS_URL)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from waka.logplex.lines import LogLine
from waka.logplex.logplex import BUFFER_LINES, Logplex, LogplexUnavailable
from waka.logplex.subscription import Subscription

if TYPE_CHECKING:
    from waka.logplex.redis_logplex import RedisLogplex

__all__ = [
    "BUFFER_LINES",
    "LogLine",
    "Logplex",
    "LogplexUnavailable",
    "Subscription",
    "open_logplex",
]


def open_logplex(redis_url: str | None) -> Logplex | RedisLogplex:
    """Logplex on Redis when a URL is given, else in memory."""
    if not redis_url:
        return Logplex()
    from waka.logplex.redis_logplex import RedisLogplex

    return RedisLogplex(redis_url)
