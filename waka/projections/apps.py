"""The apps read model: one row per live app."""

from __future__ import annotations

from typing import Any

import orjson

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class AppsProjection(Projection):
    name = "apps"
    tables = {
        "waka_apps": """CREATE TABLE IF NOT EXISTS waka_apps (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            owner_id TEXT NOT NULL, owner_email TEXT NOT NULL,
            region TEXT NOT NULL, stack TEXT NOT NULL, maintenance INTEGER NOT NULL,
            current_release INTEGER NOT NULL, slug_id TEXT, process_types TEXT NOT NULL,
            restarts TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, released_at TEXT)""",
    }

    def created(self, cur: Cursor, e: App.Created) -> None:
        cur.execute(
            "INSERT INTO waka_apps (id, name, owner_id, owner_email, region, stack, maintenance,"
            " current_release, process_types, restarts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, 0, '{}', '{}', ?, ?)",
            (
                str(e.originator_id),
                e.name,
                e.owner["id"],
                e.owner["email"],
                e.region,
                e.stack,
                iso(e.timestamp),
                iso(e.timestamp),
            ),
        )

    def released(self, cur: Cursor, e: App.Released) -> None:
        cur.execute(
            "UPDATE waka_apps SET current_release = ?, slug_id = ?, released_at = ?,"
            " updated_at = ? WHERE id = ?",
            (e.version, e.slug_id, iso(e.timestamp), iso(e.timestamp), str(e.originator_id)),
        )

    def renamed(self, cur: Cursor, e: App.Renamed) -> None:
        cur.execute(
            "UPDATE waka_apps SET name = ?, updated_at = ? WHERE id = ?",
            (e.new_name, iso(e.timestamp), str(e.originator_id)),
        )

    def maintenance(self, cur: Cursor, e: App.MaintenanceChanged) -> None:
        cur.execute(
            "UPDATE waka_apps SET maintenance = ?, updated_at = ? WHERE id = ?",
            (int(e.enabled), iso(e.timestamp), str(e.originator_id)),
        )

    def touched(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "UPDATE waka_apps SET updated_at = ? WHERE id = ?",
            (iso(e.timestamp), str(e.originator_id)),
        )

    def deployed(
        self, cur: Cursor, e: App.BuildSucceeded | App.RolledBack | App.SlugReleased
    ) -> None:
        """The live slug's process types, whose commands the formation shows."""
        if isinstance(e, App.BuildSucceeded):
            if not e.released:
                return
            process_types = e.slug["process_types"]
        else:
            process_types = e.process_types
        cur.execute(
            "UPDATE waka_apps SET process_types = ? WHERE id = ?",
            (orjson.dumps(process_types).decode(), str(e.originator_id)),
        )

    def restarted(self, cur: Cursor, e: App.DynosRestarted) -> None:
        row = cur.query("SELECT restarts FROM waka_apps WHERE id = ?", (str(e.originator_id),))
        restarts = orjson.loads(row[0]["restarts"]) if row else {}
        restarts[e.target] = restarts.get(e.target, 0) + 1
        cur.execute(
            "UPDATE waka_apps SET restarts = ? WHERE id = ?",
            (orjson.dumps(restarts).decode(), str(e.originator_id)),
        )

    def transferred(self, cur: Cursor, e: Any) -> None:
        cur.execute(
            "UPDATE waka_apps SET owner_id = ?, owner_email = ?, updated_at = ? WHERE id = ?",
            (e.new_owner["id"], e.new_owner["email"], iso(e.timestamp), str(e.originator_id)),
        )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_apps WHERE id = ?", (str(e.originator_id),))

    handlers = {
        App.Created: created,
        App.Released: released,
        App.Renamed: renamed,
        App.MaintenanceChanged: maintenance,
        App.ConfigChanged: touched,
        App.FormationChanged: touched,
        App.BuildSucceeded: deployed,
        App.RolledBack: deployed,
        App.SlugReleased: deployed,
        App.DynosRestarted: restarted,
        App.Destroyed: destroyed,
        App.Transferred: transferred,
    }


def find_app(store: ReadStore, id_or_name: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_apps WHERE id = ? OR name = ?", (id_or_name, id_or_name))
    return rows[0] if rows else None


def apps_owned_by(store: ReadStore, owner_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_apps WHERE owner_id = ? ORDER BY name", (owner_id,))
