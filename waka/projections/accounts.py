"""The accounts read model: users, looked up by API key hash on every request."""

from __future__ import annotations

from waka.domain.account import Account
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class AccountsProjection(Projection):
    name = "accounts"
    tables = {
        "waka_accounts": """CREATE TABLE IF NOT EXISTS waka_accounts (
            id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    }

    def registered(self, cur: Cursor, e: Account.Registered) -> None:
        cur.execute(
            "INSERT INTO waka_accounts (id, email, name, key_hash, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (str(e.originator_id), e.email, e.name, e.key_hash, iso(e.timestamp), iso(e.timestamp)),
        )

    def key_regenerated(self, cur: Cursor, e: Account.ApiKeyRegenerated) -> None:
        cur.execute(
            "UPDATE waka_accounts SET key_hash = ?, updated_at = ? WHERE id = ?",
            (e.key_hash, iso(e.timestamp), str(e.originator_id)),
        )

    handlers = {Account.Registered: registered, Account.ApiKeyRegenerated: key_regenerated}


def account_by_key_hash(store: ReadStore, key_hash: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_accounts WHERE key_hash = ?", (key_hash,))
    return rows[0] if rows else None
