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


def test_a_personal_transfer_is_the_recipients_once_accepted(people) -> None:
    owner, mate, stranger = people
    owner.post("/apps/shop/collaborators", json={"user": "mate@example.com"})
    # only the owner offers the app; a collaborator may not
    offer = {"app": "shop", "recipient": "mate@example.com"}
    assert error_of(mate.post("/account/app-transfers", json=offer)) == DENIED
    made = owner.post("/account/app-transfers", json=offer)
    assert made.status_code == 201
    transfer = made.json()
    assert transfer["state"] == "pending" and transfer["recipient"]["email"] == "mate@example.com"
    assert transfer["owner"]["email"] == "owner@example.com" and transfer["app"]["name"] == "shop"
    assert [t["id"] for t in mate.get("/account/app-transfers").json()] == [transfer["id"]]
    assert stranger.get("/account/app-transfers").json() == []
    assert (
        error_of(
            stranger.patch(f"/account/app-transfers/{transfer['id']}", json={"state": "accepted"})
        )[0]
        == 404
    )
    assert (
        error_of(
            owner.patch(f"/account/app-transfers/{transfer['id']}", json={"state": "accepted"})
        )[0]
        == 404
    )
    assert owner.get("/apps/shop").json()["owner"]["email"] == "owner@example.com"

    accepted = mate.patch(f"/account/app-transfers/{transfer['id']}", json={"state": "accepted"})
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    assert mate.get("/apps/shop").json()["owner"]["email"] == "mate@example.com"
    assert error_of(owner.get("/apps/shop")) == DENIED  # the old owner holds nothing now
    assert [c["user"]["email"] for c in mate.get("/apps/shop/collaborators").json()] == [
        "mate@example.com"
    ]
    assert mate.delete("/apps/shop").status_code == 200  # theirs to destroy


def test_a_transfer_declined_or_cancelled_changes_nothing(people) -> None:
    owner, mate, _ = people
    offer = {"app": "shop", "recipient": "mate@example.com"}
    first = owner.post("/account/app-transfers", json=offer).json()
    declined = mate.patch(f"/account/app-transfers/{first['id']}", json={"state": "declined"})
    assert declined.json()["state"] == "declined"
    second = owner.post("/account/app-transfers", json=offer).json()
    assert owner.delete(f"/account/app-transfers/{second['id']}").json()["state"] == "cancelled"
    late = mate.patch(f"/account/app-transfers/{second['id']}", json={"state": "accepted"})
    assert error_of(late)[:2] == (422, "invalid_params")
    assert owner.get("/apps/shop").json()["owner"]["email"] == "owner@example.com"
    bad = owner.post(
        "/account/app-transfers", json={"app": "shop", "recipient": "owner@example.com"}
    )
    assert error_of(bad)[:2] == (422, "invalid_params")
    assert error_of(owner.post("/account/app-transfers", json={"app": "shop"}))[:2] == (
        422,
        "invalid_params",
    )
