"""Sign-in read models: password hashes, and the OAuth authorizations that are still good
(a revoked one leaves the table; an expired one stays, and is refused by the time in it)."""

from __future__ import annotations

from waka.domain.account import Account
from waka.domain.authorization import Authorization, now
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class AuthorizationsProjection(Projection):
    name = "authorizations"
    tables = {
        "waka_passwords": """CREATE TABLE IF NOT EXISTS waka_passwords (
            user_id TEXT PRIMARY KEY, password_hash TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "waka_authorizations": """CREATE TABLE IF NOT EXISTS waka_authorizations (
            id TEXT PRIMARY KEY, user_id TEXT NOT NULL, description TEXT NOT NULL,
            scope TEXT NOT NULL, via TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
            token_hint TEXT NOT NULL, expires_in BIGINT, expires_at TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    }

    def password_set(self, cur: Cursor, e: Account.PasswordSet) -> None:
        cur.execute(
            "INSERT INTO waka_passwords (user_id, password_hash, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,"
            " updated_at = excluded.updated_at",
            (str(e.originator_id), e.password_hash, iso(e.timestamp)),
        )

    def created(self, cur: Cursor, e: Authorization.Created) -> None:
        cur.execute(
            "INSERT INTO waka_authorizations (id, user_id, description, scope, via, token_hash,"
            " token_hint, expires_in, expires_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(e.originator_id),
                e.user_id,
                e.description,
                ",".join(e.scope),
                e.via,
                e.token_hash,
                e.token_hint,
                e.expires_in,
                e.expires_at,
                iso(e.timestamp),
                iso(e.timestamp),
            ),
        )

    def updated(self, cur: Cursor, e: Authorization.Updated) -> None:
        cur.execute(
            "UPDATE waka_authorizations SET description = ?, updated_at = ? WHERE id = ?",
            (e.description, iso(e.timestamp), str(e.originator_id)),
        )

    def rotated(self, cur: Cursor, e: Authorization.Rotated) -> None:
        cur.execute(
            "UPDATE waka_authorizations SET token_hash = ?, token_hint = ?, expires_at = ?,"
            " updated_at = ? WHERE id = ?",
            (e.token_hash, e.token_hint, e.expires_at, iso(e.timestamp), str(e.originator_id)),
        )

    def revoked(self, cur: Cursor, e: Authorization.Revoked) -> None:
        cur.execute("DELETE FROM waka_authorizations WHERE id = ?", (str(e.originator_id),))

    handlers = {
        Account.PasswordSet: password_set,
        Authorization.Created: created,
        Authorization.Updated: updated,
        Authorization.Rotated: rotated,
        Authorization.Revoked: revoked,
    }


def _live() -> tuple[str, str]:
    return "(z.expires_at IS NULL OR z.expires_at > ?)", iso(now())


def account_by_token_hash(store: ReadStore, token_hash: str) -> Row | None:
    """The user whose live authorization has this token, with the authorization's id, scope
    and how it was made (`authorization_id`, `scope`, `via`); None for any other token."""
    live, at = _live()
    rows = store.query(
        "SELECT a.*, z.id AS authorization_id, z.scope AS scope, z.via AS via"
        " FROM waka_authorizations z JOIN waka_accounts a ON a.id = z.user_id"
        f" WHERE z.token_hash = ? AND {live}",
        (token_hash, at),
    )
    return rows[0] if rows else None


def password_hash_of(store: ReadStore, email: str) -> tuple[Row, str] | None:
    rows = store.query(
        "SELECT a.*, p.password_hash AS password_hash FROM waka_accounts a"
        " JOIN waka_passwords p ON p.user_id = a.id WHERE a.email = ?",
        (email.strip().lower(),),
    )
    if not rows:
        return None
    row = dict(rows[0])
    return row, row.pop("password_hash")


def authorizations_of(store: ReadStore, user_id: str, via: str | None = None) -> list[Row]:
    """The user's live authorizations (only those made `via` this way, when given)."""
    live, at = _live()
    rows = store.query(
        f"SELECT z.* FROM waka_authorizations z WHERE z.user_id = ? AND {live}"
        " ORDER BY z.created_at, z.id",
        (user_id, at),
    )
    return [r for r in rows if via is None or r["via"] == via]


def authorization_of(store: ReadStore, user_id: str, authorization_id: str) -> Row | None:
    live, at = _live()
    rows = store.query(
        f"SELECT z.* FROM waka_authorizations z WHERE z.user_id = ? AND z.id = ? AND {live}",
        (user_id, authorization_id, at),
    )
    return rows[0] if rows else None
