"""Collaborators through the Platform API on both backends: the access policy asked by every
route (403 `forbidden` in Heroku's words), grants and revokes, who may manage."""

from __future__ import annotations

import pytest

from tests.test_api import Api, error_of
from waka.bootstrap import Platform

DENIED = (403, "forbidden", "You do not have access to the app shop.")


@pytest.fixture
def people(platform: Platform) -> tuple[Api, Api, Api]:
    owner, mate, stranger = (
        Api(platform, f"{who}@example.com") for who in ("owner", "mate", "stranger")
    )
    assert owner.post("/apps", json={"name": "shop"}).status_code == 201
    return owner, mate, stranger


def test_a_collaborator_works_on_the_app_but_does_not_manage_it(people) -> None:
    owner, mate, stranger = people
    assert error_of(mate.get("/apps/shop")) == DENIED
    assert mate.get("/apps").json() == []

    added = owner.post("/apps/shop/collaborators", json={"user": "mate@example.com"})
    assert added.status_code == 201
    body = added.json()
    assert body["user"]["email"] == "mate@example.com" and body["role"] == "collaborator"
    assert [p["name"] for p in body["permissions"]] == ["view", "deploy", "operate"]
    assert body["app"]["name"] == "shop"

    listed = owner.get("/apps/shop/collaborators").json()
    assert [(c["user"]["email"], c["role"]) for c in listed] == [
        ("owner@example.com", "owner"),
        ("mate@example.com", "collaborator"),
    ]
    one = owner.get("/apps/shop/collaborators/mate@example.com")
    assert one.status_code == 200 and one.json()["id"] == body["id"]

    assert [a["name"] for a in mate.get("/apps").json()] == ["shop"]
    assert mate.get("/apps/shop").status_code == 200
    assert mate.patch("/apps/shop/config-vars", json={"FOO": "bar"}).status_code == 200
    assert owner.get("/apps/shop/config-vars").json()["FOO"] == "bar"
    releases = owner.get("/apps/shop/releases").json()
    assert releases[-1]["user"]["email"] == "mate@example.com"  # the actor is the collaborator
    assert mate.patch("/apps/shop", json={"maintenance": True}).json()["maintenance"] is True

    # only the owner renames, destroys and manages access
    assert error_of(mate.patch("/apps/shop", json={"name": "store"})) == DENIED
    assert error_of(mate.delete("/apps/shop")) == DENIED
    grant = mate.post("/apps/shop/collaborators", json={"user": "stranger@example.com"})
    assert error_of(grant) == DENIED
    assert error_of(mate.delete("/apps/shop/collaborators/owner@example.com")) == DENIED
    assert owner.get("/apps/shop").json()["name"] == "shop"

    # a stranger still sees nothing of it
    assert error_of(stranger.get("/apps/shop/config-vars")) == DENIED
    assert error_of(stranger.post("/apps/shop/log-sessions", json={})) == DENIED
    assert error_of(stranger.post("/apps/shop/dynos", json={"command": "ls"})) == DENIED
    assert stranger.get("/apps").json() == []


def test_revoking_takes_access_away_at_once(people) -> None:
    owner, mate, _ = people
    owner.post("/apps/shop/collaborators", json={"user": "mate@example.com"})
    removed = owner.delete("/apps/shop/collaborators/mate@example.com")
    assert removed.status_code == 200 and removed.json()["user"]["email"] == "mate@example.com"
    assert error_of(mate.patch("/apps/shop/config-vars", json={"A": "1"})) == DENIED
    assert mate.get("/apps").json() == []
    assert len(owner.get("/apps/shop/collaborators").json()) == 1


def test_a_collaborator_may_leave(people) -> None:
    owner, mate, _ = people
    owner.post("/apps/shop/collaborators", json={"user": "mate@example.com"})
    assert mate.delete("/apps/shop/collaborators/mate@example.com").status_code == 200
    assert error_of(mate.get("/apps/shop")) == DENIED


def test_bad_grants_are_refused_in_herokus_shape(people) -> None:
    owner, _, _ = people
    status, error_id, message = error_of(
        owner.post("/apps/shop/collaborators", json={"user": "nobody@example.com"})
    )
    assert (status, error_id) == (404, "not_found") and "nobody@example.com" in message
    assert error_of(owner.post("/apps/shop/collaborators", json={}))[:2] == (422, "invalid_params")
    assert error_of(owner.post("/apps/shop/collaborators", json=["x"]))[:2] == (
        422,
        "invalid_params",
    )
    owning = owner.post("/apps/shop/collaborators", json={"user": "owner@example.com"})
    assert error_of(owning)[:2] == (409, "conflict")
    perms = {"user": "mate@example.com", "permissions": ["fly"]}
    assert error_of(owner.post("/apps/shop/collaborators", json=perms))[:2] == (
        422,
        "invalid_params",
    )
    assert error_of(owner.delete("/apps/shop/collaborators/mate@example.com"))[0] == 404
    assert error_of(owner.delete("/apps/shop/collaborators/owner@example.com"))[:2] == (
        422,
        "invalid_params",
    )


def test_grants_survive_a_rebuild_of_the_read_models(platform: Platform, people) -> None:
    owner, _, _ = people
    owner.post("/apps/shop/collaborators", json={"user": "mate@example.com"})
    owner.post("/apps/shop/collaborators", json={"user": "stranger@example.com"})
    owner.delete("/apps/shop/collaborators/stranger@example.com")
    platform.projector.rebuild()
    emails = [c["user"]["email"] for c in owner.get("/apps/shop/collaborators").json()]
    assert emails == ["owner@example.com", "mate@example.com"]
