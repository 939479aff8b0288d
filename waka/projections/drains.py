"""The log drains read model: each app's drains, in the order they were added, for the
drains API and the forwarder. A drain's URL often carries credentials (a user and password, a
token in the path or query), so it is sealed like a config var's value when the platform has a
cipher key; the readers below open it."""

from __future__ import annotations

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.sealing import Sealer
from waka.projections.store import Cursor, ReadStore, Row


class DrainsProjection(Projection):
    name = "drains"
    tables = {
        "waka_drains": """CREATE TABLE IF NOT EXISTS waka_drains (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, url TEXT NOT NULL, sealed INTEGER NOT NULL,
            token TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            seq BIGINT NOT NULL)""",
    }

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()

    def added(self, cur: Cursor, e: App.DrainAdded) -> None:
        at = iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_drains (id, app_id, url, sealed, token, created_at, updated_at, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM waka_drains))"
            " ON CONFLICT (id) DO NOTHING",
            (
                e.drain_id,
                str(e.originator_id),
                self.sealer.seal(e.url),
                int(self.sealer.enabled),
                e.token,
                at,
                at,
            ),
        )

    def removed(self, cur: Cursor, e: App.DrainRemoved) -> None:
        cur.execute("DELETE FROM waka_drains WHERE id = ?", (e.drain_id,))

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_drains WHERE app_id = ?", (str(e.originator_id),))

    handlers = {
        App.DrainAdded: added,
        App.DrainRemoved: removed,
        App.Destroyed: destroyed,
    }


def _opened(store: ReadStore, rows: list[Row]) -> list[Row]:
    return [{**row, "url": store.sealer.open(row["url"])} if row["sealed"] else row for row in rows]


def drains_of(store: ReadStore, app_id: str) -> list[Row]:
    rows = store.query("SELECT * FROM waka_drains WHERE app_id = ? ORDER BY seq", (app_id,))
    return _opened(store, rows)


def find_drain(store: ReadStore, app_id: str, ident: str) -> Row | None:
    """By id, URL or token, as Heroku's drain identity allows (a sealed URL is found by
    sealing `ident` the same way: sealing is deterministic)."""
    sealed = store.sealer.seal(ident)
    rows = store.query(
        "SELECT * FROM waka_drains"
        " WHERE app_id = ? AND (id = ? OR url = ? OR url = ? OR token = ?)",
        (app_id, ident, ident, sealed, ident),
    )
    return _opened(store, rows)[0] if rows else None


def all_drains(store: ReadStore) -> list[Row]:
    return _opened(store, store.query("SELECT * FROM waka_drains ORDER BY seq"))
