"""What every projection is: tables, and a handler per ledger event type it cares about."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from waka.projections.store import Cursor

Handler = Callable[[Any, Cursor, Any], None]


def iso(moment: datetime) -> str:
    """Heroku's timestamp format: UTC, seconds, a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Projection:
    name: ClassVar[str]
    tables: ClassVar[dict[str, str]]  # table name -> CREATE TABLE statement
    handlers: ClassVar[dict[type, Handler]]

    def apply(self, cur: Cursor, event: Any) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(self, cur, event)
