"""Heroku Teams: teams and their members (`heroku teams`, `members`, `members:add/set/remove`),
team apps (`apps:create --team`, `apps -t`, `apps:join`, `apps:lock/unlock`) and per-user app
permissions on them (`access:add --permissions`, `access:update`). Commands go to the ledger;
who may do what is the Team aggregate's (members) and the access policy's (apps) decision.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.routes.apps import _app as render_app
from waka.api.routes.collaborators import _all as app_collaborators
from waka.api.routes.collaborators import _one as app_collaborator
from waka.api.routes.collaborators import remove_collaborator
from waka.bootstrap import Platform
from waka.domain import access
from waka.domain.team import ROLES
from waka.projections.apps import find_app
from waka.projections.store import Row
from waka.projections.teams import (
    apps_of_team,
    find_team,
    members_of,
    role_in,
    team_of_app,
    teams_of_user,
)

FEATURES = {
    "org-access-controls": "Per-user app permissions: view, deploy, operate, manage.",
}


def _team_shape(row: Row, role: str | None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "role": role,
        "type": "team",
        "default": False,
        "membership_limit": None,
        "provisioned_licenses": False,
        "credit_card_collections": False,
        "enterprise_account": None,
        "identity_provider": None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _member_shape(row: Row) -> dict[str, Any]:
    return {
        "id": render.catalogue_id("team-member", f"{row['team_id']}:{row['user_id']}"),
        "email": row["email"],
        "role": row["role"],
        "federated": False,
        "identity_provider": None,
        "two_factor_authentication": False,
        "user": {"id": row["user_id"], "email": row["email"], "name": None},
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _team(ctx: Ctx) -> tuple[Row, str]:
    """The team in the path and the user's role in it; 404 for who is not in it (as Heroku)."""
    row = find_team(ctx.platform.store, ctx.param("team"))
    role = role_in(ctx.platform.store, row["id"], ctx.user["id"]) if row else None
    if row is None or role is None:
        raise not_found("Couldn't find that team.")
    return row, role


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "invalid_params", f"{key} is required.")
    return value.strip()


def list_teams(ctx: Ctx) -> Reply:
    rows = teams_of_user(ctx.platform.store, ctx.user["id"])
    return Reply([_team_shape(r, r["role"]) for r in rows])


def create_team(ctx: Ctx) -> Reply:
    name = _string(ctx.object_body(), "name")
    team = ctx.command(ctx.platform.ledger.create_team, ctx.actor, name)
    row = find_team(ctx.platform.store, str(team.id))
    assert row is not None
    return Reply(_team_shape(row, "admin"), 201)


def show_team(ctx: Ctx) -> Reply:
    row, role = _team(ctx)
    return Reply(_team_shape(row, role))


def team_features(ctx: Ctx) -> Reply:
    row, _ = _team(ctx)
    return Reply(
        [
            {
                "id": render.catalogue_id("team-feature", name),
                "name": name,
                "display_name": name,
                "description": description,
                "doc_url": "",
                "enabled": True,
                "state": "general",
                "feedback_email": "",
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
            }
            for name, description in FEATURES.items()
        ]
    )


def permissions(ctx: Ctx) -> Reply:
    return Reply(
        [{"name": p, "description": access.PERMISSION_DESCRIPTIONS[p]} for p in access.PERMISSIONS]
    )


def list_members(ctx: Ctx) -> Reply:
    row, _ = _team(ctx)
    return Reply([_member_shape(m) for m in members_of(ctx.platform.store, row["id"])])


def _member_reply(ctx: Ctx, team: Row, email: str, status: int) -> Reply:
    found = [m for m in members_of(ctx.platform.store, team["id"]) if m["email"] == email]
    return Reply(_member_shape(found[0]), status)


def set_member(ctx: Ctx) -> Reply:
    """PUT adds or changes a member; PATCH only changes one (`members:set`)."""
    team, _ = _team(ctx)
    body = ctx.object_body()
    email, role = _string(body, "email"), body.get("role")
    if role not in ROLES:
        raise ApiError(422, "invalid_params", f"role must be one of {', '.join(ROLES)}.")
    known = {m["email"] for m in members_of(ctx.platform.store, team["id"])}
    if ctx.request.method == "PATCH" and email not in known:
        raise ApiError(404, "not_found", f"{email} is not a member of the team {team['name']}.")
    user = ctx.command(ctx.platform.ledger.set_team_member, ctx.actor, team["name"], email, role)
    return _member_reply(ctx, team, user["email"], 200 if email in known else 201)


def remove_member(ctx: Ctx) -> Reply:
    team, _ = _team(ctx)
    email = ctx.param("member")
    members = {m["email"]: m for m in members_of(ctx.platform.store, team["id"])}
    shown = _member_shape(members[email]) if email in members else None
    ctx.command(ctx.platform.ledger.remove_team_member, ctx.actor, team["name"], email)
    return Reply(shown)


def invitations(ctx: Ctx) -> Reply:
    _team(ctx)
    return Reply([])  # members are added at once: waka has no invitations to accept


def team_apps(ctx: Ctx) -> Reply:
    team, _ = _team(ctx)
    return Reply([render_app(ctx, r) for r in apps_of_team(ctx.platform.store, team["id"])])


def create_team_app(ctx: Ctx) -> Reply:
    body = ctx.object_body()
    team = body.get("team") or body.get("organization")
    if isinstance(team, dict):
        team = team.get("name") or team.get("id")
    if not isinstance(team, str) or not team:
        raise ApiError(422, "invalid_params", "team is required.")
    names = {}
    for key in ("name", "region", "stack"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ApiError(422, "invalid_params", f"{key} must be a string.")
        names[key] = value
    row = find_team(ctx.platform.store, team)
    created = ctx.command(
        ctx.platform.ledger.create_app,
        ctx.actor_of_request,  # the same request again is not a second app
        names["name"],
        names["region"],
        names["stack"],
        row["name"] if row else team,
    )
    app = find_app(ctx.platform.store, str(created.id))
    assert app is not None
    return Reply(render_app(ctx, app), 201)


def _team_app(ctx: Ctx, permission: str = access.VIEW) -> Row:
    app = ctx.app(permission)
    if team_of_app(ctx.platform.store, app["id"]) is None:
        raise ApiError(422, "invalid_params", f"{app['name']} is not a team app.")
    return app


def show_team_app(ctx: Ctx) -> Reply:
    return Reply(render_app(ctx, _team_app(ctx)))


def update_team_app(ctx: Ctx) -> Reply:
    """`apps:lock` / `apps:unlock` ({"locked"}), or `apps:transfer TEAM` ({"owner"})."""
    body = ctx.object_body()
    if "owner" in body:
        return _transfer_to_team(ctx, body)
    app = _team_app(ctx)
    if set(body) - {"locked"} or not isinstance(body.get("locked"), bool):
        raise ApiError(422, "invalid_params", 'Send {"locked": true or false}.')
    ctx.command(ctx.platform.ledger.set_app_locked, ctx.actor, ctx.app_id(app), body["locked"])
    updated = find_app(ctx.platform.store, app["id"])
    assert updated is not None
    return Reply(render_app(ctx, updated))


def _transfer_to_team(ctx: Ctx, body: dict[str, Any]) -> Reply:
    app = ctx.app(access.MANAGE)
    owner = body["owner"]
    if isinstance(owner, dict):
        owner = owner.get("name") or owner.get("id")
    if not isinstance(owner, str) or not owner:
        raise ApiError(422, "invalid_params", "owner must be a team's name.")
    if "@" in owner:
        raise ApiError(
            422, "invalid_params", "waka moves team apps into teams only, not back to a person."
        )
    team = find_team(ctx.platform.store, owner)
    ctx.command(
        ctx.platform.ledger.transfer_to_team,
        ctx.actor,
        ctx.app_id(app),
        team["name"] if team else owner,
    )
    moved = find_app(ctx.platform.store, app["id"])
    assert moved is not None
    return Reply(render_app(ctx, moved))


def list_team_app_collaborators(ctx: Ctx) -> Reply:
    app = _team_app(ctx)
    return Reply(app_collaborators(ctx, app))


def add_team_app_collaborator(ctx: Ctx) -> Reply:
    """`access:add --permissions` (an admin) and `apps:join` (a member, themselves)."""
    app = _team_app(ctx)
    body = ctx.object_body()
    user = body.get("user")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    if not isinstance(user, str) or not user.strip():
        raise ApiError(422, "invalid_params", "user is required: the email of a waka user.")
    granted = access.check_permissions(body["permissions"]) if "permissions" in body else None
    added = ctx.command(
        ctx.platform.ledger.add_collaborator, ctx.actor, ctx.app_id(app), user.strip(), granted
    )
    return Reply(app_collaborator(ctx, app, added["id"]), 201)


def update_team_app_collaborator(ctx: Ctx) -> Reply:
    """`access:update`: the permissions of someone who already has access."""
    app = _team_app(ctx, access.MANAGE)
    body = ctx.object_body()
    if "permissions" not in body:
        raise ApiError(422, "invalid_params", "permissions is required.")
    granted = access.check_permissions(body["permissions"])
    shown = app_collaborator(ctx, app, ctx.param("collaborator"))
    ctx.command(
        ctx.platform.ledger.add_collaborator,
        ctx.actor,
        ctx.app_id(app),
        shown["user"]["email"],
        granted,
    )
    return Reply(app_collaborator(ctx, app, shown["user"]["id"]))


def routes(platform: Platform) -> list[Route]:
    def on(path: str, handler: Any, method: str) -> Route:
        return Route(path, endpoint(platform, handler), methods=[method])

    collaborators = "/teams/apps/{app}/collaborators"
    return [
        on("/teams", list_teams, "GET"),
        on("/teams", create_team, "POST"),
        on("/teams/permissions", permissions, "GET"),
        on("/teams/apps", create_team_app, "POST"),
        on("/teams/apps/{app}", show_team_app, "GET"),
        on("/teams/apps/{app}", update_team_app, "PATCH"),
        on(collaborators, list_team_app_collaborators, "GET"),
        on(collaborators, add_team_app_collaborator, "POST"),
        on(collaborators + "/{collaborator}", update_team_app_collaborator, "PATCH"),
        on(collaborators + "/{collaborator}", remove_collaborator, "DELETE"),
        on("/teams/{team}", show_team, "GET"),
        on("/teams/{team}/features", team_features, "GET"),
        on("/teams/{team}/members", list_members, "GET"),
        on("/teams/{team}/members", set_member, "PUT"),
        on("/teams/{team}/members", set_member, "PATCH"),
        on("/teams/{team}/members/{member}", remove_member, "DELETE"),
        on("/teams/{team}/invitations", invitations, "GET"),
        on("/teams/{team}/apps", team_apps, "GET"),
    ]
