"""The composition root: the one place that wires settings, stores and the ledger together.

Tests build a platform here with their own settings (a temporary home, a PostgreSQL schema);
nothing else constructs stores or the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from waka.config import Settings
from waka.ledger import Ledger
from waka.projections.projector import Projector
from waka.projections.store import PostgresReadStore, ReadStore, SqliteReadStore


@dataclass
class Platform:
    settings: Settings
    ledger: Ledger
    store: ReadStore
    projector: Projector

    def close(self) -> None:
        self.store.close()
        self.ledger.close()


def bootstrap(settings: Settings | None = None) -> Platform:
    settings = settings or Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(env=settings.eventsourcing_env())
    store: ReadStore
    if settings.database_url:
        store = PostgresReadStore(settings.database_url, settings.database_schema)
    else:
        store = SqliteReadStore(settings.home / "projections.sqlite")
    projector = Projector(ledger, store)
    projector.setup()
    projector.catch_up()
    return Platform(settings=settings, ledger=ledger, store=store, projector=projector)
