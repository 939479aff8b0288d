"""App features: the switch command (`heroku features:enable`, `labs:enable`) and what
`runtime-dyno-metadata` puts in a dyno's environment.

The switch is a ledger event on the App (`FeatureChanged`); the features read model holds the
current state, and the dyno manager, `heroku run` and the release phase read it there. Neither
feature restarts anything, as on Heroku: preboot applies to the next deploy or restart, dyno
metadata to dynos started from then on.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from waka.domain.actors import Actor
from waka.domain.errors import NotFound
from waka.domain.features import RUNTIME_DYNO_METADATA, Feature, find_feature
from waka.ledger import retry_on_conflict
from waka.projections.features import enabled_features
from waka.projections.store import ReadStore


@retry_on_conflict
def set_feature(ledger: Any, actor: Actor, app_id: UUID, name: str, enabled: bool) -> Feature:
    """Switch a feature of the catalogue on or off for an app; nothing if it already is."""
    feature = find_feature(name)
    app = ledger.get_app(app_id)
    if app.destroyed:
        raise NotFound("Couldn't find that app.")
    app.check_access(actor)
    if app.set_feature(feature.name, enabled, actor):
        ledger.save(app)
    return feature


def dyno_metadata(store: ReadStore, app_id: str, version: int) -> dict[str, str]:
    """Heroku's dyno metadata for a dyno of release `version`, if the app has
    `runtime-dyno-metadata` on (else nothing). HEROKU_DYNO_ID is per dyno: see `with_dyno_id`.

    The slug's commit and description are those of the release that deployed the slug (a
    config change or rollback keeps the slug, and so the commit of the build that made it);
    in the release phase that release is still pending."""
    if RUNTIME_DYNO_METADATA not in enabled_features(store, app_id):
        return {}
    apps = store.query("SELECT name, slug_id FROM waka_apps WHERE id = ?", (app_id,))
    releases = store.query(
        "SELECT created_at, slug_id, build_id FROM waka_releases WHERE app_id = ? AND version = ?",
        (app_id, version),
    )
    if not apps:
        return {}
    release = releases[0] if releases else {"created_at": "", "slug_id": None, "build_id": None}
    slug_id = release["slug_id"] or apps[0]["slug_id"]
    env = {
        "HEROKU_APP_ID": app_id,
        "HEROKU_APP_NAME": apps[0]["name"],
        "HEROKU_RELEASE_VERSION": f"v{version}",
        "HEROKU_RELEASE_CREATED_AT": release["created_at"],
        "HEROKU_SLUG_COMMIT": "",
        "HEROKU_SLUG_DESCRIPTION": "",
    }
    if slug_id:
        slugs = store.query(
            "SELECT commit_sha FROM waka_slugs WHERE app_id = ? AND id = ?", (app_id, slug_id)
        )
        # In a build's release phase the slug is not recorded yet: the build knows its commit.
        builds = store.query(
            "SELECT source_version FROM waka_builds WHERE id = ?", (release["build_id"] or "",)
        )
        deployed = store.query(
            "SELECT description FROM waka_releases WHERE app_id = ? AND slug_id = ?"
            " AND status IN ('succeeded', 'pending') ORDER BY version LIMIT 1",
            (app_id, slug_id),
        )
        commit = slugs[0]["commit_sha"] if slugs else builds[0]["source_version"] if builds else ""
        env["HEROKU_SLUG_COMMIT"] = commit
        env["HEROKU_SLUG_DESCRIPTION"] = deployed[0]["description"] if deployed else ""
    return env


def with_dyno_id(env: dict[str, str]) -> dict[str, str]:
    """Each dyno its own HEROKU_DYNO_ID, when the app has dyno metadata on."""
    if "HEROKU_APP_ID" not in env:
        return env
    return {**env, "HEROKU_DYNO_ID": str(uuid4())}


def metadata_env(store: ReadStore, app_id: str, version: int) -> dict[str, str]:
    """Dyno metadata for one dyno (one-off, release phase): with its own dyno id."""
    return with_dyno_id(dyno_metadata(store, app_id, version))
