"""Logplex: every app's log lines in one time-ordered stream, read by `heroku logs` over
Server-Sent Events and forwarded to log drains."""

from waka.logplex.lines import LogLine
from waka.logplex.logplex import BUFFER_LINES, Logplex
from waka.logplex.subscription import Subscription

__all__ = ["BUFFER_LINES", "LogLine", "Logplex", "Subscription"]
