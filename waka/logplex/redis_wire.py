"""How Logplex's lines are kept in Redis: key names, one entry's encoding, and SSE ids.

Each app's lines are one stream, `logplex:app:<app id>`; an entry has one field, `l`, holding
`<microseconds since the epoch>\\t<source>\\t<dyno>\\t<message>` (one field rather than four
halves Redis's work and memory per line). Its entry id (`<ms>-<n>`, given by Redis on arrival)
is the line's place in the stream; as the line's `seq` (the SSE event id a `--tail` resumes
after) it is `ms * 1,000,000 + n`, a number as the in-memory Logplex's is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from waka.logplex.lines import LogLine, utc

APP_KEY = "logplex:app:"  # + app id: the app's stream (buffer and tail source)
FORGOTTEN_KEY = "logplex:forgotten"  # app ids destroyed: followers end their feeds
WAKE_KEY = "logplex:wake:"  # + a process's id: a new feed wakes that process's reader
DRAIN_GROUP = "drains"  # the consumer group of drain forwarders on each drained app's stream
FIELD = "l"  # (also in redis_logplex.APPEND)
SEQ_SCALE = 1_000_000  # entries within one millisecond of one app's stream, at most

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def app_key(app_id: str) -> str:
    return APP_KEY + app_id


def micros(at: datetime) -> int:
    """A moment as whole microseconds since the epoch (exact, no float)."""
    return (utc(at) - _EPOCH) // _MICRO


def encode(at_us: int, source: str, dyno: str, message: str) -> str:
    return f"{at_us}\t{source}\t{dyno}\t{message}"


def decode(app_id: str, entry_id: str, fields: dict[str, str]) -> LogLine | None:
    """The line an entry holds; None for an entry waka did not write."""
    try:
        at_us, source, dyno, message = fields[FIELD].split("\t", 3)
        at = _EPOCH + timedelta(microseconds=int(at_us))
        return LogLine(app_id, at, source, dyno, message, seq_of(entry_id))
    except (KeyError, ValueError, OverflowError):
        return None


def seq_of(entry_id: str) -> int:
    ms, _, n = entry_id.partition("-")
    return int(ms) * SEQ_SCALE + int(n or 0)


def entry_id(seq: int) -> str:
    ms, n = divmod(max(seq, 0), SEQ_SCALE)
    return f"{ms}-{n}"


def newer(a: str, b: str) -> str:
    """The later of two entry ids."""
    return a if _parts(a) >= _parts(b) else b


def _parts(entry: str) -> tuple[int, int]:
    ms, _, n = entry.partition("-")
    return int(ms), int(n or 0)
