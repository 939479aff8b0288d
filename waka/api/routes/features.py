"""App features and account features (`heroku features`, `heroku labs`).

App features are the catalogue's (waka/domain/features.py): `preboot` and
`runtime-dyno-metadata`. waka has no account features: the list is empty and every name is
404, which is what `heroku labs:enable NAME -a APP` expects before it tries the app."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform
from waka.domain.features import CATALOGUE, Feature, find_feature
from waka.features import set_feature
from waka.projections.features import features_of
from waka.projections.store import Row


def _render(feature: Feature, row: Row | None, app: Row) -> dict[str, Any]:
    # A feature never switched shows the app's creation time.
    created = row["created_at"] if row else app["created_at"]
    return {
        "id": feature.id,
        "name": feature.name,
        "display_name": feature.display_name,
        "description": feature.description,
        "doc_url": feature.doc_url,
        "state": feature.state,
        "enabled": bool(row and row["enabled"]),
        "feedback_email": "",
        "created_at": created,
        "updated_at": row["updated_at"] if row else created,
    }


def _row(ctx: Ctx, app: Row, feature: Feature) -> Row | None:
    return features_of(ctx.platform.store, app["id"]).get(feature.name)


def list_features(ctx: Ctx) -> Reply:
    app = ctx.app()
    rows = features_of(ctx.platform.store, app["id"])
    return Reply([_render(f, rows.get(f.name), app) for f in CATALOGUE.values()])


def show_feature(ctx: Ctx) -> Reply:
    app = ctx.app()
    feature = find_feature(ctx.param("feature"))
    return Reply(_render(feature, _row(ctx, app, feature), app))


def update_feature(ctx: Ctx) -> Reply:
    app = ctx.app()
    enabled = ctx.object_body().get("enabled")
    if not isinstance(enabled, bool):
        raise ApiError(422, "invalid_params", "enabled must be true or false.")
    feature = ctx.command(
        set_feature, ctx.platform.ledger, ctx.actor, ctx.app_id(app), ctx.param("feature"), enabled
    )
    return Reply(_render(feature, _row(ctx, app, feature), app))


def list_account_features(ctx: Ctx) -> Reply:
    return Reply([])


def account_feature(ctx: Ctx) -> Reply:
    raise not_found(f"Couldn't find that feature ({ctx.param('feature')}).")


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/features", endpoint(platform, list_features), methods=["GET"]),
        Route("/apps/{app}/features/{feature}", endpoint(platform, show_feature), methods=["GET"]),
        Route(
            "/apps/{app}/features/{feature}", endpoint(platform, update_feature), methods=["PATCH"]
        ),
        Route("/account/features", endpoint(platform, list_account_features), methods=["GET"]),
        Route(
            "/account/features/{feature}",
            endpoint(platform, account_feature),
            methods=["GET", "PATCH"],
        ),
    ]
