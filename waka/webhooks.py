"""Commands on app webhooks: check the request against the app, then record ledger events."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from waka.domain.actors import Actor
from waka.domain.errors import Conflict, NotFound
from waka.domain.webhook import (
    AppWebhook,
    check_include,
    check_level,
    check_optional_text,
    check_url,
    new_secret,
)
from waka.ledger import retry_on_conflict


def _check_app(ledger: Any, actor: Actor, app_id: UUID) -> None:
    app = ledger.get_app(app_id)
    if app.destroyed:
        raise NotFound("Couldn't find that app.")
    app.check_access(actor, team_roles=ledger.team_roles(app))


def get_webhook(ledger: Any, webhook_id: UUID, app_id: UUID) -> AppWebhook:
    try:
        webhook = ledger.repository.get(webhook_id)
    except AggregateNotFoundError:
        raise NotFound("Couldn't find that webhook.") from None
    if not isinstance(webhook, AppWebhook):
        raise NotFound("Couldn't find that webhook.")
    webhook.check_live(app_id)
    return webhook


def add_webhook(ledger: Any, actor: Actor, app_id: UUID, body: dict[str, Any]) -> AppWebhook:
    """A new webhook; its secret (the given one, or a new one) is on the returned aggregate."""
    url = check_url(body.get("url"))
    include = check_include(body.get("include"))
    level = check_level(body.get("level"))
    secret = check_optional_text("secret", body.get("secret")) or new_secret()
    authorization = check_optional_text("authorization", body.get("authorization"))
    _check_app(ledger, actor, app_id)
    made = ledger.made_by(AppWebhook, actor)
    if made is not None:  # this request sent again: answered with the webhook it made
        if made.removed or (made.app_id, made.url) != (app_id, url):
            raise Conflict("This Request-Id was used to create another webhook.")
        return made
    webhook = AppWebhook(
        app_id=app_id,
        url=url,
        include=include,
        level=level,
        secret=secret,
        authorization=authorization,
        actor=actor,
    )
    ledger.save(webhook)
    return webhook


@retry_on_conflict
def update_webhook(
    ledger: Any, actor: Actor, app_id: UUID, webhook_id: UUID, body: dict[str, Any]
) -> AppWebhook:
    checks = {
        "url": check_url,
        "include": check_include,
        "level": check_level,
        "secret": lambda v: check_optional_text("secret", v),
        "authorization": lambda v: check_optional_text("authorization", v),
    }
    changes = {k: check(body[k]) for k, check in checks.items() if body.get(k) is not None}
    _check_app(ledger, actor, app_id)
    webhook = get_webhook(ledger, webhook_id, app_id)
    webhook.update(changes, actor)
    ledger.save(webhook)
    return webhook


@retry_on_conflict
def remove_webhook(ledger: Any, actor: Actor, app_id: UUID, webhook_id: UUID) -> AppWebhook:
    _check_app(ledger, actor, app_id)
    webhook = get_webhook(ledger, webhook_id, app_id)
    webhook.remove(actor)
    ledger.save(webhook)
    return webhook
