"""Heroku Teams through the Platform API on both backends: teams, members and roles, team apps,
locking, per-user permissions; the access policy deciding what each role may do."""

from __future__ import annotations

import pytest

from tests.test_api import Api, error_of
from waka import audit
from waka.bootstrap import Platform


@pytest.fixture
def crew(platform: Platform) -> dict[str, Api]:
    people = {who: Api(platform, f"{who}@example.com") for who in ("admin", "dev", "viewer", "out")}
    made = people["admin"].post("/teams", json={"name": "acme"})
    assert made.status_code == 201 and made.json()["role"] == "admin"
    for who, role in (("dev", "member"), ("viewer", "viewer")):
        added = people["admin"].put(
            "/teams/acme/members", json={"email": f"{who}@example.com", "role": role}
        )
        assert added.status_code == 201 and added.json()["role"] == role
    return people


def test_teams_members_and_roles(crew) -> None:
    admin, dev, viewer, out = crew["admin"], crew["dev"], crew["viewer"], crew["out"]
    assert [(t["name"], t["role"]) for t in dev.get("/teams").json()] == [("acme", "member")]
    assert out.get("/teams").json() == []
    assert error_of(out.get("/teams/acme"))[:2] == (404, "not_found")
    members = admin.get("/teams/acme/members").json()
    assert [(m["email"], m["role"]) for m in members] == [
        ("admin@example.com", "admin"),
        ("dev@example.com", "member"),
        ("viewer@example.com", "viewer"),
    ]
    assert error_of(
        dev.put("/teams/acme/members", json={"email": "out@example.com", "role": "admin"})
    )[:2] == (403, "forbidden")
    bad = admin.put("/teams/acme/members", json={"email": "out@example.com", "role": "boss"})
    assert error_of(bad)[:2] == (422, "invalid_params")
    missing = admin.patch(
        "/teams/acme/members", json={"email": "out@example.com", "role": "viewer"}
    )
    assert error_of(missing)[0] == 404
    assert error_of(admin.delete("/teams/acme/members/admin@example.com"))[:2] == (
        422,
        "invalid_params",
    )  # the last admin stays
    assert admin.post("/teams", json={"name": "acme"}).status_code == 409
    assert (
        admin.patch(
            "/teams/acme/members", json={"email": "viewer@example.com", "role": "member"}
        ).json()["role"]
        == "member"
    )
    assert admin.delete("/teams/acme/members/viewer@example.com").status_code == 200
    assert viewer.get("/teams").json() == []


def test_what_each_role_may_do_to_a_team_app(crew) -> None:
    admin, dev, viewer, out = crew["admin"], crew["dev"], crew["viewer"], crew["out"]
    created = dev.post("/teams/apps", json={"name": "rocket", "team": "acme"})
    assert created.status_code == 201, created.json()
    app = created.json()
    assert app["team"]["name"] == "acme" and app["owner"]["email"] == "acme@herokumanager.com"
    assert app["locked"] is False
    assert error_of(viewer.post("/teams/apps", json={"name": "nope", "team": "acme"}))[:2] == (
        403,
        "forbidden",
    )
    assert error_of(out.post("/teams/apps", json={"name": "nope", "team": "acme"}))[0] == 404
    assert [a["name"] for a in viewer.get("/teams/acme/apps").json()] == ["rocket"]

    denied = (403, "forbidden", "You do not have access to the app rocket.")
    # a viewer reads but cannot change anything
    assert viewer.get("/apps/rocket/config-vars").status_code == 200
    assert error_of(viewer.patch("/apps/rocket/config-vars", json={"A": "1"})) == denied
    assert error_of(viewer.patch("/apps/rocket", json={"maintenance": True})) == denied
    # a member works on an unlocked app, but does not manage it
    assert dev.patch("/apps/rocket/config-vars", json={"A": "1"}).status_code == 200
    assert error_of(dev.delete("/apps/rocket")) == denied
    assert error_of(dev.patch("/teams/apps/rocket", json={"locked": True})) == denied
    assert error_of(out.get("/apps/rocket")) == denied

    # locked: members only hold what the app grants them; the admin grants per user
    assert admin.patch("/teams/apps/rocket", json={"locked": True}).json()["locked"] is True
    assert error_of(dev.patch("/apps/rocket/config-vars", json={"A": "2"})) == denied
    granted = admin.post(
        "/teams/apps/rocket/collaborators",
        json={"user": "dev@example.com", "permissions": ["view", "deploy"]},
    )
    assert granted.status_code == 201
    assert [p["name"] for p in granted.json()["permissions"]] == ["view", "deploy"]
    assert granted.json()["role"] == "member"
    assert dev.patch("/apps/rocket/config-vars", json={"A": "2"}).status_code == 200
    assert error_of(dev.patch("/apps/rocket", json={"maintenance": True})) == denied  # no operate
    updated = admin.patch(
        "/teams/apps/rocket/collaborators/dev@example.com",
        json={"permissions": ["operate"]},
    )
    assert [p["name"] for p in updated.json()["permissions"]] == ["view", "operate"]
    assert dev.patch("/apps/rocket", json={"maintenance": True}).status_code == 200
    assert error_of(dev.patch("/apps/rocket/config-vars", json={"A": "3"})) == denied
    # the admin holds everything
    assert admin.patch("/apps/rocket", json={"name": "rocket2"}).status_code == 200

    log = [(e.actor, e.action) for e in audit.query(admin.platform.ledger, team="acme")]
    assert ("dev@example.com", "Create app rocket") in log
    assert ("admin@example.com", "Lock app") in log
    assert ("admin@example.com", "Set dev@example.com's role in the team to member") in log
    assert ("admin@example.com", "Change dev@example.com's access to view, operate") in log


def test_a_member_joins_and_leaves_an_unlocked_app(crew) -> None:
    admin, dev = crew["admin"], crew["dev"]
    admin.post("/teams/apps", json={"name": "shuttle", "team": "acme"})
    joined = dev.post("/teams/apps/shuttle/collaborators", json={"user": "dev@example.com"})
    assert joined.status_code == 201
    people = {c["user"]["email"] for c in dev.get("/teams/apps/shuttle/collaborators").json()}
    assert "dev@example.com" in people
    assert dev.delete("/apps/shuttle/collaborators/dev@example.com").status_code == 200
    admin.patch("/teams/apps/shuttle", json={"locked": True})
    refused = dev.post("/teams/apps/shuttle/collaborators", json={"user": "dev@example.com"})
    assert error_of(refused)[:2] == (403, "forbidden")


def test_a_personal_app_moves_into_a_team_its_owner_is_in(crew) -> None:
    dev, viewer, out = crew["dev"], crew["viewer"], crew["out"]
    assert dev.post("/apps", json={"name": "solo"}).status_code == 201
    assert out.post("/apps", json={"name": "outside"}).status_code == 201
    refused = out.patch("/teams/apps/outside", json={"owner": "acme"})
    assert error_of(refused)[0] == 404  # not in the team: no such team for them
    moved = dev.patch("/teams/apps/solo", json={"owner": "acme"})
    assert moved.status_code == 200, moved.json()
    assert moved.json()["team"]["name"] == "acme"
    assert moved.json()["owner"]["email"] == "acme@herokumanager.com"
    assert viewer.get("/apps/solo").status_code == 200  # the team sees it now
    assert error_of(dev.delete("/apps/solo"))[:2] == (403, "forbidden")  # the team's to manage


def test_commands_outside_the_ledger_weigh_team_roles_too(crew) -> None:
    """ACM and webhooks check access in their own modules: a member of an unlocked team app
    may use them (their team role reaches the policy), a viewer may not."""
    admin, dev, viewer = crew["admin"], crew["dev"], crew["viewer"]
    admin.post("/teams/apps", json={"name": "hooked", "team": "acme"})
    assert dev.post("/apps/hooked/acm").status_code == 200
    hook = {"include": ["api:release"], "level": "notify", "url": "https://example.com/hook"}
    assert dev.post("/apps/hooked/webhooks", json=hook).status_code == 201
    assert error_of(viewer.post("/apps/hooked/webhooks", json=hook))[:2] == (403, "forbidden")
    assert error_of(viewer.delete("/apps/hooked/acm"))[:2] == (403, "forbidden")
