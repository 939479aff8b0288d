"""Reading the ledger's notification log: the one reader every follower of the ledger uses
(projector, API log, audit, webhooks, route follower, ACM's and the builder's followers).

Notifications carry one global order (their id). A follower keeps the id it has read up to
and asks for what came after; events whose topics it does not watch are not decoded (decoding
means decrypting and decompressing), so a follower of a few topics reads the log cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

BATCH = 500


class Notice(NamedTuple):
    id: int  # the notification id: the follower's position once handled
    topic: str
    event: Any  # the domain event; None when its topic was not asked for


def read_batch(
    ledger: Any, after: int, topics: frozenset[str] | None = None, limit: int = BATCH
) -> list[Notice]:
    """Up to `limit` notifications after position `after`, oldest first."""
    notifications = ledger.recorder.select_notifications(
        start=after, limit=limit, inclusive_of_start=False
    )
    return notices(ledger, notifications, topics)


def notices(
    ledger: Any, notifications: Iterable[Any], topics: frozenset[str] | None = None
) -> list[Notice]:
    """Notifications however they were fetched (the projector reads them on its read store's
    connection, in its own transaction) as Notices: decoded only when their topic is asked."""
    return [
        Notice(
            n.id,
            n.topic,
            ledger.mapper.to_domain_event(n) if topics is None or n.topic in topics else None,
        )
        for n in notifications
    ]


def follow(ledger: Any, after: int, topics: frozenset[str] | None = None) -> Iterator[Notice]:
    """Every notification after `after`, batch by batch, until the newest."""
    while True:
        batch = read_batch(ledger, after, topics)
        yield from batch
        if len(batch) < BATCH:
            return
        after = batch[-1].id


def newest(ledger: Any) -> int:
    return ledger.recorder.max_notification_id() or 0
