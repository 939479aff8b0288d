"""The app transfers read model: personal transfers offered, and what became of them."""

from __future__ import annotations

from typing import Any

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class AppTransfersProjection(Projection):
    name = "app_transfers"
    tables = {
        "waka_app_transfers": """CREATE TABLE IF NOT EXISTS waka_app_transfers (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, app_name TEXT NOT NULL,
            owner_id TEXT NOT NULL, owner_email TEXT NOT NULL,
            recipient_id TEXT NOT NULL, recipient_email TEXT NOT NULL, state TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    }

    def requested(self, cur: Cursor, e: Any) -> None:
        app = cur.query(
            "SELECT name, owner_id, owner_email FROM waka_apps WHERE id = ?",
            (str(e.originator_id),),
        )
        name, owner_id, owner_email = (
            (app[0]["name"], app[0]["owner_id"], app[0]["owner_email"]) if app else ("", "", "")
        )
        at = iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_app_transfers (id, app_id, app_name, owner_id, owner_email,"
            " recipient_id, recipient_email, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (
                e.transfer_id,
                str(e.originator_id),
                name,
                owner_id,
                owner_email,
                e.recipient["id"],
                e.recipient["email"],
                at,
                at,
            ),
        )

    def closed(self, cur: Cursor, e: Any) -> None:
        self._state(cur, e.transfer_id, e.state, iso(e.timestamp))

    def transferred(self, cur: Cursor, e: Any) -> None:
        at = iso(e.timestamp)
        if e.transfer_id:
            self._state(cur, e.transfer_id, "accepted", at)
        cur.execute(  # other offers lapse with the change of owner
            "UPDATE waka_app_transfers SET state = 'cancelled', updated_at = ?"
            " WHERE app_id = ? AND state = 'pending'",
            (at, str(e.originator_id)),
        )

    def _state(self, cur: Cursor, transfer_id: str, state: str, at: str) -> None:
        cur.execute(
            "UPDATE waka_app_transfers SET state = ?, updated_at = ? WHERE id = ?",
            (state, at, transfer_id),
        )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_app_transfers WHERE app_id = ?", (str(e.originator_id),))

    handlers = {
        App.TransferRequested: requested,
        App.TransferClosed: closed,
        App.Transferred: transferred,
        App.Destroyed: destroyed,
    }


def transfers_of_user(store: ReadStore, user_id: str) -> list[Row]:
    """Transfers the user offered or was offered, oldest first."""
    return store.query(
        "SELECT * FROM waka_app_transfers WHERE owner_id = ? OR recipient_id = ?"
        " ORDER BY created_at, id",
        (user_id, user_id),
    )


def find_transfer(store: ReadStore, transfer_id: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_app_transfers WHERE id = ?", (transfer_id,))
    return rows[0] if rows else None
