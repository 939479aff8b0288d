"""Third-party add-ons: a manifest registers the service, and its provider is called over real
HTTP in the shape of Heroku's Add-on Partner API (a small partner server runs in the test)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_api import Api, error_of
from waka.config import Settings

AUTH = "Basic " + base64.b64encode(b"acme-mail:s3cret").decode()


class Partner(ThreadingHTTPServer):
    """Remembers every request; answers as a partner would."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PartnerHandler)
        self.requests: list[tuple[str, str, dict]] = []
        self.refuse_next = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/heroku/resources"


class PartnerHandler(BaseHTTPRequestHandler):
    server: Partner

    def _answer(self, status: int, body: dict | None = None) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        self.server.requests.append((self.command, self.path, body))
        if self.headers.get("Authorization") != AUTH:
            return self._answer(401, {"message": "bad credentials"})
        if self.command == "POST" and self.server.refuse_next:
            self.server.refuse_next = False
            return self._answer(422, {"message": "that plan is sold out"})
        if self.command == "POST":
            resource = f"res-{body['uuid'][:8]}"
            return self._answer(
                200,
                {
                    "id": resource,
                    "config": {"ACME_MAIL_URL": f"smtp://{resource}@127.0.0.1:2525"},
                    "message": "Mailbox ready",
                },
            )
        return self._answer(
            200 if self.command == "PUT" else 204, {} if self.command == "PUT" else None
        )

    do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


def manifest_for(partner: Partner, pro: bool = False) -> dict:
    """ACME Mail's manifest: its partner API at `partner`, a free plan (and a paid one)."""
    plans = [{"name": "test", "price_cents": 0, "default": True}]
    if pro:
        plans.append({"name": "pro", "human_name": "Pro", "price_cents": 2500})
    return {
        "id": "acme-mail",
        "name": "ACME Mail",
        "api": {
            "config_vars_prefix": "ACME_MAIL",
            "password": "s3cret",
            "production": {"base_url": partner.base_url},
        },
        "plans": plans,
    }


@pytest.fixture
def partner() -> Iterator[Partner]:
    server = Partner()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture
def api(make_platform, tmp_path: Path, partner: Partner) -> Api:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "acme-mail.json").write_text(json.dumps(manifest_for(partner, pro=True)))
    (manifests / "broken.json").write_text('{"id": "broken"}')  # left out, with a log line
    settings = Settings(home=tmp_path / "waka", runtime="process", addon_manifests=manifests)
    return Api(make_platform(settings))


def settle(api: Api) -> None:
    api.platform.addon_manager.first_retry = 0.01
    api.platform.addon_manager.settle()
    api.platform.projector.catch_up()


def test_a_third_party_add_on_from_its_manifest(api: Api, partner: Partner) -> None:
    services = {s["name"]: s for s in api.get("/addon-services").json()}
    assert services["acme-mail"]["human_name"] == "ACME Mail" and "broken" not in services
    plans = api.get("/addon-services/acme-mail/plans").json()
    assert [p["name"] for p in plans] == ["acme-mail:test", "acme-mail:pro"]

    api.post("/apps", json={"name": "shop"})
    api.post("/apps", json={"name": "worker"})
    created = api.post("/apps/shop/addons", json={"plan": {"name": "acme-mail"}})
    assert created.status_code in (201, 202), created.text
    addon = created.json()
    settle(api)
    method, path, body = partner.requests[0]
    assert (method, path) == ("POST", "/heroku/resources")
    assert body["uuid"] == addon["id"] and body["plan"] == "test"
    resource = f"res-{addon['id'][:8]}"
    assert api.get("/apps/shop/config-vars").json() == {
        "ACME_MAIL_URL": f"smtp://{resource}@127.0.0.1:2525"
    }
    assert api.get(f"/addons/{addon['id']}").json()["state"] == "provisioned"

    attached = api.post(
        "/addon-attachments",
        json={"addon": addon["id"], "app": "worker", "name": "MAIL"},
    )
    assert attached.status_code == 201
    assert list(api.get("/apps/worker/config-vars").json()) == ["MAIL_URL"]

    upgraded = api.patch(f"/apps/shop/addons/{addon['id']}", json={"plan": "acme-mail:pro"})
    assert upgraded.json()["plan"]["name"] == "acme-mail:pro"
    settle(api)
    assert ("PUT", f"/heroku/resources/{resource}", {"plan": "pro"}) in partner.requests

    assert api.delete(f"/apps/shop/addons/{addon['id']}").status_code == 200
    settle(api)
    assert partner.requests[-1][:2] == ("DELETE", f"/heroku/resources/{resource}")
    assert api.get("/apps/worker/config-vars").json() == {}
    assert list((api.platform.settings.home / "addons" / "partners").rglob("*.json")) == []


def test_a_partner_that_refuses_leaves_the_add_on_failed_with_its_reason(
    api: Api, partner: Partner
) -> None:
    api.post("/apps", json={"name": "shop"})
    partner.refuse_next = True
    addon = api.post("/apps/shop/addons", json={"plan": "acme-mail:pro"}).json()
    settle(api)
    shown = api.get(f"/addons/{addon['id']}").json()
    assert shown["state"] == "deprovisioned"
    assert shown["provision_message"] == ("acme-mail answered 422 to POST: that plan is sold out")
    assert api.get("/apps/shop/config-vars").json() == {}
    assert error_of(api.post("/apps/shop/addons", json={"plan": "acme-mail:gold"}))[0] == 422
