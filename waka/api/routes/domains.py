"""Custom domains (`heroku domains:add`): the router sends their requests to the app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform
from waka.projections.acm import acm_domains, acm_enabled
from waka.projections.base import iso
from waka.projections.domains import domain_id, domains_of
from waka.projections.sni_endpoints import endpoint_domains, endpoints_of
from waka.projections.store import Row
from waka.sni_endpoints import set_domain_endpoint


def _render(
    app: Row,
    hostname: str,
    kind: str,
    created_at: str,
    settings: Any,
    sni: Row | None = None,
    acm: Row | bool = False,  # the domain's ACM row; True: ACM on, nothing recorded yet
) -> dict:
    return {
        "acm_status": acm["status"] if isinstance(acm, dict) else ("pending" if acm else None),
        "acm_status_reason": acm["reason"] if isinstance(acm, dict) else None,
        "app": {"id": app["id"], "name": app["name"]},
        # Point the name at the machine running waka; the router matches on the Host header.
        "cname": f"{app['name']}.{settings.public_host}" if kind == "custom" else None,
        "created_at": created_at,
        "hostname": hostname,
        "id": domain_id(app["id"], hostname),
        "kind": kind,
        "sni_endpoint": {"id": sni["id"], "name": sni["name"]} if sni else None,
        "status": "none",  # nothing to provision: the domain routes at once
        "updated_at": created_at,
    }


def _all(ctx: Ctx, app: Row) -> list[dict]:
    settings = ctx.platform.settings
    default = _render(
        app, f"{app['name']}.{settings.public_host}", "heroku", app["created_at"], settings
    )
    store = ctx.platform.store
    endpoints = {e["id"]: e for e in endpoints_of(store, app["id"])}
    chosen = endpoint_domains(store, app["id"])
    acm_on = acm_enabled(store, app["id"])
    acm = acm_domains(store, app["id"]) if acm_on else {}
    custom = [
        _render(
            app,
            d["hostname"],
            "custom",
            d["created_at"],
            settings,
            endpoints.get(chosen.get(d["hostname"], "")),
            acm.get(d["hostname"]) or acm_on,
        )
        for d in domains_of(store, app["id"])
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
    added = ctx.command(
        ctx.platform.ledger.add_domain,
        ctx.actor_of_request,  # the same request again is not refused as a second add
        ctx.app_id(app),
        hostname,
    )
    return Reply(next(d for d in _all(ctx, app) if d["hostname"] == added), 201)


def remove_domain(ctx: Ctx) -> Reply:
    app = ctx.app()
    wanted = ctx.param("domain").lower()
    domain = next((d for d in _all(ctx, app) if wanted in (d["hostname"], d["id"])), None)
    if domain is not None and domain["kind"] != "custom":
        raise not_found("Couldn't find that domain.")
    removed = ctx.command(
        ctx.platform.ledger.remove_domain,
        ctx.actor_of_request,  # the same request again is answered, not refused as gone
        ctx.app_id(app),
        domain["hostname"] if domain else wanted,
    )
    if domain is None:  # this request sent again: the domain as it was, timed now
        now = iso(datetime.now(UTC))
        domain = _render(app, removed, "custom", now, ctx.platform.settings)
    return Reply(domain)


def update_domain(ctx: Ctx) -> Reply:
    """`heroku domains:update HOST --cert NAME`: the certificate the router serves for it."""
    app = ctx.app()
    wanted = ctx.param("domain").lower()
    domain = next((d for d in _all(ctx, app) if wanted in (d["hostname"], d["id"])), None)
    if domain is None or domain["kind"] != "custom":
        raise not_found("Couldn't find that domain.")
    name = ctx.object_body().get("sni_endpoint")
    if name is not None and not isinstance(name, str):
        raise ApiError(422, "invalid_params", "sni_endpoint must be a certificate's name or id.")
    store = ctx.platform.store
    endpoints = endpoints_of(store, app["id"])
    chosen = next((e for e in endpoints if name in (e["id"], e["name"])), None)
    if name is not None and chosen is None:
        raise not_found(f"Couldn't find the certificate {name}.")
    current = endpoint_domains(store, app["id"]).get(domain["hostname"])
    ctx.command(
        set_domain_endpoint,
        ctx.platform.ledger,
        ctx.actor,
        ctx.app_id(app),
        domain["hostname"],
        UUID(chosen["id"]) if chosen else None,
        UUID(current) if current else None,
    )
    return Reply(next(d for d in _all(ctx, app) if d["hostname"] == domain["hostname"]))


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/domains", endpoint(platform, list_domains), methods=["GET"]),
        Route("/apps/{app}/domains", endpoint(platform, add_domain), methods=["POST"]),
        Route("/apps/{app}/domains/{domain}", endpoint(platform, show_domain), methods=["GET"]),
        Route(
            "/apps/{app}/domains/{domain}", endpoint(platform, remove_domain), methods=["DELETE"]
        ),
        Route("/apps/{app}/domains/{domain}", endpoint(platform, update_domain), methods=["PATCH"]),
    ]
