"""Add-on attachments: an add-on under a name on an app (DATABASE -> DATABASE_URL), on its
own app or on others; and the resolve action the CLI's pg:* commands use to find one.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.routes.addons import (
    attachment_not_found,
    ident_of,
    owned,
    render_attachment,
    uuid_of,
    visible_addon,
    visible_attachment,
)
from waka.bootstrap import Platform
from waka.domain import access
from waka.projections.addons import (
    addons_of_owner,
    attachments_of_addon,
    attachments_of_app,
    find_addon,
    find_attachment,
)
from waka.projections.apps import find_app
from waka.projections.store import Row


def list_all_attachments(ctx: Ctx) -> Reply:
    rows = [
        a
        for addon in addons_of_owner(ctx.platform.store, ctx.user["id"])
        for a in attachments_of_addon(ctx.platform.store, addon["id"])
    ]
    return Reply([render_attachment(ctx.platform, r) for r in rows])


def list_app_attachments(ctx: Ctx) -> Reply:
    rows = attachments_of_app(ctx.platform.store, ctx.app()["id"])
    return Reply([render_attachment(ctx.platform, r) for r in rows])


def list_addon_attachments(ctx: Ctx) -> Reply:
    addon = visible_addon(ctx, ctx.param("addon"))
    rows = attachments_of_addon(ctx.platform.store, addon["id"])
    return Reply([render_attachment(ctx.platform, r) for r in rows])


def show_attachment(ctx: Ctx) -> Reply:
    return Reply(render_attachment(ctx.platform, visible_attachment(ctx, ctx.param("attachment"))))


def show_app_attachment(ctx: Ctx) -> Reply:
    row = visible_attachment(ctx, ctx.param("attachment"), ctx.app())
    return Reply(render_attachment(ctx.platform, row))


def create_attachment(ctx: Ctx) -> Reply:
    body = ctx.object_body()
    addon_ident, app_ident = ident_of(body.get("addon")), ident_of(body.get("app"))
    if not isinstance(addon_ident, str) or not isinstance(app_ident, str):
        raise ApiError(422, "invalid_params", "addon and app are required (ids or names).")
    app = find_app(ctx.platform.store, app_ident)
    if app is None or not ctx.may(app, access.VIEW):
        raise not_found("Couldn't find that app.")
    ctx.require(app, access.DEPLOY)
    addon = visible_addon(ctx, addon_ident)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(422, "invalid_params", "name must be a string.")
    attachment_id = ctx.command(
        ctx.platform.ledger.attach_addon,
        ctx.actor_of_request,  # the same request again is not a second attachment
        uuid_of(addon),
        uuid_of(app),
        name,
    )
    row = find_attachment(ctx.platform.store, attachment_id)
    assert row is not None
    return Reply(render_attachment(ctx.platform, row), 201)


def destroy_attachment(ctx: Ctx) -> Reply:
    row = visible_attachment(ctx, ctx.param("attachment"))
    rendered = render_attachment(ctx.platform, row)
    ctx.command(ctx.platform.ledger.detach_addon, ctx.actor, UUID(row["addon_id"]), row["id"])
    return Reply(rendered)


def resolve_attachments(ctx: Ctx) -> Reply:
    """By attachment id; with an app also by attachment name (DATABASE) or config var name
    (DATABASE_URL); `app::NAME` names the app in the identifier."""
    body = ctx.object_body()
    ident, app_ident = body.get("addon_attachment"), body.get("app")
    service = body.get("addon_service")
    if not isinstance(ident, str) or not ident:
        raise ApiError(422, "invalid_params", "addon_attachment is required.")
    if "::" in ident:
        app_ident, _, ident = ident.partition("::")
    store = ctx.platform.store
    by_id = find_attachment(store, ident)
    candidates: list[Row] = [by_id] if by_id and owned(ctx, by_id["app_id"]) else []
    if not candidates and isinstance(app_ident, str) and app_ident:
        app = find_app(store, app_ident)
        if app is None or not ctx.may(app, access.VIEW):
            raise ApiError(404, "not_found", "Couldn't find that app.", resource="app")
        wanted = ident.upper()
        candidates = [
            a
            for a in attachments_of_app(store, app["id"])
            if wanted in (a["name"], *attachment_vars(store, a))
        ]
    matches = []
    for attachment in candidates:
        addon = find_addon(store, attachment["addon_id"])
        if addon is None or (isinstance(service, str) and service and addon["service"] != service):
            continue
        matches.append(attachment)
    if not matches:
        raise attachment_not_found()
    return Reply([render_attachment(ctx.platform, m) for m in matches])


def attachment_vars(store: Any, attachment: Row) -> list[str]:
    addon = find_addon(store, attachment["addon_id"])
    keys = orjson.loads(addon["config_keys"]) if addon else []
    return [f"{attachment['name']}_{key}" for key in keys]


def routes(platform: Platform) -> list[Route]:
    def get(path: str, handler: Any) -> Route:
        return Route(path, endpoint(platform, handler), methods=["GET"])

    return [
        get("/addons/{addon}/addon-attachments", list_addon_attachments),
        get("/addon-attachments", list_all_attachments),
        get("/addon-attachments/{attachment}", show_attachment),
        get("/apps/{app}/addon-attachments", list_app_attachments),
        get("/apps/{app}/addon-attachments/{attachment}", show_app_attachment),
        Route("/addon-attachments", endpoint(platform, create_attachment), methods=["POST"]),
        Route(
            "/addon-attachments/{attachment}",
            endpoint(platform, destroy_attachment),
            methods=["DELETE"],
        ),
        Route(
            "/actions/addon-attachments/resolve",
            endpoint(platform, resolve_attachments),
            methods=["POST"],
        ),
    ]
