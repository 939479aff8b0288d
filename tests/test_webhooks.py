"""App webhooks: the API's shapes and refusals, and the reactor that delivers, on both backends.

The reactor is driven by hand here (capture, deliver_due) with a recording receiver and a
clock the test moves, so back-off and ordering are exact; test_webhooks_http.py uses a real
HTTP receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from eventsourcing.cipher import AESCipher

from tests.test_api import Api, error_of
from waka.bootstrap import Platform
from waka.config import Settings
from waka.reactors.webhooks import Unreachable, WebhookOptions, WebhookReactor

SECRET_URL = "https://hook-user:hook-pass@receiver.example/hooks/s3cr3t-path"


@dataclass
class Receiver:
    """Answers each POST with the next of `answers` (an int status, or Unreachable)."""

    answers: list[Any] = field(default_factory=list)
    got: list[tuple[str, dict[str, Any], dict[str, str], bytes]] = field(default_factory=list)
    down: bool = False

    def __call__(self, url: str, body: bytes, headers: dict[str, str], _: Any) -> int:
        if self.down:
            raise Unreachable("ConnectionRefusedError")
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        if 200 <= answer < 300:
            self.got.append((url, json.loads(body), headers, body))
        return answer

    def kinds(self) -> list[tuple[str, str]]:
        return [(b["resource"], b["action"]) for _, b, _, _ in self.got]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Hooks:
    api: Api
    receiver: Receiver
    clock: Clock
    make_reactor: Callable[[], WebhookReactor]
    reactor: WebhookReactor

    def add(self, **body: Any) -> Any:
        body = {"include": ["api:release"], "level": "sync", "url": SECRET_URL, **body}
        made = self.api.post("/apps/hooked/webhooks", json=body)
        assert made.status_code == 201, made.text
        return made

    def run(self) -> None:
        self.reactor.capture()
        self.reactor.deliver_due()

    def deliveries(self, query: str = "") -> list[dict[str, Any]]:
        return self.api.get(f"/apps/hooked/webhook-deliveries{query}").json()

    def config(self, **values: str) -> None:
        assert self.api.patch("/apps/hooked/config-vars", json=values).is_success


OPTIONS = WebhookOptions(notify_attempts=3, sync_attempts=6, backoff_min=1.0, backoff_max=8.0)


@pytest.fixture
def hooks(settings: Settings, make_platform: Callable[..., Platform]) -> Hooks:
    platform = make_platform(replace(settings, cipher_key=AESCipher.create_key(num_bytes=32)))
    api = Api(platform)
    assert api.post("/apps", json={"name": "hooked"}).status_code == 201
    receiver, clock = Receiver(), Clock()

    def make() -> WebhookReactor:
        return WebhookReactor(platform.ledger, platform.store, OPTIONS, receiver, clock)

    return Hooks(api, receiver, clock, make, make())


def test_webhook_api_shapes_and_the_secret_shown_once(hooks: Hooks) -> None:
    api = hooks.api
    made = hooks.add(include=["api:release", "api:build"], level="notify")
    body = made.json()
    secret = made.headers["Heroku-Webhook-Secret"]
    assert len(secret) == 60 and secret not in made.text
    assert set(body) == {"app", "created_at", "id", "include", "level", "updated_at", "url"}
    assert body["app"]["name"] == "hooked" and body["include"] == ["api:release", "api:build"]
    assert body["level"] == "notify" and body["url"] == SECRET_URL

    chosen = hooks.add(secret="my-own-secret", include=["dyno"])
    assert chosen.headers["Heroku-Webhook-Secret"] == "my-own-secret"

    listed = api.get("/apps/hooked/webhooks").json()
    assert [w["id"] for w in listed] == [body["id"], chosen.json()["id"]]
    assert api.get(f"/apps/hooked/webhooks/{body['id']}").json() == body
    for shown in (
        api.get("/apps/hooked/webhooks").text,
        api.get(f"/apps/hooked/webhooks/{body['id']}").text,
    ):
        assert secret not in shown and "my-own-secret" not in shown

    patched = api.patch(
        f"/apps/hooked/webhooks/{body['id']}",
        json={"level": "sync", "url": "http://other.example/x", "include": ["api:formation"]},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["level"] == "sync" and patched.json()["include"] == ["api:formation"]
    assert api.get(f"/apps/hooked/webhooks/{body['id']}").json()["url"] == "http://other.example/x"

    removed = api.delete(f"/apps/hooked/webhooks/{body['id']}")
    assert removed.status_code == 200 and removed.json()["id"] == body["id"]
    assert [w["id"] for w in api.get("/apps/hooked/webhooks").json()] == [chosen.json()["id"]]
    assert error_of(api.get(f"/apps/hooked/webhooks/{body['id']}"))[:2] == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"include": ["api:nope"], "level": "notify", "url": "https://x.example"}, "api:nope"),
        ({"include": [], "level": "notify", "url": "https://x.example"}, "include"),
        ({"include": ["dyno"], "level": "often", "url": "https://x.example"}, "level"),
        ({"include": ["dyno"], "level": "sync", "url": "ftp://x.example"}, "http"),
        ({"include": ["dyno"], "level": "sync", "url": "https://x.example:port"}, "url"),
        ({"include": ["dyno"], "level": "sync"}, "url"),
        ({"include": ["dyno"], "level": "sync", "url": "https://x", "secret": 5}, "secret"),
    ],
)
def test_bad_webhooks_are_refused_in_herokus_shape(hooks: Hooks, body: Any, needle: str) -> None:
    status, error_id, message = error_of(hooks.api.post("/apps/hooked/webhooks", json=body))
    assert (status, error_id) == (422, "invalid_params") and needle in message
    assert hooks.api.get("/apps/hooked/webhooks").json() == []


def test_unknown_webhooks_and_other_peoples_apps(hooks: Hooks) -> None:
    api = hooks.api
    for path in (
        "webhooks/not-a-uuid",
        "webhooks/00000000-0000-0000-0000-000000000000",
        "webhook-deliveries/nope",
        "webhook-events/nope",
    ):
        assert error_of(api.get(f"/apps/hooked/{path}"))[:2] == (404, "not_found")
    assert error_of(api.get("/apps/hooked/webhook-deliveries?eq[status]=bogus"))[0] == 422
    made = hooks.add().json()
    stranger = Api(api.platform, "stranger@example.com")
    assert stranger.get("/apps/hooked/webhooks").status_code in (403, 404)
    refused = stranger.post(
        "/apps/hooked/webhooks",
        json={"include": ["dyno"], "level": "sync", "url": "http://x.example"},
    )
    assert refused.status_code in (403, 404)
    assert stranger.delete(f"/apps/hooked/webhooks/{made['id']}").status_code in (403, 404)
    assert [w["id"] for w in api.get("/apps/hooked/webhooks").json()] == [made["id"]]


def test_secrets_are_sealed_in_the_read_model(hooks: Hooks) -> None:
    hooks.add(secret="sealed-secret-value", authorization="Bearer sealed-token")
    store = hooks.api.platform.store
    raw = json.dumps(store.query("SELECT * FROM waka_webhooks"))
    for secret in ("sealed-secret-value", "sealed-token", "hook-pass", "s3cr3t-path"):
        assert secret not in raw


def _verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, headers["Heroku-Webhook-Hmac-SHA256"])


def test_events_after_the_webhook_reach_it_signed_in_herokus_shape(hooks: Hooks) -> None:
    hooks.config(BEFORE="1")  # v2: before the webhook, never sent
    made = hooks.add(include=["api:release", "api:domain"], authorization="Bearer xyz")
    secret, webhook_id = made.headers["Heroku-Webhook-Secret"], made.json()["id"]
    hooks.config(AFTER="1")  # v3
    assert hooks.api.post("/apps/hooked/domains", json={"hostname": "www.hooked.test"}).is_success
    hooks.run()
    assert hooks.receiver.kinds() == [("release", "create"), ("domain", "create")]
    url, release, headers, raw = hooks.receiver.got[0]
    assert url == SECRET_URL and _verify(secret, raw, headers)
    assert headers["Authorization"] == "Bearer xyz"
    assert release["data"]["version"] == 3
    assert release["data"]["description"] == "Set AFTER config vars"
    assert release["data"]["app"]["name"] == "hooked"
    assert release["actor"]["email"] == "owner@example.com"
    assert release["version"] == "application/vnd.heroku+json; version=3"
    meta = release["webhook_metadata"]
    assert meta["webhook"] == {"id": webhook_id}
    assert meta["event"]["include"] == "api:release"
    assert hooks.receiver.got[1][1]["data"]["hostname"] == "www.hooked.test"

    deliveries = hooks.deliveries()
    assert [d["status"] for d in deliveries] == ["succeeded", "succeeded"]
    assert deliveries[0]["id"] == meta["delivery"]["id"]
    assert deliveries[0]["num_attempts"] == 1 and deliveries[0]["last_attempt"]["code"] == 200
    assert deliveries[0]["webhook"] == {"id": webhook_id, "level": "sync"}
    shown = hooks.api.get(f"/apps/hooked/webhook-deliveries/{meta['delivery']['id']}").json()
    assert shown == deliveries[0]
    event = hooks.api.get(f"/apps/hooked/webhook-events/{meta['event']['id']}").json()
    assert event["payload"]["data"] == release["data"] and event["include"] == "api:release"
    assert [e["id"] for e in hooks.api.get("/apps/hooked/webhook-events").json()] == [
        d["event"]["id"] for d in deliveries
    ]
    newest_first = hooks.api.get(
        "/apps/hooked/webhook-deliveries", headers={"Range": "seq ..; order=desc,max=1000"}
    ).json()
    assert [d["id"] for d in newest_first] == [d["id"] for d in reversed(deliveries)]

    hooks.run()  # nothing twice
    assert len(hooks.receiver.got) == 2


def test_a_receiver_that_is_down_gets_every_event_afterwards_in_order(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hooks.add(secret="down-secret")
    hooks.receiver.down = True
    for n in range(3):
        hooks.config(N=str(n))  # v2, v3, v4
    hooks.run()
    first, *rest = hooks.deliveries()
    assert first["status"] == "retrying" and first["num_attempts"] == 1
    assert first["last_attempt"]["error_class"] == "ConnectionRefusedError"
    assert first["last_attempt"]["code"] is None and first["next_attempt_at"]
    assert [d["status"] for d in rest] == ["pending", "pending"]  # waiting behind the first
    hooks.run()  # not due yet
    assert hooks.deliveries()[0]["num_attempts"] == 1
    for _ in range(2):
        hooks.clock.now += 8
        hooks.run()
    assert hooks.deliveries()[0]["num_attempts"] == 3
    assert [d["status"] for d in hooks.deliveries("?eq[status]=retrying")] == ["retrying"]

    hooks.receiver.down = False
    hooks.clock.now += 8
    hooks.run()
    assert [b["data"]["version"] for _, b, _, _ in hooks.receiver.got] == [2, 3, 4]
    assert [d["status"] for d in hooks.deliveries()] == ["succeeded"] * 3
    assert hooks.deliveries()[0]["num_attempts"] == 4
    logged = caplog.text
    assert "receiver.example" in logged  # the failures are logged, without secrets
    for secret in ("hook-pass", "hook-user", "s3cr3t-path", "down-secret"):
        assert secret not in logged


def test_notify_gives_up_sooner_than_sync_and_the_next_event_goes(hooks: Hooks) -> None:
    hooks.add(level="notify", url="http://notify.example/")
    hooks.add(level="sync", url="http://sync.example/")
    hooks.receiver.answers = [500] * 20
    hooks.config(A="1")
    for _ in range(4):
        hooks.run()
        hooks.clock.now += 10
    by_level = {d["webhook"]["level"]: d for d in hooks.deliveries()}
    assert by_level["notify"]["status"] == "failed" and by_level["notify"]["num_attempts"] == 3
    assert by_level["notify"]["last_attempt"]["code"] == 500
    assert by_level["sync"]["status"] == "retrying"
    hooks.receiver.answers = []
    hooks.config(B="1")
    hooks.run()
    notify_got = [b["data"]["version"] for u, b, _, _ in hooks.receiver.got if "notify" in u]
    assert notify_got == [3]  # v2 was given up; v3 went
    for _ in range(3):
        hooks.clock.now += 10
        hooks.run()
    sync_got = [b["data"]["version"] for u, b, _, _ in hooks.receiver.got if "sync" in u]
    assert sync_got == [2, 3]


def test_a_restart_neither_loses_nor_repeats_deliveries(hooks: Hooks) -> None:
    hooks.add()
    hooks.config(A="1")  # v2, delivered
    hooks.run()
    hooks.receiver.down = True
    hooks.config(B="1")  # v3, captured but failing
    hooks.run()
    hooks.reactor.close()
    hooks.config(C="1")  # v4, while waka is down
    hooks.api.platform.projector.rebuild()  # rebuilding the read models sends nothing again
    restarted = hooks.make_reactor()
    hooks.receiver.down = False
    hooks.clock.now += 10
    restarted.capture()
    restarted.deliver_due()
    assert [b["data"]["version"] for _, b, _, _ in hooks.receiver.got] == [2, 3, 4]
    assert len(hooks.deliveries()) == 3


def test_a_removed_webhook_gets_nothing_more(hooks: Hooks) -> None:
    made = hooks.add().json()
    hooks.receiver.down = True
    hooks.config(A="1")
    hooks.run()
    assert hooks.api.delete(f"/apps/hooked/webhooks/{made['id']}").is_success
    hooks.receiver.down = False
    hooks.config(B="1")
    hooks.clock.now += 60
    hooks.run()
    assert hooks.receiver.got == []
    assert [d["status"] for d in hooks.deliveries()] == ["failed"]


def test_includes_choose_the_events_and_dyno_events_come_from_the_dyno_manager(
    hooks: Hooks,
) -> None:
    hooks.add(include=["dyno"])
    hooks.config(A="1")  # a release: not included
    app_id = hooks.api.get("/apps/hooked").json()["id"]
    hooks.reactor.capture()
    hooks.reactor.dyno_changed(app_id, "update", {"name": "web.1", "state": "up", "type": "web"})
    hooks.reactor.deliver_due()
    assert hooks.receiver.kinds() == [("dyno", "update")]
    assert hooks.receiver.got[0][1]["data"]["state"] == "up"
    assert hooks.receiver.got[0][1]["webhook_metadata"]["event"]["include"] == "dyno"


def test_destroying_the_app_removes_its_webhooks(hooks: Hooks) -> None:
    hooks.add()
    assert hooks.api.delete("/apps/hooked").is_success
    store = hooks.api.platform.store
    assert store.query("SELECT * FROM waka_webhooks") == []
    hooks.run()
    assert store.query("SELECT * FROM waka_webhook_subscriptions") == []


def test_the_audit_log_shows_webhooks_without_their_secrets(hooks: Hooks) -> None:
    from waka.audit import query

    made = hooks.add(secret="audit-secret", authorization="Bearer audit-token").json()
    hooks.api.patch(f"/apps/hooked/webhooks/{made['id']}", json={"secret": "next-secret"})
    hooks.api.delete(f"/apps/hooked/webhooks/{made['id']}")
    lines = [e.action for e in query(hooks.api.platform.ledger, app="hooked")]
    assert lines[-3:] == [
        "Add webhook https://receiver.example (api:release, sync)",
        "Update webhook https://receiver.example (secret)",
        "Remove webhook https://receiver.example",
    ]
    text = "\n".join(lines)
    for secret in ("audit-secret", "audit-token", "next-secret", "hook-pass", "s3cr3t-path"):
        assert secret not in text
