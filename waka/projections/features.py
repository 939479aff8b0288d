"""The features read model: which app features are on (`heroku features`, `heroku labs`), and
when each was last switched. Only switched features have a row; the rest are off."""

from __future__ import annotations

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class FeaturesProjection(Projection):
    name = "features"
    tables = {
        "waka_app_features": """CREATE TABLE IF NOT EXISTS waka_app_features (
            app_id TEXT NOT NULL, name TEXT NOT NULL, enabled INTEGER NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (app_id, name))""",
    }

    def changed(self, cur: Cursor, e: App.FeatureChanged) -> None:
        at = iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_app_features (app_id, name, enabled, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, name) DO UPDATE SET"
            " enabled = excluded.enabled, updated_at = excluded.updated_at",
            (str(e.originator_id), e.name, int(e.enabled), at, at),
        )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_app_features WHERE app_id = ?", (str(e.originator_id),))

    handlers = {App.FeatureChanged: changed, App.Destroyed: destroyed}


def features_of(store: ReadStore, app_id: str) -> dict[str, Row]:
    """The app's switched features by name (enabled or not, with their times)."""
    rows = store.query("SELECT * FROM waka_app_features WHERE app_id = ?", (app_id,))
    return {r["name"]: r for r in rows}


def enabled_features(store: ReadStore, app_id: str) -> set[str]:
    return {name for name, row in features_of(store, app_id).items() if row["enabled"]}


def apps_with_feature(store: ReadStore, name: str) -> set[str]:
    rows = store.query(
        "SELECT app_id FROM waka_app_features WHERE name = ? AND enabled = 1", (name,)
    )
    return {r["app_id"] for r in rows}
