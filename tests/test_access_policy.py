"""The access policy (waka/domain/access.py): who may do what to an app, and which permission
each API request needs; and the App aggregate's grants and revokes as ledger events."""

from __future__ import annotations

import pytest
from eventsourcing.domain import Snapshot

from waka.domain import access
from waka.domain.access import DEPLOY, MANAGE, OPERATE, VIEW, AppAccess
from waka.domain.app import App
from waka.domain.errors import Conflict, Forbidden, InvalidParams, NotFound

OWNER = {"id": "u-owner", "email": "owner@example.com"}
MATE = {"id": "u-mate", "email": "mate@example.com"}
STRANGER = {"id": "u-stranger", "email": "stranger@example.com"}

SHOP = AppAccess(name="shop", owner_id=OWNER["id"], grants={MATE["id"]: [VIEW, DEPLOY, OPERATE]})


def test_the_owner_holds_every_permission() -> None:
    assert access.permissions_of(SHOP, OWNER["id"]) == {VIEW, DEPLOY, OPERATE, MANAGE}


def test_a_collaborator_holds_what_was_granted_and_not_manage() -> None:
    assert access.permissions_of(SHOP, MATE["id"]) == {VIEW, DEPLOY, OPERATE}
    assert not access.allows(SHOP, MATE["id"], MANAGE)


def test_a_stranger_and_the_empty_id_hold_nothing() -> None:
    assert access.permissions_of(SHOP, STRANGER["id"]) == frozenset()
    nobody_owns = AppAccess(name="x", owner_id="")
    assert not access.allows(nobody_owns, "", VIEW)  # the operator's id is no owner


def test_refusal_is_herokus() -> None:
    with pytest.raises(Forbidden, match=r"^You do not have access to the app shop\.$") as caught:
        access.check(SHOP, STRANGER["id"], VIEW)
    assert caught.value.error_id == "forbidden"
    access.check(SHOP, MATE["id"], DEPLOY)  # allowed: no error


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/apps/shop", VIEW),
        ("GET", "/apps/shop/config-vars", VIEW),
        ("POST", "/apps/shop/log-sessions", VIEW),
        ("PATCH", "/apps/shop", OPERATE),  # maintenance; a rename asks for manage itself
        ("DELETE", "/apps/shop", MANAGE),
        ("PATCH", "/apps/shop/config-vars", DEPLOY),
        ("POST", "/apps/shop/builds", DEPLOY),
        ("POST", "/apps/shop/releases", DEPLOY),
        ("POST", "/apps/shop/dynos", DEPLOY),  # heroku run
        ("DELETE", "/apps/shop/dynos", OPERATE),  # restart
        ("PATCH", "/apps/shop/formation", OPERATE),
        ("DELETE", "/apps/shop/formations/web", OPERATE),
        ("POST", "/apps/shop/collaborators", MANAGE),
        ("DELETE", "/apps/shop/collaborators/x@example.com", MANAGE),
    ],
)
def test_permission_for_a_request(method: str, path: str, needed: str) -> None:
    assert access.permission_for(method, path) == needed


def test_check_permissions_names_and_objects_always_with_view() -> None:
    assert access.check_permissions(["deploy", {"name": "operate"}]) == [VIEW, DEPLOY, OPERATE]
    with pytest.raises(InvalidParams, match="Unknown permissions: fly"):
        access.check_permissions(["fly"])
    with pytest.raises(InvalidParams):
        access.check_permissions("deploy")


def _names(app: App) -> list[str]:
    return [type(e).__name__ for e in app.collect_events()]


def test_grants_and_revokes_are_events_with_their_actor() -> None:
    app = App.create("shop", OWNER, "local", "heroku-24")
    app.collect_events()
    with pytest.raises(Forbidden):
        app.check_access(MATE)
    assert app.add_collaborator(MATE, [VIEW, DEPLOY, OPERATE], OWNER)
    assert not app.add_collaborator(MATE, [VIEW, DEPLOY, OPERATE], OWNER)  # nothing new
    app.check_access(MATE, OPERATE)
    with pytest.raises(Forbidden):
        app.check_access(MATE, MANAGE)
    assert app.add_collaborator(MATE, [VIEW], OWNER)  # narrowed: an update
    with pytest.raises(Forbidden):
        app.check_access(MATE, DEPLOY)
    events = app.collect_events()
    assert [type(e).__name__ for e in events] == ["CollaboratorAdded", "CollaboratorUpdated"]
    assert all(e.actor == OWNER for e in events)
    assert type(events[0]).__qualname__ == "App.CollaboratorAdded"  # a stable topic

    app.remove_collaborator(MATE["email"], OWNER)
    with pytest.raises(Forbidden):
        app.check_access(MATE, VIEW)
    assert _names(app) == ["CollaboratorRemoved"]


def test_only_who_manages_grants_and_anyone_may_leave() -> None:
    app = App.create("shop", OWNER, "local", "heroku-24")
    app.add_collaborator(MATE, list(access.COLLABORATOR), OWNER)
    with pytest.raises(Forbidden):
        app.add_collaborator(STRANGER, [VIEW], MATE)  # a collaborator does not manage
    with pytest.raises(Conflict):
        app.add_collaborator(OWNER, [VIEW], OWNER)
    with pytest.raises(NotFound):
        app.remove_collaborator(STRANGER["email"], OWNER)
    with pytest.raises(Forbidden):
        app.remove_collaborator(STRANGER["email"], MATE)  # no probing for who collaborates
    app.remove_collaborator(MATE["id"], MATE)  # leaving
    assert app.collaborators == {}


def test_an_app_from_a_snapshot_before_collaborators_has_none() -> None:
    app = App.create("shop", OWNER, "local", "heroku-24")
    app.__dict__.pop("_collaborators", None)  # as a snapshot from before collaborators
    assert app.collaborators == {}
    with pytest.raises(Forbidden):
        app.check_access(MATE, VIEW)


def _team_app(locked: bool, grants: dict | None = None) -> AppAccess:
    roles = {"u-admin": "admin", "u-dev": "member", "u-viewer": "viewer", "u-guest": "collaborator"}
    return AppAccess(
        name="rocket", owner_id="team:t1", grants=grants or {}, team_roles=roles, locked=locked
    )


def test_team_roles_on_an_unlocked_app() -> None:
    app = _team_app(locked=False)
    assert access.permissions_of(app, "u-admin") == set(access.PERMISSIONS)
    assert access.permissions_of(app, "u-dev") == {VIEW, DEPLOY, OPERATE}
    assert access.permissions_of(app, "u-viewer") == {VIEW}
    assert access.permissions_of(app, "u-guest") == frozenset()  # only what the app grants


def test_a_locked_app_opens_to_members_only_by_its_grants_and_a_viewer_only_views() -> None:
    grants = {"u-dev": [VIEW, DEPLOY], "u-viewer": [VIEW, DEPLOY, MANAGE], "u-guest": [VIEW]}
    app = _team_app(locked=True, grants=grants)
    assert access.permissions_of(app, "u-dev") == {VIEW, DEPLOY}
    assert access.permissions_of(app, "u-viewer") == {VIEW}  # a viewer changes nothing
    assert access.permissions_of(app, "u-guest") == {VIEW}
    assert access.permissions_of(_team_app(locked=True), "u-dev") == frozenset()
    assert access.permissions_of(app, "u-admin") == set(access.PERMISSIONS)


def test_grants_teams_and_locks_survive_a_snapshot() -> None:
    """A snapshot carries the aggregate's __dict__: the properties' state must be in it."""
    app = App.create("rocket", {"id": "team:t1", "email": "acme@herokumanager.com"}, "l", "s")
    app.join_team({"id": "t1", "name": "acme"}, OWNER)
    app.add_collaborator(MATE, [VIEW, DEPLOY], OWNER, {OWNER["id"]: "admin"})
    app.set_locked(True, OWNER, {OWNER["id"]: "admin"})
    restored = Snapshot.take(app).mutate(None)
    assert restored.team == {"id": "t1", "name": "acme"} and restored.locked
    assert restored.collaborators == {
        MATE["id"]: {"email": MATE["email"], "permissions": [VIEW, DEPLOY]}
    }
    assert access.permissions_of(restored.access({MATE["id"]: "member"}), MATE["id"]) == {
        VIEW,
        DEPLOY,
    }
