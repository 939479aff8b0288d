"""The Platform API over HTTP (in-process ASGI) on both backends: shapes, auth, bad input, Range."""

from __future__ import annotations

import base64
from dataclasses import replace
from uuid import UUID

import pytest
from starlette.testclient import TestClient

from tests.deploys import deploy
from waka.api.app import create_api
from waka.bootstrap import Platform

ACCEPT = "application/vnd.heroku+json; version=3"


class Api:
    def __init__(self, platform: Platform, email: str = "owner@example.com") -> None:
        self.platform = platform
        _, self.key = platform.ledger.register_user(email)
        platform.projector.catch_up()
        self.client = TestClient(create_api(platform), raise_server_exceptions=False)
        self.headers = {"Authorization": f"Bearer {self.key}", "Accept": ACCEPT}

    def __getattr__(self, method: str):  # get, post, patch, delete with auth headers
        call = getattr(self.client, method)

        def send(path: str, headers: dict[str, str] | None = None, **kwargs):
            return call(path, headers={**self.headers, **(headers or {})}, **kwargs)

        return send


@pytest.fixture
def api(platform: Platform) -> Api:
    return Api(platform)


def error_of(response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) >= {"id", "message"}
    return response.status_code, body["id"], body["message"]


def test_app_lifecycle_shapes(api: Api) -> None:
    created = api.post("/apps", json={"name": "shop"})
    assert created.status_code == 201
    app = created.json()
    assert app["name"] == "shop"
    assert app["owner"]["email"] == "owner@example.com"
    assert app["region"]["name"] == "local" and app["stack"]["name"] == app["build_stack"]["name"]
    assert app["web_url"] == "http://shop.localhost:8080/"
    assert app["git_url"] == "http://localhost:5000/shop.git"
    assert app["maintenance"] is False and app["create_status"] == "complete"

    assert api.get("/apps/shop").json()["id"] == app["id"]
    assert api.get(f"/apps/{app['id']}").json()["name"] == "shop"  # by id too
    assert [a["name"] for a in api.get("/apps").json()] == ["shop"]
    assert [a["name"] for a in api.get("/users/~/apps").json()] == ["shop"]

    updated = api.patch("/apps/shop", json={"maintenance": True, "name": "store"})
    assert updated.status_code == 200
    assert updated.json()["name"] == "store" and updated.json()["maintenance"] is True
    assert error_of(api.get("/apps/shop"))[:2] == (404, "not_found")

    deleted = api.delete("/apps/store")
    assert deleted.status_code == 200 and deleted.json()["name"] == "store"
    assert api.get("/apps/store").status_code == 404
    assert api.post("/apps", json={"name": "store"}).status_code == 201  # the name is free again


def test_generated_name(api: Api) -> None:
    app = api.post("/apps").json()
    assert api.get(f"/apps/{app['name']}").status_code == 200
    assert 3 <= len(app["name"]) <= 30


def test_a_config_change_sent_again_with_its_request_id_is_one_release(api: Api) -> None:
    """The Heroku CLI sends a request again, with the same Request-Id (this request's id
    first, then its earlier ones'), when the connection broke before the answer: the change
    was made once, so it is not a second release. Another request, the same change, is."""
    api.post("/apps", json={"name": "shop"})
    sent = {
        "Request-Id": "7f1c0c1e-3c55-4a6e-9a0e-0d2b6c1f5a10,0b1d7f3e-2f11-4c55-8b5e-1a2b3c4d5e6f"
    }
    for _ in range(2):
        answer = api.patch("/apps/shop/config-vars", json={"FOO": "1"}, headers=sent)
        assert answer.status_code == 200 and answer.json() == {"FOO": "1"}
        assert answer.headers["Request-Id"] == "7f1c0c1e-3c55-4a6e-9a0e-0d2b6c1f5a10"
    versions = [r["version"] for r in api.get("/apps/shop/releases").json()]
    assert versions == [1, 2]
    api.patch("/apps/shop/config-vars", json={"FOO": "1"})  # its own id: a release
    other = {"Request-Id": "11111111-2222-4333-8444-555555555555"}
    api.patch("/apps/shop/config-vars", json={"FOO": "1"}, headers=other)
    api.patch("/apps/shop/config-vars", json={"FOO": "2"}, headers=other)  # another change
    versions = [r["version"] for r in api.get("/apps/shop/releases").json()]
    assert versions == [1, 2, 3, 4, 5]
    assert api.get("/apps/shop/config-vars").json() == {"FOO": "2"}


def test_a_rollback_sent_again_with_its_request_id_is_one_release(api: Api) -> None:
    api.post("/apps", json={"name": "shop"})
    api.patch("/apps/shop/config-vars", json={"FOO": "1"})
    sent = {"Request-Id": "5d2c8a4e-1b3f-4c6d-9e8f-7a6b5c4d3e2f"}
    for _ in range(2):
        rolled = api.post("/apps/shop/releases", json={"release": 1}, headers=sent)
        assert rolled.status_code == 201, rolled.text
        assert (rolled.json()["version"], rolled.json()["description"]) == (3, "Rollback to v1")
    assert [r["version"] for r in api.get("/apps/shop/releases").json()] == [1, 2, 3]
    again = api.post("/apps/shop/releases", json={"release": 1})  # another request: another
    assert again.json()["version"] == 4


def test_an_app_create_sent_again_with_its_request_id_is_one_app(api: Api) -> None:
    """`heroku apps:create` without a name, its answer lost and sent again by the CLI: the
    same app, not a second one with another generated name."""
    sent = {"Request-Id": "2b7e1c3a-9d4f-4e8a-b6c5-1f2e3d4c5b6a"}
    first = api.post("/apps", json={}, headers=sent)
    again = api.post("/apps", json={}, headers=sent)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert [a["name"] for a in api.get("/apps").json()] == [first.json()["name"]]
    other = api.post(
        "/apps", json={}, headers={"Request-Id": "3c8f2d4b-0e5a-4f9b-a7d6-2a3b4c5d6e7f"}
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    # The same id for another request is refused, not taken for the first app.
    reused = api.post("/apps", json={"name": "shop"}, headers=sent)
    assert error_of(reused)[:2] == (409, "conflict"), reused.text
    assert api.get("/apps/shop").status_code == 404
    named = {"Request-Id": "4d9a3e5c-1f6b-4a0c-b8e7-3b4c5d6e7f80"}
    assert api.post("/apps", json={"name": "shop"}, headers=named).status_code == 201
    assert api.post("/apps", json={"name": "shop"}, headers=named).status_code == 201
    assert error_of(api.post("/apps", json={"name": "shop"}))[:2] == (422, "invalid_params")


def test_config_vars_and_releases(api: Api) -> None:
    api.post("/apps", json={"name": "shop"})
    patched = api.patch("/apps/shop/config-vars", json={"FOO": "1", "BAR": "2"})
    assert patched.status_code == 200 and patched.json() == {"BAR": "2", "FOO": "1"}
    assert api.patch("/apps/shop/config-vars", json={"FOO": None}).json() == {"BAR": "2"}
    assert api.get("/apps/shop/config-vars").json() == {"BAR": "2"}

    releases = api.get("/apps/shop/releases").json()
    assert [(r["version"], r["description"]) for r in releases] == [
        (1, "Initial release"),
        (2, "Set FOO, BAR config vars"),
        (3, "Remove FOO config vars"),
    ]
    assert [r["current"] for r in releases] == [False, False, True]
    assert releases[0]["user"]["email"] == "owner@example.com"

    v2 = api.get("/apps/shop/releases/v2").json()
    assert api.get(f"/apps/shop/releases/{v2['id']}").json()["version"] == 2
    assert api.get("/apps/shop/releases/2/config-vars").json() == {"BAR": "2", "FOO": "1"}

    rolled = api.post("/apps/shop/releases", json={"release": v2["id"]})
    assert rolled.status_code == 201
    assert rolled.json()["description"] == "Rollback to v2" and rolled.json()["version"] == 4
    assert api.get("/apps/shop/config-vars").json() == {"BAR": "2", "FOO": "1"}
    assert api.post("/apps/shop/releases", json={"release": 1}).json()["version"] == 5
    assert api.get("/apps/shop/config-vars").json() == {}

    assert error_of(api.post("/apps/shop/releases", json={"release": "v99"}))[:2] == (
        404,
        "not_found",
    )
    assert error_of(api.get("/apps/shop/releases/v99"))[0] == 404


def test_formation(api: Api) -> None:
    app_id = api.post("/apps", json={"name": "shop"}).json()["id"]
    # Only a slug's process types can be scaled: deploy one with web.
    user = api.get("/account").json()
    deploy(
        api.platform.ledger,
        {"id": user["id"], "email": user["email"]},
        UUID(app_id),
        {"web": "python app.py"},
    )
    api.platform.projector.catch_up()
    batch = api.patch("/apps/shop/formation", json={"updates": [{"type": "web", "quantity": "2"}]})
    assert batch.status_code == 200
    assert [(f["type"], f["quantity"], f["size"]) for f in batch.json()] == [
        ("web", 2, "Standard-1X")
    ]
    one = api.patch("/apps/shop/formation/web", json={"quantity": "+1", "size": "standard-2x"})
    assert (one.json()["quantity"], one.json()["size"]) == (3, "Standard-2X")
    assert api.get("/apps/shop/formation/web").json()["quantity"] == 3
    assert [f["type"] for f in api.get("/apps/shop/formation").json()] == ["web"]
    assert api.get("/apps/shop/formation/worker").status_code == 404
    # Scaling makes no release (v2 is the deploy).
    assert len(api.get("/apps/shop/releases").json()) == 2
    assert api.get("/apps/shop/dynos").json() == []


def test_auth(api: Api) -> None:
    api.post("/apps", json={"name": "shop"})
    assert error_of(api.client.get("/apps"))[:2] == (401, "unauthorized")
    wrong = api.client.get("/apps", headers={"Authorization": "Bearer nope"})
    assert error_of(wrong)[:2] == (401, "unauthorized")
    basic = base64.b64encode(f"anyone:{api.key}".encode()).decode()
    as_basic = api.client.get("/apps", headers={"Authorization": f"Basic {basic}"})
    assert as_basic.status_code == 200 and as_basic.json()[0]["name"] == "shop"
    assert api.get("/account").json()["email"] == "owner@example.com"
    assert api.get("/users/~").json()["email"] == "owner@example.com"

    other = Api(api.platform, "other@example.com")
    assert other.get("/apps").json() == []
    for response in (
        other.get("/apps/shop"),
        other.patch("/apps/shop/config-vars", json={"X": "1"}),
        other.delete("/apps/shop"),
    ):
        status, error_id, message = error_of(response)
        assert (status, error_id) == (403, "forbidden")
        assert "You do not have access to the app shop" in message
    assert api.get("/apps/shop/config-vars").json() == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_id", "words"),
    [
        ("post", "/apps", {"name": "Bad_Name"}, 422, "invalid_params", "Name must start"),
        ("post", "/apps", {"name": "ab"}, 422, "invalid_params", "3 to 30 characters"),
        ("post", "/apps", {"name": 5}, 422, "invalid_params", "name must be a string"),
        ("post", "/apps", {"name": "shop"}, 422, "invalid_params", "already taken"),
        ("post", "/apps", {"region": "mars"}, 422, "invalid_params", "region"),
        ("post", "/apps", [1, 2], 422, "invalid_params", "JSON object"),
        ("patch", "/apps/shop", {"maintenance": "yes"}, 422, "invalid_params", "true or false"),
        ("patch", "/apps/shop", {"colour": "red"}, 422, "invalid_params", "colour"),
        ("patch", "/apps/shop/config-vars", {"1BAD": "x"}, 422, "invalid_params", "1BAD"),
        ("patch", "/apps/shop/config-vars", {"OK": ["x"]}, 422, "invalid_params", "string"),
        ("patch", "/apps/shop/config-vars", {"BIG": "x" * 40000}, 422, "invalid_params", "32768"),
        ("patch", "/apps/nope/config-vars", {"A": "1"}, 404, "not_found", "Couldn't find that app"),
        # Never deployed: no process types to scale (bad quantities and sizes of a deployed
        # app are in test_formation_and_config_rules.py).
        (
            "patch",
            "/apps/shop/formation",
            {"updates": [{"type": "web", "quantity": 1}]},
            404,
            "not_found",
            "Couldn't find that process type (web).",
        ),
        ("patch", "/apps/shop/formation", {"updates": "web"}, 422, "invalid_params", "updates"),
        ("post", "/apps/shop/releases", {}, 422, "invalid_params", "roll back"),
        ("get", "/apps/shop/nothing-here", None, 404, "not_found", "endpoint was not found"),
        ("put", "/apps/shop", {}, 405, "method_not_allowed", "HTTP verb"),
    ],
)
def test_bad_input_gets_clear_errors(api: Api, method, path, body, status, error_id, words):
    api.post("/apps", json={"name": "shop"})
    kwargs = {} if body is None else {"json": body}
    response = getattr(api, method)(path, **kwargs)
    got_status, got_id, message = error_of(response)
    assert (got_status, got_id) == (status, error_id), message
    assert words in message
    assert "Traceback" not in response.text
    # Nothing was changed by the refused request.
    assert api.get("/apps/shop/config-vars").json() == {}
    assert len(api.get("/apps/shop/releases").json()) == 1


def test_malformed_and_oversized_bodies(api: Api) -> None:
    api.post("/apps", json={"name": "shop"})
    bad = api.patch(
        "/apps/shop/config-vars", content=b'{"A": ', headers={"Content-Type": "application/json"}
    )
    assert error_of(bad)[:2] == (400, "bad_request")
    assert "not valid JSON" in bad.json()["message"]
    huge = api.patch("/apps/shop/config-vars", content=b'{"A": "' + b"x" * (2 << 20) + b'"}')
    assert error_of(huge)[:2] == (413, "request_entity_too_large")

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(40):
            yield b"x" * 65536

    streamed = api.patch("/apps/shop/config-vars", content=chunks())
    assert error_of(streamed)[0] == 413
    assert api.get("/apps/shop/config-vars").json() == {}


def test_request_id_on_every_response(api: Api) -> None:
    ok = api.get("/account")
    assert len(ok.headers["Request-Id"]) >= 32
    assert api.client.get("/apps").headers["Request-Id"]
    assert api.get("/nowhere").headers["Request-Id"]
    assert api.get("/account", headers={"Request-Id": "abc-123"}).headers["Request-Id"] == "abc-123"


def test_range_pagination(api: Api) -> None:
    for name in ("app-c", "app-a", "app-b"):
        api.post("/apps", json={"name": name})
    first = api.get("/apps", headers={"Range": "name ..; max=2"})
    assert first.status_code == 206
    assert [a["name"] for a in first.json()] == ["app-a", "app-b"]
    assert first.headers["Next-Range"] == "name ]app-b..; max=2, order=asc"
    rest = api.get("/apps", headers={"Range": first.headers["Next-Range"]})
    assert rest.status_code == 200 and "Next-Range" not in rest.headers
    assert [a["name"] for a in rest.json()] == ["app-c"]

    for value in range(12):
        api.patch("/apps/app-a/config-vars", json={"N": str(value)})
    sdk = {"Accept": "application/vnd.heroku+json; version=3.sdk"}
    newest = api.get(
        "/apps/app-a/releases", headers={**sdk, "Range": "version ..; max=10, order=desc"}
    )
    assert newest.status_code == 206
    assert [r["version"] for r in newest.json()] == list(range(13, 3, -1))
    one = api.get("/apps/app-a/releases", headers={"Range": "version ..; order=desc,max=1"})
    assert [r["version"] for r in one.json()] == [13]
    older = api.get("/apps/app-a/releases", headers={"Range": newest.headers["Next-Range"]})
    assert [r["version"] for r in older.json()] == [3, 2, 1]

    for header in ("bogus", "colour ..", "name ..; max=0", "name ..; order=up", "version ]x.."):
        response = api.get(
            "/apps/app-a/releases" if "version" in header else "/apps", headers={"Range": header}
        )
        assert error_of(response)[:2] == (400, "bad_request"), header


class BrokenStore:
    """A read store whose queries fail, to prove a crash never leaks a trace to the user."""

    def __init__(self, store) -> None:
        self.store = store
        self.broken = False

    def query(self, sql, params=()):
        if self.broken and "waka_apps" in sql:
            raise RuntimeError("disk on fire at /secret/path")
        return self.store.query(sql, params)

    def transaction(self):
        return self.store.transaction()

    def close(self) -> None:
        self.store.close()


def test_internal_error_is_opaque(platform: Platform) -> None:
    broken = BrokenStore(platform.store)
    api = Api(replace(platform, store=broken))
    broken.broken = True
    response = api.get("/apps/shop")
    assert error_of(response)[:2] == (500, "internal_server_error")
    assert "secret" not in response.text and "Traceback" not in response.text


def test_dyno_sizes(api: Api) -> None:
    sizes = api.get("/dyno-sizes").json()
    assert [s["name"] for s in sizes][:3] == ["Eco", "Basic", "Standard-1X"]
    assert api.get("/dyno-sizes/standard-2x").json()["memory"] == 1.0
    assert api.get("/dyno-sizes/huge").status_code == 404
