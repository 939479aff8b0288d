"""The formation read model: quantity and size of each process type of each live app."""

from __future__ import annotations

from waka.domain import rules
from waka.domain.app import App, formation_id
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class FormationProjection(Projection):
    name = "formation"
    tables = {
        "waka_formation": """CREATE TABLE IF NOT EXISTS waka_formation (
            id TEXT NOT NULL, app_id TEXT NOT NULL, type TEXT NOT NULL,
            quantity INTEGER NOT NULL, size TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (app_id, type))""",
    }

    def changed(self, cur: Cursor, e: App.FormationChanged) -> None:
        app_id, at = str(e.originator_id), iso(e.timestamp)
        for update in e.updates:
            cur.execute(
                "INSERT INTO waka_formation (id, app_id, type, quantity, size,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (app_id, type) DO NOTHING",
                (
                    str(formation_id(e.originator_id, update["type"])),
                    app_id,
                    update["type"],
                    0,
                    rules.DEFAULT_SIZE,
                    at,
                    at,
                ),
            )
            if "quantity" in update:
                cur.execute(
                    "UPDATE waka_formation SET quantity = ?, updated_at = ?"
                    " WHERE app_id = ? AND type = ?",
                    (update["quantity"], at, app_id, update["type"]),
                )
            if "size" in update:
                cur.execute(
                    "UPDATE waka_formation SET size = ?, updated_at = ?"
                    " WHERE app_id = ? AND type = ?",
                    (update["size"], at, app_id, update["type"]),
                )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_formation WHERE app_id = ?", (str(e.originator_id),))

    handlers = {App.FormationChanged: changed, App.Destroyed: destroyed}


def formation_of(store: ReadStore, app_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_formation WHERE app_id = ? ORDER BY type", (app_id,))


def find_formation(store: ReadStore, app_id: str, id_or_type: str) -> Row | None:
    rows = store.query(
        "SELECT * FROM waka_formation WHERE app_id = ? AND (type = ? OR id = ?)",
        (app_id, id_or_type, id_or_type),
    )
    return rows[0] if rows else None
