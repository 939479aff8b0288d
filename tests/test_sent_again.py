"""Requests the Heroku CLI sends again: when its connection breaks before the answer,
@heroku/http-call sends the same request with the same Request-Id. What the first one added
(a domain, a log drain, an add-on's attachment, a webhook) is the answer to the second, not
a second one nor an "already added" error for what the user asked once; what it removed (a
domain, a log drain, an app) is the answer, not a 404. The same Request-Id on another
request is not taken for the first. (Config changes, rollbacks, apps and add-ons sent again:
tests/test_api.py, tests/test_addons_api.py; with the real CLI: tests/e2e/test_cli_retry.py.)"""

from __future__ import annotations

from tests.test_addons_api import api, create, providers, settle  # noqa: F401  (fixtures)
from tests.test_api import Api, error_of

SENT = {"Request-Id": "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}
OTHER = {"Request-Id": "9b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"}


def test_a_domain_added_and_sent_again_is_one_domain(api: Api) -> None:  # noqa: F811
    api.post("/apps", json={"name": "shop"})
    body = {"hostname": "www.example.com"}
    first = api.post("/apps/shop/domains", json=body, headers=SENT)
    again = api.post("/apps/shop/domains", json=body, headers=SENT)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    custom = [d for d in api.get("/apps/shop/domains").json() if d["kind"] == "custom"]
    assert [d["hostname"] for d in custom] == ["www.example.com"]
    # Another request for the same domain is still refused.
    status, _, message = error_of(api.post("/apps/shop/domains", json=body, headers=OTHER))
    assert status == 409 and "already added" in message


def test_a_drain_added_and_sent_again_is_one_drain(api: Api) -> None:  # noqa: F811
    api.post("/apps", json={"name": "shop"})
    body = {"url": "https://logs.example.com/drain"}
    first = api.post("/apps/shop/log-drains", json=body, headers=SENT)
    again = api.post("/apps/shop/log-drains", json=body, headers=SENT)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()  # the same id and token
    assert [d["id"] for d in api.get("/apps/shop/log-drains").json()] == [first.json()["id"]]
    status, _, message = error_of(api.post("/apps/shop/log-drains", json=body, headers=OTHER))
    assert status == 409 and "already added" in message


def test_an_attachment_sent_again_is_one_attachment(api: Api) -> None:  # noqa: F811
    """Without --as, a second attachment would take a colour name (HEROKU_REDIS_PINK) and a
    second release: the request sent again is answered with the first."""
    api.post("/apps", json={"name": "shop"})
    api.post("/apps", json={"name": "other"})
    addon = create(api, "shop", "heroku-redis")
    settle(api)
    body = {"addon": addon["id"], "app": "other"}
    first = api.post("/addon-attachments", json=body, headers=SENT)
    again = api.post("/addon-attachments", json=body, headers=SENT)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    attached = api.get("/apps/other/addon-attachments").json()
    assert [a["name"] for a in attached] == ["REDIS"]
    assert [r["version"] for r in api.get("/apps/other/releases").json()] == [1, 2]
    # Another request attaches it again, under another name, as Heroku does.
    assert api.post("/addon-attachments", json=body, headers=OTHER).status_code == 201
    assert len(api.get("/apps/other/addon-attachments").json()) == 2


def test_a_webhook_sent_again_is_one_webhook(api: Api) -> None:  # noqa: F811
    api.post("/apps", json={"name": "shop"})
    body = {"url": "https://hooks.example.com/in", "include": ["api:release"], "level": "notify"}
    first = api.post("/apps/shop/webhooks", json=body, headers=SENT)
    again = api.post("/apps/shop/webhooks", json=body, headers=SENT)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    secret = first.headers["Heroku-Webhook-Secret"]
    assert again.headers["Heroku-Webhook-Secret"] == secret  # what the CLI shows, once made
    assert [w["id"] for w in api.get("/apps/shop/webhooks").json()] == [first.json()["id"]]
    # The same id for another webhook is refused; another id makes another.
    elsewhere = {**body, "url": "https://hooks.example.com/other"}
    assert error_of(api.post("/apps/shop/webhooks", json=elsewhere, headers=SENT))[0] == 409
    assert api.post("/apps/shop/webhooks", json=body, headers=OTHER).status_code == 201
    assert len(api.get("/apps/shop/webhooks").json()) == 2


def test_a_domain_removed_and_sent_again_is_answered(api: Api) -> None:  # noqa: F811
    """The first removal's answer lost, the CLI's retry found the domain gone: a 404 told the
    user it had failed when it had not."""
    api.post("/apps", json={"name": "shop"})
    api.post("/apps/shop/domains", json={"hostname": "www.example.com"})
    first = api.delete("/apps/shop/domains/www.example.com", headers=SENT)
    again = api.delete("/apps/shop/domains/www.example.com", headers=SENT)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["hostname"] == first.json()["hostname"] == "www.example.com"
    assert again.json()["id"] == first.json()["id"]
    assert [d["kind"] for d in api.get("/apps/shop/domains").json()] == ["heroku"]
    # Another request for it is told it is not there; the name is free to add again.
    status, _, message = error_of(api.delete("/apps/shop/domains/www.example.com", headers=OTHER))
    assert status == 404 and "Couldn't find that domain" in message
    assert api.post("/apps/shop/domains", json={"hostname": "www.example.com"}).status_code == 201


def test_a_drain_removed_and_sent_again_is_answered(api: Api) -> None:  # noqa: F811
    api.post("/apps", json={"name": "shop"})
    url = "https://logs.example.com/drain"
    made = api.post("/apps/shop/log-drains", json={"url": url}).json()
    first = api.delete(f"/apps/shop/log-drains/{made['id']}", headers=SENT)
    again = api.delete(f"/apps/shop/log-drains/{made['id']}", headers=SENT)
    assert first.status_code == again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["url"]) == (made["id"], url)  # drains:remove says it
    assert api.get("/apps/shop/log-drains").json() == []
    status, _, message = error_of(api.delete(f"/apps/shop/log-drains/{made['id']}", headers=OTHER))
    assert status == 404 and message == "Couldn't find that log drain."


def test_an_app_destroyed_and_sent_again_is_answered(api: Api) -> None:  # noqa: F811
    shop = api.post("/apps", json={"name": "shop"}).json()
    first = api.delete("/apps/shop", headers=SENT)
    again = api.delete("/apps/shop", headers=SENT)
    assert first.status_code == again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["name"]) == (shop["id"], "shop")
    assert api.delete(f"/apps/{shop['id']}", headers=SENT).status_code == 200  # by its id too
    assert error_of(api.delete("/apps/shop", headers=OTHER))[0] == 404
    assert error_of(api.get("/apps/shop"))[0] == 404


def test_an_addon_destroyed_and_sent_again_is_answered(api: Api) -> None:  # noqa: F811
    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-redis")
    settle(api)
    first = api.delete(f"/apps/shop/addons/{addon['id']}", headers=SENT)
    again = api.delete(f"/apps/shop/addons/{addon['id']}", headers=SENT)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["state"] == "deprovisioned"  # what addons:destroy reads
    assert (again.json()["id"], again.json()["name"]) == (addon["id"], addon["name"])
    settle(api)  # removed: still the answer to that request
    assert api.delete(f"/apps/shop/addons/{addon['id']}", headers=SENT).status_code == 200
    assert error_of(api.delete(f"/apps/shop/addons/{addon['id']}", headers=OTHER))[0] == 404
    assert api.get("/apps/shop/addons").json() == []
    releases = [r["description"] for r in api.get("/apps/shop/releases").json()]
    assert len([d for d in releases if d.startswith("Detach")]) == 1, releases
