"""App webhooks (`heroku webhooks:*`): the subscriptions, their deliveries and events.

The secret is shown once, in the `Heroku-Webhook-Secret` header of the create response (the
CLI prints it), never in a body. Deliveries and events are the webhook reactor's records.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.ranges import paginate
from waka.bootstrap import Platform
from waka.projections.store import Row
from waka.projections.webhooks import find_webhook, webhooks_of
from waka.reactors import webhooks as reactor
from waka.webhooks import add_webhook, remove_webhook, update_webhook

STATUSES = ("pending", "scheduled", "retrying", "failed", "succeeded")


def render_webhook(webhook: dict[str, Any], app: Row) -> dict[str, Any]:
    return {
        "app": {"id": app["id"], "name": app["name"]},
        "created_at": webhook["created_at"],
        "id": webhook["id"],
        "include": webhook["include"],
        "level": webhook["level"],
        "updated_at": webhook["updated_at"],
        "url": webhook["url"],
    }


def render_delivery(row: Row) -> dict[str, Any]:
    return {
        "created_at": row["created_at"],
        "event": {"id": row["event_id"], "include": row["include"]},
        "id": row["id"],
        "num_attempts": row["num_attempts"],
        "next_attempt_at": reactor.iso_at(row["next_attempt_at"]),
        "last_attempt": json.loads(row["last_attempt"]) if row["last_attempt"] else None,
        "status": row["status"],
        "updated_at": row["updated_at"],
        "webhook": {"id": row["webhook_id"], "level": row["level"]},
    }


def render_event(row: Row) -> dict[str, Any]:
    return {
        "created_at": row["created_at"],
        "id": row["id"],
        "include": row["include"],
        "payload": json.loads(row["payload"]),
        "updated_at": row["created_at"],
    }


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise not_found(f"Couldn't find that {what}.") from None


def _webhook(ctx: Ctx, app: Row) -> dict[str, Any]:
    webhook = find_webhook(ctx.platform.store, str(_uuid(ctx.param("webhook"), "webhook")))
    if webhook is None or webhook["app_id"] != app["id"]:
        raise not_found("Couldn't find that webhook.")
    return webhook


def list_webhooks(ctx: Ctx) -> Reply:
    app = ctx.app()
    return Reply([render_webhook(w, app) for w in webhooks_of(ctx.platform.store, app["id"])])


def create_webhook(ctx: Ctx) -> Reply:
    app = ctx.app()
    made = ctx.command(
        add_webhook,
        ctx.platform.ledger,
        ctx.actor_of_request,  # the same request again is not a second webhook
        ctx.app_id(app),
        ctx.object_body(),
    )
    webhook = find_webhook(ctx.platform.store, str(made.id))
    assert webhook is not None
    return Reply(render_webhook(webhook, app), 201, {"Heroku-Webhook-Secret": made.secret})


def show_webhook(ctx: Ctx) -> Reply:
    app = ctx.app()
    return Reply(render_webhook(_webhook(ctx, app), app))


def patch_webhook(ctx: Ctx) -> Reply:
    app = ctx.app()
    webhook = _webhook(ctx, app)
    ctx.command(
        update_webhook,
        ctx.platform.ledger,
        ctx.actor,
        ctx.app_id(app),
        UUID(webhook["id"]),
        ctx.object_body(),
    )
    updated = find_webhook(ctx.platform.store, webhook["id"])
    assert updated is not None
    return Reply(render_webhook(updated, app))


def delete_webhook(ctx: Ctx) -> Reply:
    app = ctx.app()
    webhook = _webhook(ctx, app)
    ctx.command(
        remove_webhook, ctx.platform.ledger, ctx.actor, ctx.app_id(app), UUID(webhook["id"])
    )
    return Reply(render_webhook(webhook, app))


def list_deliveries(ctx: Ctx) -> Reply:
    app = ctx.app()
    status = ctx.request.query_params.get("eq[status]")
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_params", f"status must be one of {', '.join(STATUSES)}.")
    rows = reactor.delivery_rows(ctx.platform.store, app["id"], status)
    items = [{**render_delivery(r), "_seq": r["seq"]} for r in rows]
    header = ctx.request.headers.get("range") or "seq ..; max=200"
    code, page, headers = paginate(
        items, header, {"seq": lambda d: d["_seq"], "id": lambda d: d["id"]}
    )
    return Reply([{k: v for k, v in d.items() if k != "_seq"} for d in page], code, headers)


def show_delivery(ctx: Ctx) -> Reply:
    app = ctx.app()
    delivery_id = str(_uuid(ctx.param("delivery"), "delivery"))
    row = reactor.find_delivery(ctx.platform.store, app["id"], delivery_id)
    if row is None:
        raise not_found("Couldn't find that delivery.")
    return Reply(render_delivery(row))


def list_events(ctx: Ctx) -> Reply:
    app = ctx.app()
    return Reply([render_event(r) for r in reactor.event_rows(ctx.platform.store, app["id"])])


def show_event(ctx: Ctx) -> Reply:
    app = ctx.app()
    row = reactor.find_event(ctx.platform.store, app["id"], str(_uuid(ctx.param("event"), "event")))
    if row is None:
        raise not_found("Couldn't find that event.")
    return Reply(render_event(row))


def routes(platform: Platform) -> list[Route]:
    reactor.setup(platform.store)  # the reactor's tables, read here even before it first runs
    hook = "/apps/{app}/webhooks/{webhook}"
    return [
        Route("/apps/{app}/webhooks", endpoint(platform, list_webhooks), methods=["GET"]),
        Route("/apps/{app}/webhooks", endpoint(platform, create_webhook), methods=["POST"]),
        Route(hook, endpoint(platform, show_webhook), methods=["GET"]),
        Route(hook, endpoint(platform, patch_webhook), methods=["PATCH"]),
        Route(hook, endpoint(platform, delete_webhook), methods=["DELETE"]),
        Route(
            "/apps/{app}/webhook-deliveries", endpoint(platform, list_deliveries), methods=["GET"]
        ),
        Route(
            "/apps/{app}/webhook-deliveries/{delivery}",
            endpoint(platform, show_delivery),
            methods=["GET"],
        ),
        Route("/apps/{app}/webhook-events", endpoint(platform, list_events), methods=["GET"]),
        Route(
            "/apps/{app}/webhook-events/{event}", endpoint(platform, show_event), methods=["GET"]
        ),
    ]
