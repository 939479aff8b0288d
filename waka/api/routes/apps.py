"""Apps: create, list, info, update (name, maintenance), delete."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.ranges import paginate
from waka.bootstrap import Platform
from waka.domain import access
from waka.domain.app import App
from waka.projections.acm import acm_enabled
from waka.projections.apps import find_app
from waka.projections.base import iso
from waka.projections.builds import find_slug
from waka.projections.collaborators import apps_of_user
from waka.projections.store import Row
from waka.projections.teams import team_of_app

RANGE_FIELDS = {
    "id": lambda a: a["id"],
    "name": lambda a: a["name"],
    "updated_at": lambda a: a["updated_at"],
}


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, dict):  # region/stack may be given as {"name": ...}
        value = value.get("name")
    if not isinstance(value, str):
        raise ApiError(422, "invalid_params", f"{key} must be a string.")
    return value


def _app(ctx: Ctx, row: Row) -> dict[str, Any]:
    """The app as Heroku shows it, with its live slug's size (`apps:info`'s Slug Size)."""
    slug = row["slug_id"] and find_slug(ctx.platform.store, row["id"], row["slug_id"])
    shown = render.app(row, ctx.platform.settings, slug["size"] if slug else None)
    team = team_of_app(ctx.platform.store, row["id"])
    if team is not None:
        shown = {**shown, "team": {"id": team["id"], "name": team["name"]}}
        shown["locked"] = bool(team["locked"])
    return {**shown, "acm": acm_enabled(ctx.platform.store, row["id"])}


def create_app(ctx: Ctx) -> Reply:
    body = ctx.object_body()
    created = ctx.command(
        ctx.platform.ledger.create_app,
        ctx.actor_of_request,  # the same request again is not a second app
        _optional_str(body, "name"),
        _optional_str(body, "region"),
        _optional_str(body, "stack"),
    )
    row = find_app(ctx.platform.store, str(created.id))
    assert row is not None  # the projector has just caught up with the creation
    return Reply(_app(ctx, row), 201)


def list_apps(ctx: Ctx) -> Reply:
    apps = [_app(ctx, r) for r in apps_of_user(ctx.platform.store, ctx.user["id"])]
    status, page, headers = paginate(apps, ctx.request.headers.get("range"), RANGE_FIELDS)
    return Reply(page, status, headers)


def list_user_apps(ctx: Ctx) -> Reply:
    if ctx.param("user") not in ("~", ctx.user["id"], ctx.user["email"]):
        raise not_found("Couldn't find that user.")
    return list_apps(ctx)


def show_app(ctx: Ctx) -> Reply:
    return Reply(_app(ctx, ctx.app()))


def update_app(ctx: Ctx) -> Reply:
    row = ctx.app()
    body = ctx.object_body()
    unknown = set(body) - {"name", "maintenance", "build_stack"}
    if unknown:
        raise ApiError(
            422, "invalid_params", f"Unknown app attributes: {', '.join(sorted(unknown))}."
        )
    if "name" in body:  # only who manages the app renames it, before anything changes
        ctx.require(row, access.MANAGE)
    app_id, ledger = ctx.app_id(row), ctx.platform.ledger
    if "build_stack" in body:
        stack = _optional_str(body, "build_stack")
        if stack != row["stack"]:
            raise ApiError(422, "invalid_params", f"Couldn't find that stack: {stack}.")
    if "maintenance" in body:
        ctx.command(ledger.set_maintenance, ctx.actor, app_id, body["maintenance"])
    if "name" in body:
        ctx.command(ledger.rename_app, ctx.actor, app_id, body["name"])
    updated = find_app(ctx.platform.store, row["id"])
    assert updated is not None
    return Reply(_app(ctx, updated))


def destroyed_row(app: App) -> Row:
    """A destroyed app, gone from the read model, as its row was: what a destroy sent again
    answers (the CLI reads nothing of it)."""
    return {
        "id": str(app.id),
        "name": app.name,
        "owner_email": app.owner["email"],
        "owner_id": app.owner["id"],
        "region": app.region,
        "stack": app.stack,
        "maintenance": app.maintenance,
        "created_at": iso(app.created_on),
        "updated_at": iso(app.modified_on),
        "released_at": None,
    }


def delete_app(ctx: Ctx) -> Reply:
    ident, ledger = ctx.param("app"), ctx.platform.ledger
    if find_app(ctx.platform.store, ident) is None:
        destroyed = ledger.destroyed_by(ctx.actor_of_request, ident)
        if destroyed is not None:  # this request sent again: the app as it was
            return Reply(render.app(destroyed_row(destroyed), ctx.platform.settings))
    row = ctx.app()
    ctx.command(ledger.destroy_app, ctx.actor_of_request, ctx.app_id(row))
    return Reply(_app(ctx, row))


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps", endpoint(platform, list_apps), methods=["GET"]),
        Route("/apps", endpoint(platform, create_app), methods=["POST"]),
        Route("/users/{user}/apps", endpoint(platform, list_user_apps), methods=["GET"]),
        Route("/apps/{app}", endpoint(platform, show_app), methods=["GET"]),
        Route("/apps/{app}", endpoint(platform, update_app), methods=["PATCH"]),
        Route("/apps/{app}", endpoint(platform, delete_app), methods=["DELETE"]),
    ]
