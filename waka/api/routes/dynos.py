"""Dynos: what runs now (runtime facts from the dyno manager, not the ledger), and restarts
(ledger actions: the dyno manager replaces every dyno a restart covers)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform
from waka.domain.app import release_id
from waka.projections.store import Row


def _render(dyno: dict[str, Any], app: Row) -> dict[str, Any]:
    return {
        "attach_url": None,
        "command": dyno["command"],
        "created_at": dyno["created_at"][:19] + "Z" if dyno["created_at"] else None,
        "id": str(uuid5(UUID(app["id"]), dyno["container_id"])),
        "name": dyno["name"],
        "release": {
            "id": str(release_id(UUID(app["id"]), dyno["release"])),
            "version": dyno["release"],
        },
        "app": {"id": app["id"], "name": app["name"]},
        "size": dyno["size"],
        "state": dyno["state"],
        "type": dyno["type"],
        "updated_at": dyno["created_at"][:19] + "Z" if dyno["created_at"] else None,
    }


def _extended(dyno: dict[str, Any]) -> dict[str, Any]:
    """`heroku ps --extended`: where the dyno runs (the node, on a Swarm) and is reached."""
    address = dyno.get("address") or [None, None]
    return {"instance": dyno.get("host") or None, "ip": address[0], "port": address[1]}


def _running(ctx: Ctx, app: Row) -> list[dict[str, Any]]:
    extended = ctx.request.query_params.get("extended") == "true"
    return [
        {**_render(d, app), "extended": _extended(d)} if extended else _render(d, app)
        for d in ctx.platform.dynos_of(app["id"])
    ]


def list_dynos(ctx: Ctx) -> Reply:
    app = ctx.app()
    return Reply(_running(ctx, app))


def show_dyno(ctx: Ctx) -> Reply:
    app = ctx.app()
    wanted = ctx.param("dyno")
    for dyno in _running(ctx, app):
        if wanted in (dyno["name"], dyno["id"]):
            return Reply(dyno)
    raise not_found("Couldn't find that dyno.")


def restart(ctx: Ctx) -> Reply:
    """DELETE /apps/:app/dynos[/:dyno], DELETE /apps/:app/formations/:type, and the stop
    actions: a formation dyno that stops is started again, so both are restarts."""
    app = ctx.app()
    target = ctx.request.path_params.get("dyno") or ctx.request.path_params.get("type") or ""
    ctx.command(ctx.platform.ledger.restart_dynos, ctx.actor, ctx.app_id(app), target)
    return Reply({}, 202)


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/dynos", endpoint(platform, list_dynos), methods=["GET"]),
        Route("/apps/{app}/dynos", endpoint(platform, restart), methods=["DELETE"]),
        Route("/apps/{app}/dynos/{dyno}", endpoint(platform, show_dyno), methods=["GET"]),
        Route("/apps/{app}/dynos/{dyno}", endpoint(platform, restart), methods=["DELETE"]),
        Route(
            "/apps/{app}/dynos/{dyno}/actions/stop", endpoint(platform, restart), methods=["POST"]
        ),
        Route("/apps/{app}/formations/{type}", endpoint(platform, restart), methods=["DELETE"]),
        Route(
            "/apps/{app}/formations/{type}/actions/stop",
            endpoint(platform, restart),
            methods=["POST"],
        ),
    ]
