"""Automated Certificate Management (`heroku certs:auto:enable/disable/refresh`): switches
recorded in the ledger; the ACM reactor (waka/reactors/acm.py) gets the certificates."""

from __future__ import annotations

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.bootstrap import Platform
from waka.projections.acm import acm_enabled
from waka.sni_endpoints import refresh_acm, set_acm


def _shown(ctx: Ctx, app_id: str, name: str) -> dict:
    return {"acm": acm_enabled(ctx.platform.store, app_id), "id": app_id, "name": name}


def enable(ctx: Ctx) -> Reply:
    app = ctx.app()
    ctx.command(set_acm, ctx.platform.ledger, ctx.actor, ctx.app_id(app), True)
    return Reply(_shown(ctx, app["id"], app["name"]))


def disable(ctx: Ctx) -> Reply:
    app = ctx.app()
    ctx.command(set_acm, ctx.platform.ledger, ctx.actor, ctx.app_id(app), False)
    return Reply(_shown(ctx, app["id"], app["name"]))


def refresh(ctx: Ctx) -> Reply:
    app = ctx.app()
    ctx.command(refresh_acm, ctx.platform.ledger, ctx.actor, ctx.app_id(app))
    return Reply(_shown(ctx, app["id"], app["name"]))


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/acm", endpoint(platform, enable), methods=["POST"]),
        Route("/apps/{app}/acm", endpoint(platform, disable), methods=["DELETE"]),
        Route("/apps/{app}/acm", endpoint(platform, refresh), methods=["PATCH"]),
    ]
