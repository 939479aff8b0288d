"""The add-ons read model: every add-on not yet removed, and its attachments.

Holds no secrets: only the names of an add-on's config (its values live in the ledger and in
the attached apps' config vars).
"""

from __future__ import annotations

import orjson

from waka.domain.addon import Addon
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row

LIVE_STATES = ("provisioning", "provisioned", "failed")


class AddonsProjection(Projection):
    name = "addons"
    tables = {
        "waka_addons": """CREATE TABLE IF NOT EXISTS waka_addons (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, service TEXT NOT NULL, plan TEXT NOT NULL,
            app_id TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL,
            config_keys TEXT NOT NULL, user_id TEXT NOT NULL, user_email TEXT NOT NULL,
            resets_requested INTEGER NOT NULL, resets_done INTEGER NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "waka_addon_attachments": """CREATE TABLE IF NOT EXISTS waka_addon_attachments (
            id TEXT PRIMARY KEY, addon_id TEXT NOT NULL, app_id TEXT NOT NULL,
            name TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    }

    def created(self, cur: Cursor, e: Addon.Created) -> None:
        cur.execute(
            "INSERT INTO waka_addons (id, name, service, plan, app_id, state, message,"
            " config_keys, user_id, user_email, resets_requested, resets_done, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, 'provisioning', '', '[]', ?, ?, 0, 0, ?, ?)",
            (
                str(e.originator_id),
                e.name,
                e.service,
                e.plan,
                e.app_id,
                e.actor["id"],
                e.actor["email"],
                iso(e.timestamp),
                iso(e.timestamp),
            ),
        )

    def provisioned(self, cur: Cursor, e: Addon.Provisioned) -> None:
        keys = orjson.dumps(sorted(e.config)).decode()
        self._set(cur, e, "state = 'provisioned', message = '', config_keys = ?", keys)

    def failed(self, cur: Cursor, e: Addon.ProvisionFailed) -> None:
        self._set(cur, e, "state = 'failed', message = ?", e.reason)

    def renamed(self, cur: Cursor, e: Addon.Renamed) -> None:
        self._set(cur, e, "name = ?", e.new_name)

    def plan_changed(self, cur: Cursor, e: Addon.PlanChanged) -> None:
        self._set(cur, e, "plan = ?", e.new_plan)

    def reset_requested(self, cur: Cursor, e: Addon.ResetRequested) -> None:
        self._set(cur, e, "resets_requested = ?", e.reset)

    def reset_done(self, cur: Cursor, e: Addon.ResetDone) -> None:
        self._set(cur, e, "resets_done = ?", e.reset)

    def deprovisioning(self, cur: Cursor, e: Addon.DeprovisionRequested) -> None:
        self._set(cur, e, "state = 'deprovisioning'")

    def deprovisioned(self, cur: Cursor, e: Addon.Deprovisioned) -> None:
        cur.execute("DELETE FROM waka_addons WHERE id = ?", (str(e.originator_id),))

    def attached(self, cur: Cursor, e: Addon.Attached) -> None:
        cur.execute(
            "INSERT INTO waka_addon_attachments (id, addon_id, app_id, name, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                e.attachment_id,
                str(e.originator_id),
                e.app_id,
                e.name,
                iso(e.timestamp),
                iso(e.timestamp),
            ),
        )

    def detached(self, cur: Cursor, e: Addon.Detached) -> None:
        cur.execute("DELETE FROM waka_addon_attachments WHERE id = ?", (e.attachment_id,))

    @staticmethod
    def _set(cur: Cursor, e: Addon.Event, assignments: str, *params: object) -> None:
        cur.execute(
            f"UPDATE waka_addons SET {assignments}, updated_at = ? WHERE id = ?",
            (*params, iso(e.timestamp), str(e.originator_id)),
        )

    handlers = {
        Addon.Created: created,
        Addon.Provisioned: provisioned,
        Addon.ProvisionFailed: failed,
        Addon.Renamed: renamed,
        Addon.PlanChanged: plan_changed,
        Addon.ResetRequested: reset_requested,
        Addon.ResetDone: reset_done,
        Addon.DeprovisionRequested: deprovisioning,
        Addon.Deprovisioned: deprovisioned,
        Addon.Attached: attached,
        Addon.Detached: detached,
    }


_LIVE = f"state IN ({', '.join(repr(s) for s in LIVE_STATES)})"


def addons_of_app(store: ReadStore, app_id: str) -> list[Row]:
    """Add-ons billed to the app or attached to it, oldest first."""
    return store.query(
        f"SELECT * FROM waka_addons WHERE {_LIVE} AND (app_id = ? OR id IN"
        " (SELECT addon_id FROM waka_addon_attachments WHERE app_id = ?))"
        " ORDER BY created_at, name",
        (app_id, app_id),
    )


def addons_of_owner(store: ReadStore, user_id: str) -> list[Row]:
    """Add-ons billed to apps the user owns or collaborates on."""
    return store.query(
        f"SELECT a.* FROM waka_addons a JOIN waka_apps p ON p.id = a.app_id"
        f" WHERE {_LIVE} AND (p.owner_id = ? OR p.id IN"
        " (SELECT app_id FROM waka_collaborators WHERE user_id = ?))"
        " ORDER BY a.created_at, a.name",
        (user_id, user_id),
    )


def find_addon(store: ReadStore, id_or_name: str) -> Row | None:
    rows = store.query(
        f"SELECT * FROM waka_addons WHERE {_LIVE} AND (id = ? OR name = ?)",
        (id_or_name, id_or_name),
    )
    return rows[0] if rows else None


def addons_in_state(store: ReadStore, *states: str) -> list[Row]:
    marks = ", ".join("?" for _ in states)
    return store.query(f"SELECT * FROM waka_addons WHERE state IN ({marks})", states)


def addons_to_reset(store: ReadStore) -> list[Row]:
    return store.query(
        "SELECT * FROM waka_addons WHERE state = 'provisioned' AND resets_requested > resets_done"
    )


def attachments_of_app(store: ReadStore, app_id: str) -> list[Row]:
    return store.query(
        "SELECT * FROM waka_addon_attachments WHERE app_id = ? ORDER BY created_at, name",
        (app_id,),
    )


def attachments_of_addon(store: ReadStore, addon_id: str) -> list[Row]:
    return store.query(
        "SELECT * FROM waka_addon_attachments WHERE addon_id = ? ORDER BY created_at, name",
        (addon_id,),
    )


def find_attachment(store: ReadStore, attachment_id: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_addon_attachments WHERE id = ?", (attachment_id,))
    return rows[0] if rows else None
