"""The config-vars read model: the current config of every live app.

Values are sealed (encrypted with the ledger's key) when the platform has a cipher key: they
hold add-on credentials and other secrets. `sealed` says which rows are, so a key set later
leaves the rows written before it readable.
"""

from __future__ import annotations

from waka.domain.app import App
from waka.projections.base import Projection
from waka.projections.sealing import Sealer
from waka.projections.store import Cursor, ReadStore


class ConfigVarsProjection(Projection):
    name = "config_vars"
    tables = {
        "waka_config_vars": """CREATE TABLE IF NOT EXISTS waka_config_vars (
            app_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            sealed INTEGER NOT NULL, PRIMARY KEY (app_id, key))""",
    }

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()

    def changed(self, cur: Cursor, e: App.ConfigChanged) -> None:
        for key, value in e.changes.items():
            self._put(cur, str(e.originator_id), key, value)

    def rolled_back(self, cur: Cursor, e: App.RolledBack) -> None:
        cur.execute("DELETE FROM waka_config_vars WHERE app_id = ?", (str(e.originator_id),))
        for key, value in e.config.items():
            self._put(cur, str(e.originator_id), key, value)

    def attached(self, cur: Cursor, e: App.AddonAttached) -> None:
        for key, value in e.config.items():
            self._put(cur, str(e.originator_id), key, value)

    def detached(self, cur: Cursor, e: App.AddonDetached) -> None:
        for key in e.keys:
            self._put(cur, str(e.originator_id), key, None)

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_config_vars WHERE app_id = ?", (str(e.originator_id),))

    def _put(self, cur: Cursor, app_id: str, key: str, value: str | None) -> None:
        if value is None:
            cur.execute("DELETE FROM waka_config_vars WHERE app_id = ? AND key = ?", (app_id, key))
        else:
            cur.execute(
                "INSERT INTO waka_config_vars (app_id, key, value, sealed) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (app_id, key) DO UPDATE"
                " SET value = excluded.value, sealed = excluded.sealed",
                (app_id, key, self.sealer.seal(value), int(self.sealer.enabled)),
            )

    handlers = {
        App.ConfigChanged: changed,
        App.RolledBack: rolled_back,
        App.AddonAttached: attached,
        App.AddonDetached: detached,
        App.Destroyed: destroyed,
    }


def config_of(store: ReadStore, app_id: str) -> dict[str, str]:
    rows = store.query(
        "SELECT key, value, sealed FROM waka_config_vars WHERE app_id = ? ORDER BY key",
        (app_id,),
    )
    return {r["key"]: store.sealer.open(r["value"]) if r["sealed"] else r["value"] for r in rows}
