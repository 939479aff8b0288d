"""The log drains read model: each app's drains, in the order they were added, for the
drains API and the forwarder."""

from __future__ import annotations

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class DrainsProjection(Projection):
    name = "drains"
    tables = {
        "waka_drains": """CREATE TABLE IF NOT EXISTS waka_drains (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, url TEXT NOT NULL, token TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, seq BIGINT NOT NULL)""",
    }

    def added(self, cur: Cursor, e: App.DrainAdded) -> None:
        at = iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_drains (id, app_id, url, token, created_at, updated_at, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM waka_drains))"
            " ON CONFLICT (id) DO NOTHING",
            (e.drain_id, str(e.originator_id), e.url, e.token, at, at),
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


def drains_of(store: ReadStore, app_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_drains WHERE app_id = ? ORDER BY seq", (app_id,))


def find_drain(store: ReadStore, app_id: str, ident: str) -> Row | None:
    """By id, URL or token, as Heroku's drain identity allows."""
    rows = store.query(
        "SELECT * FROM waka_drains WHERE app_id = ? AND (id = ? OR url = ? OR token = ?)",
        (app_id, ident, ident, ident),
    )
    return rows[0] if rows else None


def all_drains(store: ReadStore) -> list[Row]:
    return store.query("SELECT * FROM waka_drains ORDER BY seq")
