"""Logplex's drain framing: RFC 5424 syslog messages, octet-counted as in RFC 6587.

    83 <190>1 2026-11-26T15:04:05.123456+00:00 host app web.1 - Listening on 5000

HOSTNAME is "host" for HTTPS drains and the drain token for syslog drains, APP-NAME the
source, PROCID the dyno, MSGID "-". Like Logplex, and unlike strict RFC 5424, there is no
STRUCTURED-DATA field: consumers of Heroku drains parse exactly this shape.
"""

from __future__ import annotations

from collections.abc import Iterable

from waka.logplex.lines import LogLine

# Heroku uses the local0/local3/local7 facilities; severity is always info.
PRIORITY = {"app": 190, "heroku": 158}  # local7.info, local3.info


def frame(line: LogLine, hostname: str) -> bytes:
    message = (
        f"<{PRIORITY.get(line.source, 190)}>1 {line.at.isoformat(timespec='microseconds')} "
        f"{hostname} {line.source} {line.dyno} - {line.message}"
    ).encode("utf-8", "replace")
    return b"%d %s" % (len(message), message)


def frames(lines: Iterable[LogLine], hostname: str) -> bytes:
    return b"".join(frame(line, hostname) for line in lines)


def parse_frames(data: bytes) -> list[bytes]:
    """Split octet-counted frames (for tests and tools); raises ValueError on bad framing."""
    found, at = [], 0
    while at < len(data):
        space = data.index(b" ", at)
        length = int(data[at:space])
        start = space + 1
        if start + length > len(data):
            raise ValueError("truncated frame")
        found.append(data[start : start + length])
        at = start + length
    return found
