"""The teams read model: teams, their members' roles, and which apps each team owns."""

from __future__ import annotations

from typing import Any

from waka.domain.app import App
from waka.domain.team import ADMIN, Team
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class TeamsProjection(Projection):
    name = "teams"
    tables = {
        "waka_teams": """CREATE TABLE IF NOT EXISTS waka_teams (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "waka_team_members": """CREATE TABLE IF NOT EXISTS waka_team_members (
            team_id TEXT NOT NULL, user_id TEXT NOT NULL, email TEXT NOT NULL,
            role TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (team_id, user_id))""",
        "waka_team_apps": """CREATE TABLE IF NOT EXISTS waka_team_apps (
            app_id TEXT PRIMARY KEY, team_id TEXT NOT NULL, locked INTEGER NOT NULL)""",
    }

    def created(self, cur: Cursor, e: Team.Created) -> None:
        team_id, at = str(e.originator_id), iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_teams (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (team_id, e.name, at, at),
        )
        self._member(cur, team_id, e.admin, ADMIN, at)

    def _member(self, cur: Cursor, team_id: str, user: dict, role: str, at: str) -> None:
        found = cur.query(
            "SELECT created_at FROM waka_team_members WHERE team_id = ? AND user_id = ?",
            (team_id, user["id"]),
        )
        cur.execute(
            "DELETE FROM waka_team_members WHERE team_id = ? AND user_id = ?",
            (team_id, user["id"]),
        )
        cur.execute(
            "INSERT INTO waka_team_members"
            " (team_id, user_id, email, role, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (team_id, user["id"], user["email"], role, found[0]["created_at"] if found else at, at),
        )

    def member_set(self, cur: Cursor, e: Any) -> None:
        self._member(cur, str(e.originator_id), e.user, e.role, iso(e.timestamp))

    def member_removed(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "DELETE FROM waka_team_members WHERE team_id = ? AND user_id = ?",
            (str(e.originator_id), e.user["id"]),
        )

    def app_joined(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "INSERT INTO waka_team_apps (app_id, team_id, locked) VALUES (?, ?, 0)",
            (str(e.originator_id), e.team["id"]),
        )

    def app_locked(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "UPDATE waka_team_apps SET locked = ? WHERE app_id = ?",
            (int(e.locked), str(e.originator_id)),
        )

    def app_transferred(self, cur: Cursor, e: Any) -> None:
        cur.execute("DELETE FROM waka_team_apps WHERE app_id = ?", (str(e.originator_id),))
        if e.team is not None:
            self.app_joined(cur, e)

    def app_destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_team_apps WHERE app_id = ?", (str(e.originator_id),))

    handlers = {
        Team.Created: created,
        Team.MemberSet: member_set,
        Team.MemberRemoved: member_removed,
        App.TeamJoined: app_joined,
        App.LockChanged: app_locked,
        App.Destroyed: app_destroyed,
        App.Transferred: app_transferred,
    }


def find_team(store: ReadStore, id_or_name: str) -> Row | None:
    rows = store.query(
        "SELECT * FROM waka_teams WHERE id = ? OR name = ?", (id_or_name, id_or_name)
    )
    return rows[0] if rows else None


def members_of(store: ReadStore, team_id: str) -> list[Row]:
    return store.query(
        "SELECT * FROM waka_team_members WHERE team_id = ? ORDER BY email", (team_id,)
    )


def role_in(store: ReadStore, team_id: str, user_id: str) -> str | None:
    rows = store.query(
        "SELECT role FROM waka_team_members WHERE team_id = ? AND user_id = ?", (team_id, user_id)
    )
    return rows[0]["role"] if rows else None


def teams_of_user(store: ReadStore, user_id: str) -> list[Row]:
    """The teams the user is in, each with their role."""
    return store.query(
        "SELECT t.*, m.role FROM waka_teams t JOIN waka_team_members m ON m.team_id = t.id"
        " WHERE m.user_id = ? ORDER BY t.name",
        (user_id,),
    )


def team_of_app(store: ReadStore, app_id: str) -> Row | None:
    """{"id", "name", "locked"} of the team that owns the app; None for a personal app."""
    rows = store.query(
        "SELECT t.id, t.name, a.locked FROM waka_team_apps a JOIN waka_teams t"
        " ON t.id = a.team_id WHERE a.app_id = ?",
        (app_id,),
    )
    return rows[0] if rows else None


def apps_of_team(store: ReadStore, team_id: str) -> list[Row]:
    return store.query(
        "SELECT p.* FROM waka_apps p JOIN waka_team_apps a ON a.app_id = p.id"
        " WHERE a.team_id = ? ORDER BY p.name",
        (team_id,),
    )
