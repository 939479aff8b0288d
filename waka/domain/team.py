"""The Team aggregate: a team's members and their roles (Heroku Teams).

Its id is derived from the name, so a name is one team's. Roles are Heroku's: an `admin`
manages members and every app's access; a `member` works on the team's unlocked apps; a
`viewer` reads them; a `collaborator` holds only what an app grants them. What a role may do to
an app is the access policy's decision (waka/domain/access.py); this aggregate keeps who is
who, and that a team always keeps an admin.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from waka.domain import rules
from waka.domain.actors import Actor
from waka.domain.errors import Forbidden, InvalidParams, NotFound

NAMESPACE = uuid5(NAMESPACE_URL, "https://waka.invalid/teams")
ADMIN, MEMBER, VIEWER, COLLABORATOR = "admin", "member", "viewer", "collaborator"
ROLES = (ADMIN, MEMBER, VIEWER, COLLABORATOR)


def check_team_name(name: object) -> str:
    """Heroku's rule for team names is the app names' one."""
    if not isinstance(name, str):
        raise InvalidParams("name must be a string.")
    rules.check_app_name(name)
    return name


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidParams(f"role must be one of {', '.join(ROLES)}.")
    return str(role)


def owner_of(team_id: str, name: str) -> Actor:
    """How a team app's owner shows: the team, as Heroku's `<team>@herokumanager.com`."""
    return {"id": f"team:{team_id}", "email": f"{name}@herokumanager.com"}


class Team(Aggregate):
    @staticmethod
    def create_id(name: str, admin: Actor, actor: Actor) -> UUID:  # type: ignore[override]
        return Team.id_for(name)

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(NAMESPACE, name)

    @event("Created")
    def __init__(self, name: str, admin: Actor, actor: Actor) -> None:
        self.name = name
        # user id -> {"email", "role"}
        self.members: dict[str, dict[str, Any]] = {
            admin["id"]: {"email": admin["email"], "role": ADMIN}
        }

    def roles(self) -> dict[str, str]:
        return {uid: m["role"] for uid, m in self.members.items()}

    def role_of(self, user_id: str) -> str | None:
        held = self.members.get(user_id)
        return held["role"] if held else None

    def check_admin(self, actor: Actor) -> None:
        if self.role_of(actor["id"]) != ADMIN:
            raise Forbidden(f"You must be an admin of the team {self.name} to do this.")

    def check_member(self, actor: Actor) -> None:
        """Anyone in the team may read it; others are told it does not exist (as Heroku)."""
        if self.role_of(actor["id"]) is None:
            raise NotFound("Couldn't find that team.")

    def set_member(self, user: Actor, role: str, actor: Actor) -> bool:
        """Add a member or change their role; False if they already have it."""
        self.check_admin(actor)
        role = check_role(role)
        if self.role_of(user["id"]) == role:
            return False
        if self.role_of(user["id"]) == ADMIN and role != ADMIN:
            self._keep_an_admin(user["id"])
        self._set_member(user=user, role=role, actor=actor)
        return True

    @event("MemberSet")
    def _set_member(self, user: Actor, role: str, actor: Actor) -> None:
        self.members[user["id"]] = {"email": user["email"], "role": role}

    def remove_member(self, email: str, actor: Actor) -> Actor:
        """An admin removes anyone; a member may leave. The last admin stays."""
        found = next(
            (
                {"id": uid, "email": m["email"]}
                for uid, m in self.members.items()
                if email in (uid, m["email"])
            ),
            None,
        )
        if found is None or found["id"] != actor["id"]:
            self.check_admin(actor)
        if found is None:
            raise NotFound(f"{email} is not a member of the team {self.name}.")
        if self.role_of(found["id"]) == ADMIN:
            self._keep_an_admin(found["id"])
        self._remove_member(user=found, actor=actor)
        return found

    @event("MemberRemoved")
    def _remove_member(self, user: Actor, actor: Actor) -> None:
        self.members.pop(user["id"], None)

    def _keep_an_admin(self, leaving: str) -> None:
        if not any(m["role"] == ADMIN for uid, m in self.members.items() if uid != leaving):
            raise InvalidParams(f"The team {self.name} must keep at least one admin.")
