"""The builds read model: builds (pending, succeeded, failed), the slugs they made, and each
app's chosen buildpacks. The builder finds its queue here: builds still pending."""

from __future__ import annotations

import orjson

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row


class BuildsProjection(Projection):
    name = "builds"
    tables = {
        "waka_builds": """CREATE TABLE IF NOT EXISTS waka_builds (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, status TEXT NOT NULL,
            source_url TEXT NOT NULL, source_version TEXT NOT NULL, buildpacks TEXT NOT NULL,
            slug_id TEXT, release_version INTEGER, failure TEXT,
            user_id TEXT NOT NULL, user_email TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, seq BIGINT NOT NULL)""",
        "waka_slugs": """CREATE TABLE IF NOT EXISTS waka_slugs (
            id TEXT NOT NULL, app_id TEXT NOT NULL, checksum TEXT NOT NULL, size BIGINT NOT NULL,
            process_types TEXT NOT NULL, buildpack_description TEXT NOT NULL,
            stack TEXT NOT NULL, commit_sha TEXT NOT NULL, created_at TEXT NOT NULL,
            PRIMARY KEY (app_id, id))""",
        "waka_buildpacks": """CREATE TABLE IF NOT EXISTS waka_buildpacks (
            app_id TEXT NOT NULL, ordinal INTEGER NOT NULL, url TEXT NOT NULL,
            PRIMARY KEY (app_id, ordinal))""",
    }

    def requested(self, cur: Cursor, e: App.BuildRequested) -> None:
        at = iso(e.timestamp)
        cur.execute(
            "INSERT INTO waka_builds (id, app_id, status, source_url, source_version, buildpacks,"
            " user_id, user_email, created_at, updated_at, seq)"
            " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?,"
            " (SELECT COALESCE(MAX(seq), 0) + 1 FROM waka_builds))",
            (
                e.build_id,
                str(e.originator_id),
                e.source_url,
                e.source_version,
                orjson.dumps(e.buildpacks).decode(),
                e.actor["id"],
                e.actor["email"],
                at,
                at,
            ),
        )

    def failed(self, cur: Cursor, e: App.BuildFailed) -> None:
        cur.execute(
            "UPDATE waka_builds SET status = 'failed', failure = ?, updated_at = ? WHERE id = ?",
            (e.reason, iso(e.timestamp), e.build_id),
        )

    def succeeded(self, cur: Cursor, e: App.BuildSucceeded) -> None:
        slug, at = e.slug, iso(e.timestamp)
        cur.execute(
            "UPDATE waka_builds SET status = 'succeeded', slug_id = ?, updated_at = ? WHERE id = ?",
            (slug["id"], at, e.build_id),
        )
        cur.execute(
            "INSERT INTO waka_slugs (id, app_id, checksum, size, process_types,"
            " buildpack_description, stack, commit_sha, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app_id, id) DO NOTHING",
            (
                slug["id"],
                str(e.originator_id),
                slug["checksum"],
                slug["size"],
                orjson.dumps(slug["process_types"]).decode(),
                slug.get("buildpack_description", ""),
                slug.get("stack", ""),
                slug.get("commit", ""),
                at,
            ),
        )

    def released(self, cur: Cursor, e: App.Released | App.ReleaseFailed) -> None:
        if e.slug_id is None:
            return
        # The build that made this slug and has no release yet gets this one.
        cur.execute(
            "UPDATE waka_builds SET release_version = ? WHERE app_id = ? AND slug_id = ?"
            " AND release_version IS NULL",
            (e.version, str(e.originator_id), e.slug_id),
        )

    def buildpacks_changed(self, cur: Cursor, e: App.BuildpacksChanged) -> None:
        app_id = str(e.originator_id)
        cur.execute("DELETE FROM waka_buildpacks WHERE app_id = ?", (app_id,))
        for ordinal, url in enumerate(e.buildpacks):
            cur.execute(
                "INSERT INTO waka_buildpacks (app_id, ordinal, url) VALUES (?, ?, ?)",
                (app_id, ordinal, url),
            )

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        app_id = str(e.originator_id)
        for table in ("waka_builds", "waka_slugs", "waka_buildpacks"):
            cur.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))

    handlers = {
        App.BuildRequested: requested,
        App.BuildFailed: failed,
        App.BuildSucceeded: succeeded,
        App.Released: released,
        App.ReleaseFailed: released,
        App.BuildpacksChanged: buildpacks_changed,
        App.Destroyed: destroyed,
    }


def builds_of(store: ReadStore, app_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_builds WHERE app_id = ? ORDER BY seq", (app_id,))


def find_build(store: ReadStore, app_id: str, build_id: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_builds WHERE app_id = ? AND id = ?", (app_id, build_id))
    return rows[0] if rows else None


def build_by_id(store: ReadStore, build_id: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_builds WHERE id = ?", (build_id,))
    return rows[0] if rows else None


def pending_builds(store: ReadStore) -> list[Row]:
    """The build queue, oldest first."""
    return store.query("SELECT * FROM waka_builds WHERE status = 'pending' ORDER BY seq")


def find_slug(store: ReadStore, app_id: str, slug_id: str) -> Row | None:
    rows = store.query("SELECT * FROM waka_slugs WHERE app_id = ? AND id = ?", (app_id, slug_id))
    return rows[0] if rows else None


def buildpacks_of(store: ReadStore, app_id: str) -> list[str]:
    rows = store.query(
        "SELECT url FROM waka_buildpacks WHERE app_id = ? ORDER BY ordinal", (app_id,)
    )
    return [r["url"] for r in rows]


def pending_build_of_commit(store: ReadStore, app_id: str, commit: str) -> Row | None:
    """A build of `commit` still waiting or running (e.g. its push was cut off by a restart)."""
    rows = store.query(
        "SELECT * FROM waka_builds WHERE app_id = ? AND source_version = ? AND status = 'pending'"
        " ORDER BY seq DESC LIMIT 1",
        (app_id, commit),
    )
    return rows[0] if rows else None
