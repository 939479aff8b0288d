"""Add-ons: create, list, show, rename, change plan, destroy; the shapes of add-ons and
attachments; and the resolve action the Heroku CLI uses to find an add-on by name.

Provisioning is done by the add-on manager; creating an add-on waits a little for it, so a
quick provider answers 201 with the add-on provisioned (as Heroku does), a slow one 202 with
it still provisioning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import orjson
from starlette.routing import Route

from waka.addons.catalogue import find_service
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform
from waka.domain import access
from waka.projections.addons import (
    addons_of_app,
    addons_of_owner,
    attachments_of_addon,
    attachments_of_app,
    find_addon,
    find_attachment,
)
from waka.projections.apps import find_app
from waka.projections.base import iso
from waka.projections.store import Row

CREATE_WAIT = 20.0  # seconds a create waits for the provider before answering 202

# --- rendering ------------------------------------------------------------------------------


def app_ref(store: Any, app_id: str) -> dict[str, str]:
    row = find_app(store, app_id)
    return {"id": app_id, "name": row["name"] if row else ""}


def render_addon(platform: Platform, row: Row) -> dict[str, Any]:
    service = find_service(row["service"])
    assert service is not None
    plan = service.find_plan(row["plan"]) or service.default_plan
    app = app_ref(platform.store, row["app_id"])
    keys = orjson.loads(row["config_keys"])
    config_vars = [
        f"{a['name']}_{key}"
        for a in attachments_of_addon(platform.store, row["id"])
        if a["app_id"] == row["app_id"]
        for key in keys
    ]
    return {
        "actions": [],
        "addon_service": {"id": str(service.id), "name": service.name},
        "billing_entity": {"id": app["id"], "name": app["name"], "type": "app"},
        "app": app,
        "billed_price": {"cents": plan.price_cents, "contract": False, "unit": "month"},
        "config_vars": config_vars,
        "created_at": row["created_at"],
        "id": row["id"],
        "name": row["name"],
        "plan": {
            "id": str(service.plan_id(plan)),
            "name": f"{service.name}:{plan.name}",
            "price": {"cents": plan.price_cents, "contract": False, "unit": "month"},
        },
        "provider_id": row["id"],
        "provision_message": row["message"] or None,
        "state": api_state(row["state"]),
        "updated_at": row["updated_at"],
        "web_url": web_url(platform, row["id"]),
    }


def web_url(platform: Platform, addon_id: str) -> str:
    """There are no add-on dashboards here: `heroku addons:open` gets the add-on's resource
    in the Platform API (JSON, for a client that sends the API key)."""
    return f"{platform.settings.api_url}/addons/{addon_id}"


def api_state(state: str) -> str:
    """Heroku's API has no "failed": an add-on whose provisioning failed is `deprovisioned`
    (the CLI shows "errored", and `addons:create` says it was unable to be created), with
    the reason in `provision_message`."""
    return "deprovisioned" if state == "failed" else state


def render_attachment(platform: Platform, row: Row) -> dict[str, Any]:
    addon = find_addon(platform.store, row["addon_id"])
    keys = orjson.loads(addon["config_keys"]) if addon else []
    addon_ref: dict[str, Any] = {"id": row["addon_id"], "name": addon["name"] if addon else ""}
    if addon is not None:
        addon_ref["app"] = app_ref(platform.store, addon["app_id"])
        service = find_service(addon["service"])
        if service is not None:
            plan = service.find_plan(addon["plan"]) or service.default_plan
            addon_ref["plan"] = {
                "id": str(service.plan_id(plan)),
                "name": f"{service.name}:{plan.name}",
            }
    return {
        "addon": addon_ref,
        "app": app_ref(platform.store, row["app_id"]),
        "config_vars": [f"{row['name']}_{key}" for key in keys],
        "created_at": row["created_at"],
        "id": row["id"],
        "name": row["name"],
        "namespace": None,
        "updated_at": row["updated_at"],
        "web_url": web_url(platform, row["addon_id"]),
        "log_input_url": None,
    }


# --- lookups --------------------------------------------------------------------------------


def addon_not_found() -> ApiError:
    return ApiError(404, "not_found", "Couldn't find that add on.", resource="add_on")


def attachment_not_found() -> ApiError:
    return ApiError(
        404, "not_found", "Couldn't find that add on attachment.", resource="add_on attachment"
    )


def owned(ctx: Ctx, app_id: str) -> bool:
    """May the user see this app (the access policy's view)?"""
    app = find_app(ctx.platform.store, app_id)
    return app is not None and ctx.may(app, access.VIEW)


def visible_addon(ctx: Ctx, ident: str, app: Row | None = None) -> Row:
    """An add-on the user may see, by id or name (on `app` when given)."""
    row = find_addon(ctx.platform.store, ident)
    if row is None and app is not None:  # an attachment name: DATABASE
        row = next(
            (
                find_addon(ctx.platform.store, a["addon_id"])
                for a in attachments_of_app(ctx.platform.store, app["id"])
                if a["name"] == ident.upper()
            ),
            None,
        )
    if row is None or not owned(ctx, row["app_id"]):
        raise addon_not_found()
    if app is not None and row["app_id"] != app["id"]:
        attached = {a["app_id"] for a in attachments_of_addon(ctx.platform.store, row["id"])}
        if app["id"] not in attached:
            raise addon_not_found()
    return row


def visible_attachment(ctx: Ctx, ident: str, app: Row | None = None) -> Row:
    row = find_attachment(ctx.platform.store, ident)
    if row is None and app is not None:
        row = next(
            (a for a in attachments_of_app(ctx.platform.store, app["id"]) if a["name"] == ident),
            None,
        )
    if (
        row is None
        or not owned(ctx, row["app_id"])
        or (app is not None and row["app_id"] != app["id"])
    ):
        raise attachment_not_found()
    return row


# --- add-ons --------------------------------------------------------------------------------


def list_all_addons(ctx: Ctx) -> Reply:
    rows = addons_of_owner(ctx.platform.store, ctx.user["id"])
    return Reply([render_addon(ctx.platform, r) for r in rows])


def list_app_addons(ctx: Ctx) -> Reply:
    rows = addons_of_app(ctx.platform.store, ctx.app()["id"])
    return Reply([render_addon(ctx.platform, r) for r in rows])


def show_addon(ctx: Ctx) -> Reply:
    return Reply(render_addon(ctx.platform, visible_addon(ctx, ctx.param("addon"))))


def show_app_addon(ctx: Ctx) -> Reply:
    return Reply(render_addon(ctx.platform, visible_addon(ctx, ctx.param("addon"), ctx.app())))


def create_addon(ctx: Ctx) -> Reply:
    app = ctx.app()
    body = ctx.object_body()
    attachment = body.get("attachment") or {}
    if not isinstance(attachment, dict):
        raise ApiError(422, "invalid_params", 'attachment must be an object like {"name": ...}.')
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(422, "invalid_params", "name must be a string.")
    if body.get("config"):
        raise ApiError(
            422, "invalid_params", "These add-ons take no provisioning config; choose a plan."
        )
    plan = body.get("plan")
    if isinstance(plan, dict):  # the CLI sends {"plan": {"name": "heroku-postgresql:..."}}
        plan = plan.get("name")
    addon = ctx.command(
        ctx.platform.ledger.create_addon,
        ctx.actor_of_request,  # the same request again is not a second add-on
        ctx.app_id(app),
        plan,
        name,
        attachment.get("name"),
    )
    wait_for_manager(
        ctx.platform, str(addon.id), lambda r: r["state"] != "provisioning", CREATE_WAIT
    )
    row = find_addon(ctx.platform.store, str(addon.id))
    if row is None:  # destroyed meanwhile
        raise addon_not_found()
    return Reply(render_addon(ctx.platform, row), 201 if row["state"] == "provisioned" else 202)


def wait_for_manager(
    platform: Platform, addon_id: str, done: Callable[[Row], bool], timeout: float
) -> bool:
    """Give a running add-on manager a moment to do the add-on's work (a database takes
    ~0.1 s); True once `done` holds for its row, or the row is gone."""
    if not platform.addon_manager_active:
        return False  # no manager leading anywhere: the answer is "under way"
    deadline = time.monotonic() + timeout
    while True:
        platform.projector.catch_up()
        row = find_addon(platform.store, addon_id)
        if row is None or done(row):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def update_addon(ctx: Ctx) -> Reply:
    row = visible_addon(ctx, ctx.param("addon"), ctx.app())
    body = ctx.object_body()
    plan = body.get("plan")
    if isinstance(plan, dict):  # the CLI sends {"plan": {"name": "heroku-redis:premium-0"}}
        plan = plan.get("name")
    if plan is not None:
        ctx.command(ctx.platform.ledger.change_addon_plan, ctx.actor, uuid_of(row), plan)
    if "name" in body:
        ctx.command(ctx.platform.ledger.rename_addon, ctx.actor, uuid_of(row), body["name"])
    updated = find_addon(ctx.platform.store, row["id"])
    assert updated is not None
    return Reply(render_addon(ctx.platform, updated))


def destroy_addon(ctx: Ctx) -> Reply:
    app = ctx.app()
    try:
        row = visible_addon(ctx, ctx.param("addon"), app)
    except ApiError:
        gone = _destroyed_by(ctx, ctx.param("addon"))
        if gone is None:
            raise
        return Reply(render_addon(ctx.platform, gone))  # this request sent again
    rendered = render_addon(ctx.platform, row)  # with its config vars, before it is detached
    ctx.command(ctx.platform.ledger.destroy_addon, ctx.actor_of_request, uuid_of(row))
    return Reply({**rendered, "state": "deprovisioned"})


def _destroyed_by(ctx: Ctx, ident: str) -> Row | None:
    """The add-on (by id) this request destroyed, when it is sent again, as its row was."""
    try:
        addon_id = UUID(ident)
    except ValueError:
        return None
    addon = ctx.platform.ledger.addon_destroyed_by(ctx.actor_of_request, addon_id)
    if addon is None:
        return None
    return {
        "id": str(addon.id),
        "name": addon.name,
        "service": addon.service,
        "plan": addon.plan,
        "app_id": addon.app_id,
        "config_keys": "[]",  # detached everywhere: no config var left
        "message": "",
        "state": "deprovisioned",
        "created_at": iso(addon.created_on),
        "updated_at": iso(addon.modified_on),
    }


# --- resolve actions (the CLI's way of finding an add-on from what the user typed) ----------


def resolve_addons(ctx: Ctx) -> Reply:
    body = ctx.object_body()
    ident, app_ident, service = body.get("addon"), body.get("app"), body.get("addon_service")
    if not isinstance(ident, str) or not ident:
        raise ApiError(422, "invalid_params", "addon is required: a name, id or attachment name.")
    app = None
    if isinstance(app_ident, str) and app_ident:
        app = find_app(ctx.platform.store, app_ident)
        if app is None or not ctx.may(app, access.VIEW):
            raise not_found("Couldn't find that app.")
    matches = _resolve(ctx, ident, app)
    if isinstance(service, str) and service:
        matches = [m for m in matches if m["service"] == service]
    if not matches:
        raise addon_not_found()
    return Reply([render_addon(ctx.platform, m) for m in matches])


def _resolve(ctx: Ctx, ident: str, app: Row | None) -> list[Row]:
    store = ctx.platform.store
    direct = find_addon(store, ident)
    if direct is not None and owned(ctx, direct["app_id"]):
        return [direct]
    if app is None:
        return []
    by_attachment = [
        find_addon(store, a["addon_id"])
        for a in attachments_of_app(store, app["id"])
        if a["name"] == ident.upper()
    ]
    by_service = [r for r in addons_of_app(store, app["id"]) if r["service"] == ident]
    found = [r for r in by_attachment if r is not None] or by_service
    return list({r["id"]: r for r in found}.values())


def ident_of(value: Any) -> Any:
    """An id or name, given bare or as {"id": ...} / {"name": ...} (the CLI sends objects)."""
    if isinstance(value, dict):
        return value.get("id") or value.get("name")
    return value


def uuid_of(row: Row) -> UUID:
    return UUID(row["id"])


def routes(platform: Platform) -> list[Route]:
    def get(path: str, handler: Any) -> Route:
        return Route(path, endpoint(platform, handler), methods=["GET"])

    return [
        get("/addons", list_all_addons),
        get("/addons/{addon}", show_addon),
        get("/apps/{app}/addons", list_app_addons),
        get("/apps/{app}/addons/{addon}", show_app_addon),
        Route("/apps/{app}/addons", endpoint(platform, create_addon), methods=["POST"]),
        Route("/apps/{app}/addons/{addon}", endpoint(platform, update_addon), methods=["PATCH"]),
        Route("/apps/{app}/addons/{addon}", endpoint(platform, destroy_addon), methods=["DELETE"]),
        Route("/actions/addons/resolve", endpoint(platform, resolve_addons), methods=["POST"]),
    ]
