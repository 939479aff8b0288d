"""What runs: each app's dynos as the dyno manager last observed them, for `heroku ps` served
by any API process. Runtime facts, not ledger facts: a table in the read store outside the
projections (a rebuild leaves it alone), written by the leading dyno manager when they change.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS waka_dyno_states (app_id TEXT PRIMARY KEY, dynos TEXT NOT NULL)"
)


class DynoStates:
    def __init__(self, store: Any) -> None:
        self.store = store
        self._written: dict[str, str] = {}
        self._lock = threading.Lock()
        with store.transaction() as cur:
            cur.execute(SCHEMA)

    def publish(self, observed: dict[str, list[dict[str, Any]]]) -> None:
        """The whole picture: every app with dynos, and no row for an app without any."""
        rows = {app_id: orjson.dumps(dynos).decode() for app_id, dynos in observed.items()}
        with self._lock:
            if not self._written:  # first time in this process: start from the table's rows
                self._written = {
                    r["app_id"]: r["dynos"]
                    for r in self.store.query("SELECT app_id, dynos FROM waka_dyno_states")
                }
            changed = {a: d for a, d in rows.items() if self._written.get(a) != d}
            gone = set(self._written) - set(rows)
            if not changed and not gone:
                return
            with self.store.transaction() as cur:
                for app_id, dynos in changed.items():
                    cur.execute(
                        "INSERT INTO waka_dyno_states (app_id, dynos) VALUES (?, ?)"
                        " ON CONFLICT (app_id) DO UPDATE SET dynos = excluded.dynos",
                        (app_id, dynos),
                    )
                for app_id in gone:
                    cur.execute("DELETE FROM waka_dyno_states WHERE app_id = ?", (app_id,))
            self._written = rows

    def of(self, app_id: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT dynos FROM waka_dyno_states WHERE app_id = ?", (app_id,))
        return orjson.loads(rows[0]["dynos"]) if rows else []
