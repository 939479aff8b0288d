"""The access policy: may this user do that to an app? One pure decision that every entry point
asks (the API's routes, git push, log sessions, `heroku run`, the Data API, add-on attachments,
and the ledger's commands themselves).

Heroku's vocabulary: an app's permissions are `view`, `deploy`, `operate` and `manage`. The
owner holds all four. A collaborator on a personal app holds view, deploy and operate: they
push, change config, scale, run and read logs, but only the owner manages the app (renames,
destroys, transfers it, adds and removes collaborators).

A team app is owned by its team. There a user's team role counts too: an `admin` holds all four
permissions on every app of the team; a `member` holds view, deploy and operate on the unlocked
ones (a locked app only what it grants them); a `viewer` only ever views; a `collaborator` holds
what the app grants them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from waka.domain.errors import Forbidden, InvalidParams
from waka.domain.team import ADMIN, MEMBER, VIEWER

VIEW, DEPLOY, OPERATE, MANAGE = "view", "deploy", "operate", "manage"
PERMISSIONS = (VIEW, DEPLOY, OPERATE, MANAGE)
COLLABORATOR = (VIEW, DEPLOY, OPERATE)  # a personal app's collaborator: all but manage

PERMISSION_DESCRIPTIONS = {
    VIEW: "Can view the app and its settings, releases, logs and add-ons.",
    DEPLOY: "Can deploy, change config vars, roll back, run one-off dynos, manage add-ons.",
    OPERATE: "Can scale, restart and put the app in maintenance.",
    MANAGE: "Can rename, destroy and transfer the app and manage who has access.",
}


@dataclass(frozen=True)
class AppAccess:
    """What the policy needs to know of an app: its name, owner and granted permissions."""

    name: str
    owner_id: str
    grants: Mapping[str, Sequence[str]] = field(default_factory=dict)  # user id -> permissions
    team_roles: Mapping[str, str] = field(default_factory=dict)  # user id -> role in its team
    locked: bool = False  # a team app only its grants open to members


def permissions_of(access: AppAccess, user_id: str) -> frozenset[str]:
    role = access.team_roles.get(user_id)
    if user_id and (user_id == access.owner_id or role == ADMIN):
        return frozenset(PERMISSIONS)
    if role == VIEWER:
        return frozenset({VIEW})
    granted = set(access.grants.get(user_id, ()))
    if role == MEMBER and not access.locked:
        granted.update(COLLABORATOR)
    return frozenset(granted)


def allows(access: AppAccess, user_id: str, permission: str) -> bool:
    return permission in permissions_of(access, user_id)


def denied(app_name: str) -> Forbidden:
    return Forbidden(f"You do not have access to the app {app_name}.")


def denied_team(team_name: str) -> Forbidden:
    return Forbidden(f"You do not have access to the team {team_name}.")


def check(access: AppAccess, user_id: str, permission: str) -> None:
    """Raise Heroku's 403 unless the user holds `permission` on the app."""
    if not allows(access, user_id, permission):
        raise denied(access.name)


def check_permissions(permissions: object) -> list[str]:
    """A grant's permissions as given (names or {"name"} objects): known names, with view."""
    if not isinstance(permissions, list):
        raise InvalidParams("permissions must be a list of permission names.")
    names = {p.get("name") if isinstance(p, dict) else p for p in permissions}
    unknown = sorted(str(n) for n in names if n not in PERMISSIONS)
    if unknown:
        raise InvalidParams(
            f"Unknown permissions: {', '.join(unknown)}. Choose from {', '.join(PERMISSIONS)}."
        )
    return [p for p in PERMISSIONS if p in names or p == VIEW]


# The permission an API request on an app needs, by method and the resource after the app.
# Reads (and opening a log session) need view; changes not named here need deploy.
_OPERATE_RESOURCES = {"formation", "formations", "dynos"}
_MANAGE_RESOURCES = {"collaborators", "transfer"}


def permission_for(method: str, path: str) -> str:
    """The permission a request on `/apps/{app}/...` needs (handlers may ask for more)."""
    parts = [p for p in path.split("/") if p]
    resource = parts[2] if len(parts) > 2 and parts[0] == "apps" else ""
    if method in ("GET", "HEAD") or (method == "POST" and resource == "log-sessions"):
        return VIEW
    if len(parts) == 2 and parts[0] == "apps":
        return MANAGE if method == "DELETE" else OPERATE  # a rename asks for manage itself
    if resource == "dynos" and method == "POST" and len(parts) == 3:
        return DEPLOY  # `heroku run`: a one-off dyno
    if resource in _OPERATE_RESOURCES:
        return OPERATE
    if resource in _MANAGE_RESOURCES:
        return MANAGE
    return DEPLOY
