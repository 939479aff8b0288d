"""The collaborators read model: who besides the owner holds which permissions on an app.

`app_access` is what the API hands the access policy (waka/domain/access.py) for an app row.
"""

from __future__ import annotations

from typing import Any

import orjson

from waka.domain.access import AppAccess
from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class CollaboratorsProjection(Projection):
    name = "collaborators"
    tables = {
        "waka_collaborators": """CREATE TABLE IF NOT EXISTS waka_collaborators (
            app_id TEXT NOT NULL, user_id TEXT NOT NULL, email TEXT NOT NULL,
            permissions TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (app_id, user_id))""",
    }

    def added(self, cur: Cursor, e: Any) -> None:
        app_id, at = str(e.originator_id), iso(e.timestamp)
        cur.execute(
            "DELETE FROM waka_collaborators WHERE app_id = ? AND user_id = ?",
            (app_id, e.user["id"]),
        )
        cur.execute(
            "INSERT INTO waka_collaborators"
            " (app_id, user_id, email, permissions, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (app_id, e.user["id"], e.user["email"], orjson.dumps(e.permissions).decode(), at, at),
        )

    def updated(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "UPDATE waka_collaborators SET permissions = ?, updated_at = ?"
            " WHERE app_id = ? AND user_id = ?",
            (
                orjson.dumps(e.permissions).decode(),
                iso(e.timestamp),
                str(e.originator_id),
                e.user["id"],
            ),
        )

    def removed(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "DELETE FROM waka_collaborators WHERE app_id = ? AND user_id = ?",
            (str(e.originator_id), e.user["id"]),
        )

    def transferred(self, cur: Cursor, e: Any) -> None:
        """The new owner needs no grant (the aggregate drops it too)."""
        cur.execute(
            "DELETE FROM waka_collaborators WHERE app_id = ? AND user_id = ?",
            (str(e.originator_id), e.new_owner["id"]),
        )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_collaborators WHERE app_id = ?", (str(e.originator_id),))

    handlers = {
        App.CollaboratorAdded: added,
        App.CollaboratorUpdated: updated,
        App.CollaboratorRemoved: removed,
        App.Transferred: transferred,
        App.Destroyed: destroyed,
    }


def collaborators_of(store: ReadStore, app_id: str) -> list[Row]:
    rows = store.query(
        "SELECT * FROM waka_collaborators WHERE app_id = ? ORDER BY created_at, email", (app_id,)
    )
    return [{**r, "permissions": orjson.loads(r["permissions"])} for r in rows]


def app_access(store: ReadStore, app_row: Row) -> AppAccess:
    """The app as the access policy sees it: owner, grants, and its team's roles if any.
    One query (every app-scoped request asks it): grants, the team, the team's members."""
    app_id = app_row["id"]
    rows = store.query(
        "SELECT 'grant' AS kind, user_id, permissions AS value, NULL AS locked"
        " FROM waka_collaborators WHERE app_id = ?"
        " UNION ALL SELECT 'team', t.id, t.name, a.locked"
        " FROM waka_team_apps a JOIN waka_teams t ON t.id = a.team_id WHERE a.app_id = ?"
        " UNION ALL SELECT 'member', m.user_id, m.role, NULL FROM waka_team_apps a"
        " JOIN waka_teams t ON t.id = a.team_id JOIN waka_team_members m ON m.team_id = t.id"
        " WHERE a.app_id = ?",
        (app_id, app_id, app_id),
    )
    grants = {r["user_id"]: orjson.loads(r["value"]) for r in rows if r["kind"] == "grant"}
    team = next((r for r in rows if r["kind"] == "team"), None)
    roles = {r["user_id"]: r["value"] for r in rows if r["kind"] == "member"}
    return AppAccess(
        name=app_row["name"],
        owner_id=app_row["owner_id"],
        grants=grants,
        team_roles=roles,
        locked=bool(team and team["locked"]),
    )


def apps_of_user(store: ReadStore, user_id: str) -> list[Row]:
    """Apps the user owns or collaborates on, by name."""
    return store.query(
        "SELECT * FROM waka_apps WHERE owner_id = ? OR id IN"
        " (SELECT app_id FROM waka_collaborators WHERE user_id = ?) ORDER BY name",
        (user_id, user_id),
    )
