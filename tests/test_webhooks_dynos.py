"""`dyno` webhook events: the dyno manager tells the webhook reactor, in-process, of each
dyno's observed state (they are not ledger facts), and the receiver gets them in order."""

from __future__ import annotations

from pathlib import Path

from tests import test_dyno_backoff
from tests.deploys import deploy
from tests.test_dyno_backoff import FakeDynos
from tests.test_webhooks import OPTIONS, Clock, Receiver
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.reactors.dyno_manager import DynoManager
from waka.reactors.webhooks import WebhookReactor
from waka.webhooks import add_webhook

listening = test_dyno_backoff.listening  # the fixture: a socket a fake web dyno "binds"


def test_dyno_states_reach_the_webhook_in_order(
    platform: Platform,
    actor: Actor,
    listening: tuple[str, int],
    tmp_path: Path,
) -> None:
    (tmp_path / "slug").mkdir()
    slug = platform.slugs.create(tmp_path / "slug")
    app = platform.ledger.create_app(actor, "dynohooks")
    add_webhook(
        platform.ledger,
        actor,
        app.id,
        {"include": ["dyno"], "level": "sync", "url": "http://receiver.example/"},
    )
    deploy(platform.ledger, actor, app.id, {"web": "python app.py"}, slug_id=slug.id)
    platform.projector.catch_up()
    receiver = Receiver()
    reactor = WebhookReactor(platform.ledger, platform.store, OPTIONS, receiver, Clock())
    reactor.capture()  # knows the subscription; the release is not a `dyno` event

    dynos = FakeDynos(listening)
    manager = DynoManager(
        platform.store,
        platform.slugs,
        dynos,  # type: ignore[arg-type]
        log_line=lambda *_: None,
        route=lambda _: None,
    )
    manager.dyno_events = reactor.dyno_changed
    manager.tick()  # started
    manager.tick()  # bound: up
    dynos.crash("web.1")
    manager.tick()  # crashed, and restarted at once
    reactor.deliver_due()

    seen = [(b["action"], b["data"]["name"], b["data"]["state"]) for _, b, _, _ in receiver.got]
    assert seen == [
        ("create", "web.1", "starting"),
        ("update", "web.1", "up"),
        ("update", "web.1", "crashed"),
        ("create", "web.1", "starting"),
    ]
    first = receiver.got[0][1]
    assert first["resource"] == "dyno" and first["data"]["type"] == "web"
    assert first["data"]["app"]["id"] == str(app.id)
    assert first["webhook_metadata"]["event"]["include"] == "dyno"


def test_a_failing_webhook_store_never_stops_the_dynos(
    platform: Platform,
    actor: Actor,
    listening: tuple[str, int],
    tmp_path: Path,
) -> None:
    (tmp_path / "slug").mkdir()
    slug = platform.slugs.create(tmp_path / "slug")
    app = platform.ledger.create_app(actor, "dynohooks")
    deploy(platform.ledger, actor, app.id, {"web": "python app.py"}, slug_id=slug.id)
    platform.projector.catch_up()
    dynos = FakeDynos(listening)
    manager = DynoManager(
        platform.store,
        platform.slugs,
        dynos,  # type: ignore[arg-type]
        log_line=lambda *_: None,
        route=lambda _: None,
    )

    def broken(*_: object) -> None:
        raise RuntimeError("store unavailable")

    manager.dyno_events = broken
    manager.tick()
    manager.tick()
    assert [s.name for s in dynos.started] == ["web.1"]
    assert manager.dynos_of(str(app.id))[0]["state"] == "up"
