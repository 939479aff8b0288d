"""Sign-in and OAuth authorizations over the Platform API (in-process ASGI, both backends):
passwords, tokens with description, scope and expiry, rotation and revocation, sessions, and
the ledger and audit log that record them. tests/e2e/test_sign_in.py drives the real CLI."""

from __future__ import annotations

import base64
import time
from uuid import UUID

import pytest

from tests.test_api import ACCEPT, Api, error_of
from waka import audit
from waka.bootstrap import Platform
from waka.domain.authorization import Authorization, scope_allows
from waka.domain.passwords import hash_password, verify_password

PASSWORD = "correct horse battery"


@pytest.fixture
def api(platform: Platform) -> Api:
    client = Api(platform)
    platform.ledger.set_password("owner@example.com", PASSWORD)
    platform.projector.catch_up()
    return client


def basic(email: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{email}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}", "Accept": ACCEPT}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": ACCEPT}


def sign_in(api: Api, password: str = PASSWORD, **body) -> dict:
    body = {"description": "Heroku CLI login from laptop", "scope": ["global"], **body}
    made = api.client.post(
        "/oauth/authorizations", json=body, headers=basic("owner@example.com", password)
    )
    assert made.status_code == 201, made.text
    return made.json()


def test_passwords_are_salted_slow_hashes() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second  # a salt each
    assert first.startswith("scrypt$32768$8$1$") and PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    assert not verify_password(PASSWORD, "md5$whatever")


def test_signing_in_with_a_password_makes_a_session_token(api: Api) -> None:
    made = sign_in(api, expires_in=2592000)
    token = made["access_token"]["token"]
    assert token.startswith("HRKU-") and token != api.key
    assert made["user"]["email"] == "owner@example.com" and made["scope"] == ["global"]
    assert 2591990 < made["access_token"]["expires_in"] <= 2592000
    assert made["session"] == {"id": made["id"]}

    account = api.client.get("/account", headers=bearer(token))
    assert account.status_code == 200 and account.json()["email"] == "owner@example.com"
    # The token is not a password, and the password is not an API key.
    assert error_of(api.client.get("/account", headers=bearer(PASSWORD)))[0] == 401
    wrong = api.client.post(
        "/oauth/authorizations", json={}, headers=basic("owner@example.com", "not it at all")
    )
    assert error_of(wrong)[:2] == (401, "unauthorized")
    nobody = api.client.post(
        "/oauth/authorizations", json={}, headers=basic("nobody@example.com", PASSWORD)
    )
    assert error_of(nobody)[:2] == (401, "unauthorized")
    # A password signs in only: it is no key for the rest of the API.
    assert api.client.get("/apps", headers=basic("owner@example.com", PASSWORD)).status_code == 401

    sessions = api.client.get("/oauth/sessions", headers=bearer(token)).json()
    assert [s["id"] for s in sessions] == [made["id"]]
    listed = api.client.get("/oauth/authorizations", headers=bearer(token)).json()
    assert [a["id"] for a in listed][1:] == [made["id"]]
    mine = listed[1]["access_token"]["token"]
    assert mine == token  # shown whole to a request made with it (`heroku auth:token`)
    # ...and only by its ends to anyone else (the API key here), as the CLI matches it.
    seen = api.get("/oauth/authorizations").json()[1]["access_token"]["token"]
    assert seen == f"{token[:9]}{'*' * 10}{token[-4:]}"
    # The API key is the default authorization, without its key for a token's request.
    default = api.client.get("/oauth/authorizations/~", headers=bearer(token)).json()
    assert default["access_token"]["token"] is None
    assert api.get("/oauth/authorizations/~").json()["access_token"]["token"] == api.key


def test_authorizations_are_made_renamed_rotated_and_revoked(api: Api) -> None:
    made = api.post(
        "/oauth/authorizations",
        json={"description": "CI deploys", "scope": ["global"], "expires_in": "3600"},
    )
    assert made.status_code == 201, made.text
    ci = made.json()
    token = ci["access_token"]["token"]
    assert ci["description"] == "CI deploys" and ci["session"] is None
    assert 3590 < ci["access_token"]["expires_in"] <= 3600
    assert api.client.get("/apps", headers=bearer(token)).status_code == 200
    assert [s["id"] for s in api.get("/oauth/sessions").json()] == []  # not a session

    renamed = api.patch(f"/oauth/authorizations/{ci['id']}", json={"description": "CI"})
    assert renamed.json()["description"] == "CI"
    assert api.get(f"/oauth/authorizations/{ci['id']}").json()["description"] == "CI"

    rotated = api.post(f"/oauth/authorizations/{ci['id']}/actions/regenerate-tokens").json()
    new = rotated["access_token"]["token"]
    assert rotated["id"] == ci["id"] and new != token
    assert error_of(api.client.get("/apps", headers=bearer(token)))[0] == 401  # at once
    assert api.client.get("/apps", headers=bearer(new)).status_code == 200

    revoked = api.delete(f"/oauth/authorizations/{ci['id']}")
    assert revoked.status_code == 200 and revoked.json()["description"] == "CI"
    assert error_of(api.client.get("/apps", headers=bearer(new)))[:2] == (401, "unauthorized")
    gone = api.get(f"/oauth/authorizations/{ci['id']}")
    assert error_of(gone)[:2] == (404, "not_found") and gone.json()["resource"] == "authorization"
    assert [a["id"] for a in api.get("/oauth/authorizations").json()] != [ci["id"]]

    # The ledger has every change, with who made it; the audit log shows them.
    authorization = api.platform.ledger.repository.get(UUID(ci["id"]))
    assert isinstance(authorization, Authorization) and authorization.revoked
    actions = [e.action for e in audit.query(api.platform.ledger)]
    assert any(a.startswith("Create authorization CI deploys (global, HRKU-") for a in actions)
    assert f"Revoke authorization {ci['id']}" in actions
    assert f"Rename authorization {ci['id']} to CI" in actions
    assert token not in "".join(actions) and new not in "".join(actions)


def test_an_expired_token_is_refused(api: Api) -> None:
    made = api.post("/oauth/authorizations", json={"expires_in": 1}).json()
    token = made["access_token"]["token"]
    assert api.client.get("/account", headers=bearer(token)).status_code == 200
    time.sleep(1.1)
    assert error_of(api.client.get("/account", headers=bearer(token)))[:2] == (401, "unauthorized")
    assert made["id"] not in [a["id"] for a in api.get("/oauth/authorizations").json()]


def test_scopes_limit_what_a_token_may_do(api: Api) -> None:
    read = api.post("/oauth/authorizations", json={"scope": ["read"]}).json()
    token = read["access_token"]["token"]
    assert api.client.get("/apps", headers=bearer(token)).status_code == 200
    refused = api.client.post("/apps", json={"name": "shop"}, headers=bearer(token))
    assert error_of(refused)[:2] == (403, "forbidden")
    # A narrow token cannot make itself a wider one.
    wider = api.client.post("/oauth/authorizations", json={}, headers=bearer(token))
    assert error_of(wider)[0] == 403
    identity = api.post("/oauth/authorizations", json={"scope": "identity"}).json()
    who = bearer(identity["access_token"]["token"])
    assert api.client.get("/account", headers=who).status_code == 200
    assert api.client.get("/apps", headers=who).status_code == 403
    assert scope_allows(["read"], "POST", "/shop.git/git-upload-pack")  # a fetch
    assert not scope_allows(["read"], "POST", "/shop.git/git-receive-pack")  # a push


def test_bad_input_is_refused_in_herokus_shape(api: Api) -> None:
    for body, message in [
        ({"scope": ["root"]}, "Unknown scope root"),
        ({"scope": []}, "scope must be a list"),
        ({"expires_in": -5}, "expires_in must be a number of seconds"),
        ({"expires_in": "soon"}, "expires_in must be a number of seconds"),
        ({"description": 42}, "description must be a string"),
    ]:
        status, error_id, text = error_of(api.post("/oauth/authorizations", json=body))
        assert (status, error_id) == (422, "invalid_params") and message in text, text
    assert error_of(api.get("/oauth/authorizations/not-a-uuid"))[0] == 404
    key = api.get("/oauth/authorizations/~").json()
    for response in (
        api.delete(f"/oauth/authorizations/{key['id']}"),
        api.post("/oauth/authorizations/~/actions/regenerate-tokens"),
    ):
        assert error_of(response)[:2] == (405, "method_not_allowed")


def test_others_authorizations_are_not_found(api: Api) -> None:
    mine = api.post("/oauth/authorizations", json={}).json()
    other = Api(api.platform, "other@example.com")
    assert error_of(other.get(f"/oauth/authorizations/{mine['id']}"))[0] == 404
    assert error_of(other.delete(f"/oauth/authorizations/{mine['id']}"))[0] == 404
    assert (
        api.client.get("/account", headers=bearer(mine["access_token"]["token"])).json()["email"]
        == "owner@example.com"
    )


def test_logging_out_revokes_the_session_and_keeps_the_rest(api: Api) -> None:
    session = sign_in(api)
    token = session["access_token"]["token"]
    ci = api.post("/oauth/authorizations", json={"description": "CI"}).json()
    done = api.client.delete("/oauth/sessions/~", headers=bearer(token))
    assert done.status_code == 200 and done.json()["id"] == session["id"]
    assert api.client.get("/account", headers=bearer(token)).status_code == 401
    assert (
        api.client.get("/account", headers=bearer(ci["access_token"]["token"])).status_code == 200
    )
    # Made with a key, not a session: `heroku logout` is told there is none.
    none = api.client.delete("/oauth/sessions/~", headers=bearer(ci["access_token"]["token"]))
    assert error_of(none)[:2] == (404, "not_found") and none.json()["resource"] == "session"
