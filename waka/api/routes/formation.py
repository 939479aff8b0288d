"""Formation: list, info, update one process type, batch update. No release is made."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.ranges import paginate
from waka.bootstrap import Platform
from waka.projections.formation import find_formation, formation_of

RANGE_FIELDS = {"id": lambda f: f["id"], "type": lambda f: f["type"]}


def _update(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ApiError(422, "invalid_params", "Each formation update must be an object.")
    update = {k: item[k] for k in ("type", "quantity", "size") if k in item}
    dyno_size = item.get("dyno_size")
    if isinstance(dyno_size, dict) and "size" not in update:
        update["size"] = dyno_size.get("name") or dyno_size.get("id")
    return update


def list_formation(ctx: Ctx) -> Reply:
    row = ctx.app()
    items = [render.formation(f, row) for f in formation_of(ctx.platform.store, row["id"])]
    status, page, headers = paginate(items, ctx.request.headers.get("range"), RANGE_FIELDS)
    return Reply(page, status, headers)


def show_formation(ctx: Ctx) -> Reply:
    row = ctx.app()
    found = find_formation(ctx.platform.store, row["id"], ctx.param("type"))
    if found is None:
        raise not_found("Couldn't find that formation.")
    return Reply(render.formation(found, row))


def update_one(ctx: Ctx) -> Reply:
    row = ctx.app()
    update = {**_update(ctx.object_body()), "type": ctx.param("type")}
    ctx.command(ctx.platform.ledger.scale, ctx.actor, ctx.app_id(row), [update])
    found = find_formation(ctx.platform.store, row["id"], update["type"])
    assert found is not None
    return Reply(render.formation(found, row))


def batch_update(ctx: Ctx) -> Reply:
    row = ctx.app()
    updates = ctx.object_body().get("updates")
    if not isinstance(updates, list):
        raise ApiError(422, "invalid_params", 'Body must be {"updates": [...]}.')
    checked = [_update(u) for u in updates]
    ctx.command(ctx.platform.ledger.scale, ctx.actor, ctx.app_id(row), checked)
    wanted = {u["type"] for u in checked}
    items = [
        render.formation(f, row)
        for f in formation_of(ctx.platform.store, row["id"])
        if f["type"] in wanted
    ]
    return Reply(items)


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/formation", endpoint(platform, list_formation), methods=["GET"]),
        Route("/apps/{app}/formation", endpoint(platform, batch_update), methods=["PATCH"]),
        Route("/apps/{app}/formation/{type}", endpoint(platform, show_formation), methods=["GET"]),
        Route("/apps/{app}/formation/{type}", endpoint(platform, update_one), methods=["PATCH"]),
    ]
