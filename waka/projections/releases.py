"""The releases read model: every release of every live app.

A release with a release phase is `pending` from its request until the phase ends; its
`output_id` names its release-phase output (served at the release's `output_stream_url`).
"""

from __future__ import annotations

import orjson

from waka.domain.addon import Addon
from waka.domain.app import App, release_id
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class ReleasesProjection(Projection):
    name = "releases"
    tables = {
        "waka_releases": """CREATE TABLE IF NOT EXISTS waka_releases (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, version INTEGER NOT NULL,
            description TEXT NOT NULL, slug_id TEXT, status TEXT NOT NULL,
            user_id TEXT NOT NULL, user_email TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            addon_plan_names TEXT NOT NULL,
            output_id TEXT, build_id TEXT, release_command TEXT,
            UNIQUE (app_id, version))""",
        # The plans of the add-ons attached to each app now: a release lists them.
        "waka_release_addons": """CREATE TABLE IF NOT EXISTS waka_release_addons (
            attachment_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, addon_id TEXT NOT NULL,
            plan TEXT NOT NULL)""",
    }

    def requested(self, cur: Cursor, e: App.ReleaseRequested) -> None:
        self._insert(cur, e, "pending")
        cur.execute(
            "UPDATE waka_releases SET output_id = ?, build_id = ?, release_command = ?"
            " WHERE id = ?",
            (
                e.output_id,
                e.build_id,
                e.process_types.get("release"),
                str(release_id(e.originator_id, e.version)),
            ),
        )

    def released(self, cur: Cursor, e: App.Released) -> None:
        self._insert(cur, e, "succeeded")

    def failed(self, cur: Cursor, e: App.ReleaseFailed) -> None:
        self._insert(cur, e, "failed")

    def attached(self, cur: Cursor, e: App.AddonAttached) -> None:
        for attachment in e.attachments:
            cur.execute(
                "INSERT INTO waka_release_addons (attachment_id, app_id, addon_id, plan)"
                " VALUES (?, ?, ?, ?)",
                (attachment["id"], str(e.originator_id), e.addon_id, attachment.get("plan", "")),
            )

    def detached(self, cur: Cursor, e: App.AddonDetached) -> None:
        for attachment_id in e.attachment_ids:
            cur.execute("DELETE FROM waka_release_addons WHERE attachment_id = ?", (attachment_id,))

    def plan_changed(self, cur: Cursor, e: Addon.PlanChanged) -> None:
        service = e.new_plan and self._service_of(cur, str(e.originator_id))
        if service:
            cur.execute(
                "UPDATE waka_release_addons SET plan = ? WHERE addon_id = ?",
                (f"{service}:{e.new_plan}", str(e.originator_id)),
            )

    @staticmethod
    def _service_of(cur: Cursor, addon_id: str) -> str:
        rows = cur.query("SELECT plan FROM waka_release_addons WHERE addon_id = ?", (addon_id,))
        return rows[0]["plan"].partition(":")[0] if rows else ""

    @staticmethod
    def _insert(
        cur: Cursor, e: App.Released | App.ReleaseFailed | App.ReleaseRequested, status: str
    ) -> None:
        """A new release, or the end of a pending one's release phase (its status changes;
        its creation time and output stay)."""
        rows = cur.query(
            "SELECT DISTINCT addon_id, plan FROM waka_release_addons WHERE app_id = ?",
            (str(e.originator_id),),
        )
        plans = sorted(r["plan"] for r in rows if r["plan"])
        cur.execute(
            "INSERT INTO waka_releases (id, app_id, version, description, slug_id, status,"
            " user_id, user_email, created_at, updated_at, addon_plan_names)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            " slug_id = excluded.slug_id, updated_at = excluded.updated_at,"
            " addon_plan_names = excluded.addon_plan_names",
            (
                str(release_id(e.originator_id, e.version)),
                str(e.originator_id),
                e.version,
                e.description,
                e.slug_id,
                status,
                e.actor["id"],
                e.actor["email"],
                iso(e.timestamp),
                iso(e.timestamp),
                orjson.dumps(plans).decode(),
            ),
        )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_releases WHERE app_id = ?", (str(e.originator_id),))
        cur.execute("DELETE FROM waka_release_addons WHERE app_id = ?", (str(e.originator_id),))

    handlers = {
        App.ReleaseRequested: requested,
        App.Released: released,
        App.ReleaseFailed: failed,
        App.AddonAttached: attached,
        App.AddonDetached: detached,
        Addon.PlanChanged: plan_changed,
        App.Destroyed: destroyed,
    }


def releases_of(store: ReadStore, app_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_releases WHERE app_id = ? ORDER BY version", (app_id,))


def pending_slug_releases(store: ReadStore) -> list[Row]:
    """Releases of a slug waiting for their release phase, oldest first (a build's own pending
    release is run by that build)."""
    return store.query(
        "SELECT * FROM waka_releases WHERE status = 'pending' AND build_id IS NULL"
        " ORDER BY created_at, version"
    )


def release_by_output(store: ReadStore, output_id: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_releases WHERE output_id = ?", (output_id,))
    return rows[0] if rows else None


def find_release(store: ReadStore, app_id: str, id_or_version: str) -> Row | None:
    version = id_or_version.lower().removeprefix("v")
    if version.isdigit():
        rows = store.query(
            "SELECT * FROM waka_releases WHERE app_id = ? AND version = ?", (app_id, int(version))
        )
    else:
        rows = store.query(
            "SELECT * FROM waka_releases WHERE app_id = ? AND id = ?", (app_id, id_or_version)
        )
    return rows[0] if rows else None
