"""Custom domains (`heroku domains:add`): the router sends their requests to the app."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform
from waka.projections.domains import domain_id, domains_of
from waka.projections.store import Row


def _render(app: Row, hostname: str, kind: str, created_at: str, settings: Any) -> dict:
    return {
        "acm_status": None,
        "acm_status_reason": None,
        "app": {"id": app["id"], "name": app["name"]},
        # Point the name at the machine running waka; the router matches on the Host header.
        "cname": f"{app['name']}.{settings.public_host}" if kind == "custom" else None,
        "created_at": created_at,
        "hostname": hostname,
        "id": domain_id(app["id"], hostname),
        "kind": kind,
        "sni_endpoint": None,
        "status": "none",  # nothing to provision: the domain routes at once
        "updated_at": created_at,
    }


def _all(ctx: Ctx, app: Row) -> list[dict]:
    settings = ctx.platform.settings
    default = _render(
        app, f"{app['name']}.{settings.public_host}", "heroku", app["created_at"], settings
    )
    custom = [
        _render(app, d["hostname"], "custom", d["created_at"], settings)
        for d in domains_of(ctx.platform.store, app["id"])
    ]
    return [default, *custom]


def list_domains(ctx: Ctx) -> Reply:
    return Reply(_all(ctx, ctx.app()))


def show_domain(ctx: Ctx) -> Reply:
    wanted = ctx.param("domain").lower()
    for domain in _all(ctx, ctx.app()):
        if wanted in (domain["hostname"], domain["id"]):
            return Reply(domain)
    raise not_found("Couldn't find that domain.")


def add_domain(ctx: Ctx) -> Reply:
    app = ctx.app()
    hostname = ctx.object_body().get("hostname")
    if not isinstance(hostname, str):
        raise ApiError(422, "invalid_params", "hostname is required: the domain to add.")
    added = ctx.command(ctx.platform.ledger.add_domain, ctx.actor, ctx.app_id(app), hostname)
    ctx.platform.wake_dyno_manager()  # the router learns the name on the next tick
    return Reply(next(d for d in _all(ctx, app) if d["hostname"] == added), 201)


def remove_domain(ctx: Ctx) -> Reply:
    app = ctx.app()
    wanted = ctx.param("domain").lower()
    domain = next((d for d in _all(ctx, app) if wanted in (d["hostname"], d["id"])), None)
    if domain is None or domain["kind"] != "custom":
        raise not_found("Couldn't find that domain.")
    ctx.command(ctx.platform.ledger.remove_domain, ctx.actor, ctx.app_id(app), domain["hostname"])
    ctx.platform.wake_dyno_manager()
    return Reply(domain)


def list_sni_endpoints(ctx: Ctx) -> Reply:
    ctx.app()
    return Reply([])  # TLS termination is not part of the router yet


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/domains", endpoint(platform, list_domains), methods=["GET"]),
        Route("/apps/{app}/domains", endpoint(platform, add_domain), methods=["POST"]),
        Route("/apps/{app}/domains/{domain}", endpoint(platform, show_domain), methods=["GET"]),
        Route(
            "/apps/{app}/domains/{domain}", endpoint(platform, remove_domain), methods=["DELETE"]
        ),
        Route("/apps/{app}/sni-endpoints", endpoint(platform, list_sni_endpoints), methods=["GET"]),
    ]
