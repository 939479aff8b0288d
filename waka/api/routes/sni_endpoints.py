"""SNI endpoints (`heroku certs`, `certs:add/info/update/remove`): an app's TLS certificates,
which the router serves for its custom domains. The private key never leaves waka again: no
response carries it."""

from __future__ import annotations

from uuid import UUID

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform
from waka.domain.certificate import parse_chain
from waka.projections.base import iso
from waka.projections.domains import domain_id
from waka.projections.sni_endpoints import endpoint_domains, endpoints_of
from waka.projections.store import Row
from waka.sni_endpoints import add_endpoint, remove_endpoint, update_endpoint


def render(app: Row, row: Row, domains: dict[str, str]) -> dict:
    info = parse_chain(row["certificate_chain"])
    acm = bool(row["acm"])
    return {
        "app": {"id": app["id"], "name": app["name"]},
        "certificate_chain": row["certificate_chain"],
        "created_at": row["created_at"],
        "display_name": None,
        # Heroku lists the ids of the domains the certificate serves.
        "domains": sorted(domain_id(app["id"], h) for h, e in domains.items() if e == row["id"]),
        "id": row["id"],
        "name": row["name"],
        "ssl_cert": {
            "acm": acm,
            # Only ACM's certificates are known to come from a CA clients trust (the ACME
            # server's); waka does not judge an uploaded chain against a trust store.
            "ca_signed?": acm,
            "cert_domains": list(info.cert_domains),
            "expires_at": iso(info.expires_at),
            "id": row["id"],
            "issuer": info.issuer,
            "self_signed?": info.self_signed,
            "starts_at": iso(info.starts_at),
            "subject": info.subject,
        },
        "updated_at": row["updated_at"],
    }


def _find(ctx: Ctx, app: Row) -> Row:
    wanted = ctx.param("sni_endpoint")
    for row in endpoints_of(ctx.platform.store, app["id"]):
        if wanted in (row["id"], row["name"]):
            return row
    raise not_found("Couldn't find that SNI endpoint.")


def _reply(ctx: Ctx, app: Row, endpoint_id: UUID, status: int = 200) -> Reply:
    store = ctx.platform.store
    row = next(r for r in endpoints_of(store, app["id"]) if r["id"] == str(endpoint_id))
    return Reply(render(app, row, endpoint_domains(store, app["id"])), status)


def list_endpoints(ctx: Ctx) -> Reply:
    app = ctx.app()
    store = ctx.platform.store
    domains = endpoint_domains(store, app["id"])
    return Reply([render(app, row, domains) for row in endpoints_of(store, app["id"])])


def show_endpoint(ctx: Ctx) -> Reply:
    app = ctx.app()
    row = _find(ctx, app)
    return Reply(render(app, row, endpoint_domains(ctx.platform.store, app["id"])))


def create_endpoint(ctx: Ctx) -> Reply:
    app = ctx.app()
    body = ctx.object_body()
    taken = frozenset(r["name"] for r in endpoints_of(ctx.platform.store, app["id"]))
    created, _ = ctx.command(
        lambda: add_endpoint(
            ctx.platform.ledger,
            ctx.actor,
            ctx.app_id(app),
            body.get("certificate_chain"),
            body.get("private_key"),
            taken=taken,
        )
    )
    return _reply(ctx, app, created.id, 201)


def update(ctx: Ctx) -> Reply:
    app = ctx.app()
    row = _find(ctx, app)
    body = ctx.object_body()
    ctx.command(
        update_endpoint,
        ctx.platform.ledger,
        ctx.actor,
        ctx.app_id(app),
        UUID(row["id"]),
        body.get("certificate_chain"),
        body.get("private_key"),
    )
    return _reply(ctx, app, UUID(row["id"]))


def delete(ctx: Ctx) -> Reply:
    app = ctx.app()
    row = _find(ctx, app)
    shown = render(app, row, endpoint_domains(ctx.platform.store, app["id"]))
    ctx.command(remove_endpoint, ctx.platform.ledger, ctx.actor, ctx.app_id(app), UUID(row["id"]))
    return Reply(shown)


def routes(platform: Platform) -> list[Route]:
    base = "/apps/{app}/sni-endpoints"
    one = base + "/{sni_endpoint}"
    return [
        Route(base, endpoint(platform, list_endpoints), methods=["GET"]),
        Route(base, endpoint(platform, create_endpoint), methods=["POST"]),
        Route(one, endpoint(platform, show_endpoint), methods=["GET"]),
        Route(one, endpoint(platform, update), methods=["PATCH"]),
        Route(one, endpoint(platform, delete), methods=["DELETE"]),
    ]
