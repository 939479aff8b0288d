"""Stacks (the one stack apps are on) and the API key as the user's OAuth authorization, in
the Platform API's shapes."""

from __future__ import annotations

import pytest

from tests.test_api import Api, error_of
from waka.bootstrap import Platform
from waka.domain import rules


@pytest.fixture
def api(platform: Platform) -> Api:
    return Api(platform)


def test_the_stack_apps_are_on_is_listed(api: Api) -> None:
    app = api.post("/apps", json={"name": "shop"}).json()
    stacks = api.get("/stacks").json()
    assert [s["name"] for s in stacks] == [rules.DEFAULT_STACK] == ["waka-bookworm"]
    (stack,) = stacks
    assert set(stack) == {"created_at", "default", "id", "name", "state", "updated_at"}
    assert (stack["default"], stack["state"]) == (True, "public")
    # The same id and name as the app's stack and build stack, found by either.
    assert app["stack"] == app["build_stack"] == {"id": stack["id"], "name": stack["name"]}
    assert api.get(f"/stacks/{stack['id']}").json() == stack
    assert api.get("/stacks/waka-bookworm").json() == stack
    assert api.get("/apps/shop/available-stacks").json() == stacks
    assert error_of(api.get("/stacks/heroku-24")) == (404, "not_found", "Couldn't find that stack.")
    assert error_of(api.get("/apps/nope/available-stacks"))[:2] == (404, "not_found")
    assert error_of(api.client.get("/stacks"))[:2] == (401, "unauthorized")


def test_the_api_key_is_the_users_one_authorization(api: Api) -> None:
    (authorization,) = api.get("/oauth/authorizations").json()
    assert authorization["access_token"] == {
        "expires_in": None,  # API keys do not expire: auth:token prints no warning
        "id": authorization["id"],
        "token": api.key,
    }
    assert authorization["user"]["email"] == "owner@example.com"
    assert authorization["scope"] == ["global"]
    assert api.get(f"/oauth/authorizations/{authorization['id']}").json() == authorization

    # Another user sees their own key only, and not the first one's authorization.
    other = Api(api.platform, "other@example.com")
    (theirs,) = other.get("/oauth/authorizations").json()
    assert theirs["access_token"]["token"] == other.key != api.key
    assert theirs["id"] != authorization["id"]
    found = other.get(f"/oauth/authorizations/{authorization['id']}")
    assert error_of(found)[:2] == (404, "not_found")

    # The key is the operator's to make and replace: it cannot be revoked here (other
    # authorizations can: tests/test_authorizations.py).
    gone = api.delete(f"/oauth/authorizations/{authorization['id']}")
    assert error_of(gone)[:2] == (405, "method_not_allowed")
    assert error_of(api.client.get("/oauth/authorizations"))[:2] == (401, "unauthorized")
