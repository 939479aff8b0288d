"""App collaborators (`heroku access`, `access:add`, `access:remove`): the owner, and the users
granted access. Grants and revokes are ledger commands; the access policy decides who may.
"""

from __future__ import annotations

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform
from waka.domain import access
from waka.projections.collaborators import collaborators_of
from waka.projections.store import Row
from waka.projections.teams import members_of, team_of_app


def _all(ctx: Ctx, app: Row) -> list[dict]:
    """The owner, then who was granted access; on a team app with their role in the team."""
    store = ctx.platform.store
    team = team_of_app(store, app["id"])
    roles = {m["user_id"]: m["role"] for m in members_of(store, team["id"])} if team else {}
    granted = [render.granted_collaborator(app, c) for c in collaborators_of(store, app["id"])]
    for shown in granted:
        shown["role"] = roles.get(shown["user"]["id"], shown["role"])
    return [render.collaborator(app), *granted]


def _one(ctx: Ctx, app: Row, ident: str) -> dict:
    for shown in _all(ctx, app):
        if ident in (shown["id"], shown["user"]["id"], shown["user"]["email"]):
            return shown
    raise ApiError(404, "not_found", "Couldn't find that collaborator.", resource="collaborator")


def list_collaborators(ctx: Ctx) -> Reply:
    return Reply(_all(ctx, ctx.app()))


def show_collaborator(ctx: Ctx) -> Reply:
    return Reply(_one(ctx, ctx.app(), ctx.param("collaborator")))


def add_collaborator(ctx: Ctx) -> Reply:
    app = ctx.app(access.MANAGE)
    body = ctx.object_body()
    user = body.get("user")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    if not isinstance(user, str) or not user.strip():
        raise ApiError(422, "invalid_params", "user is required: the email of a waka user.")
    if "silent" in body and not isinstance(body["silent"], bool):
        raise ApiError(422, "invalid_params", "silent must be true or false.")
    permissions = None
    if "permissions" in body:
        permissions = access.check_permissions(body["permissions"])
    added = ctx.command(
        ctx.platform.ledger.add_collaborator, ctx.actor, ctx.app_id(app), user.strip(), permissions
    )
    return Reply(_one(ctx, app, added["id"]), 201)


def remove_collaborator(ctx: Ctx) -> Reply:
    ident = ctx.param("collaborator")
    leaving = ident in (ctx.user["id"], ctx.user["email"])
    app = ctx.app(access.VIEW if leaving else access.MANAGE)  # anyone may leave an app
    shown = _one(ctx, app, ident)
    if shown["role"] == "owner":
        raise ApiError(422, "invalid_params", "The owner cannot be removed from the app.")
    ctx.command(
        ctx.platform.ledger.remove_collaborator, ctx.actor, ctx.app_id(app), shown["user"]["id"]
    )
    return Reply(shown)


def pipeline_coupling(ctx: Ctx) -> Reply:
    ctx.app()
    raise not_found("This app is not in a pipeline.")


def routes(platform: Platform) -> list[Route]:
    one = "/apps/{app}/collaborators/{collaborator}"
    return [
        Route("/apps/{app}/collaborators", endpoint(platform, list_collaborators), methods=["GET"]),
        Route("/apps/{app}/collaborators", endpoint(platform, add_collaborator), methods=["POST"]),
        Route(one, endpoint(platform, show_collaborator), methods=["GET"]),
        Route(one, endpoint(platform, remove_collaborator), methods=["DELETE"]),
        Route(
            "/apps/{app}/pipeline-couplings", endpoint(platform, pipeline_coupling), methods=["GET"]
        ),
    ]
