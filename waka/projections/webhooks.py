"""The app webhooks read model: each app's webhooks, for the API and the webhook reactor.

The URL (it may carry credentials), the signing secret and the custom Authorization header are
sealed with the ledger's key, as config var values are; `sealed` says which rows are.
"""

from __future__ import annotations

import json
from typing import Any

from waka.domain.app import App
from waka.domain.webhook import AppWebhook
from waka.projections.base import Projection, iso
from waka.projections.sealing import Sealer
from waka.projections.store import Cursor, ReadStore, Row

_SECRETS = ("url", "secret", "auth_header")  # AUTHORIZATION is a word PostgreSQL keeps


class WebhooksProjection(Projection):
    name = "webhooks"
    tables = {
        "waka_webhooks": """CREATE TABLE IF NOT EXISTS waka_webhooks (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, url TEXT NOT NULL, include TEXT NOT NULL,
            level TEXT NOT NULL, secret TEXT NOT NULL, auth_header TEXT, sealed INTEGER NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, seq BIGINT NOT NULL)""",
    }

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()

    def _sealed(self, value: str | None) -> str | None:
        return None if value is None else self.sealer.seal(value)

    def created(self, cur: Cursor, e: AppWebhook.Created) -> None:
        at = iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_webhooks (id, app_id, url, include, level, secret, auth_header,"
            " sealed, created_at, updated_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " (SELECT COALESCE(MAX(seq), 0) + 1 FROM waka_webhooks))"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.app_id),
                self._sealed(e.url),
                json.dumps(e.include),
                e.level,
                self._sealed(e.secret),
                self._sealed(e.authorization),
                int(self.sealer.enabled),
                at,
                at,
            ),
        )

    def updated(self, cur: Cursor, e: AppWebhook.Updated) -> None:
        rows = cur.query("SELECT * FROM waka_webhooks WHERE id = ?", (str(e.originator_id),))
        if not rows:
            return
        values = {**opened(self.sealer, rows[0]), **e.changes}
        cur.execute(
            "UPDATE waka_webhooks SET url = ?, include = ?, level = ?, secret = ?,"
            " auth_header = ?, sealed = ?, updated_at = ? WHERE id = ?",
            (
                self._sealed(values["url"]),
                json.dumps(values["include"]),
                values["level"],
                self._sealed(values["secret"]),
                self._sealed(values["authorization"]),
                int(self.sealer.enabled),
                iso(e.timestamp),
                str(e.originator_id),
            ),
        )

    def removed(self, cur: Cursor, e: AppWebhook.Removed) -> None:
        cur.execute("DELETE FROM waka_webhooks WHERE id = ?", (str(e.originator_id),))

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_webhooks WHERE app_id = ?", (str(e.originator_id),))

    handlers = {
        AppWebhook.Created: created,
        AppWebhook.Updated: updated,
        AppWebhook.Removed: removed,
        App.Destroyed: destroyed,
    }


def opened(sealer: Sealer, row: Row) -> dict[str, Any]:
    """A row with its secrets in clear and `include` as a list."""
    out = dict(row)
    out["include"] = json.loads(row["include"])
    if row["sealed"]:
        for key in _SECRETS:
            if row[key] is not None:
                out[key] = sealer.open(row[key])
    out["authorization"] = out.pop("auth_header")
    return out


def webhooks_of(store: ReadStore, app_id: str) -> list[dict[str, Any]]:
    rows = store.query("SELECT * FROM waka_webhooks WHERE app_id = ? ORDER BY seq", (app_id,))
    return [opened(store.sealer, r) for r in rows]


def find_webhook(store: ReadStore, webhook_id: str) -> dict[str, Any] | None:
    rows = store.query("SELECT * FROM waka_webhooks WHERE id = ?", (webhook_id,))
    return opened(store.sealer, rows[0]) if rows else None
