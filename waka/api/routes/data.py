"""The Heroku Data API, as far as the CLI's `pg:*` and `redis:*` commands use it.

The CLI sends these to HEROKU_DATA_HOST (a bare host name; the port is HEROKU_HOST's), so
`HEROKU_DATA_HOST=localhost` brings them here. A database not provisioned yet answers 404
with no message: that is how the CLI tells "not yet provisioned" from a real error.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

from starlette.routing import Route

from waka.addons.catalogue import find_service
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError
from waka.api.routes.addons import addon_not_found, wait_for_manager
from waka.bootstrap import Platform
from waka.domain import access
from waka.projections.addons import find_addon
from waka.projections.apps import find_app
from waka.projections.store import Row

NOT_PROVISIONED = Reply({"id": "not_found"}, 404)
RESET_WAIT = 30.0  # seconds pg:reset waits for the add-on manager


def _addon(ctx: Ctx, service: str) -> Row:
    row = find_addon(ctx.platform.store, ctx.param("addon"))
    app = find_app(ctx.platform.store, row["app_id"]) if row else None
    if row is None or row["service"] != service or app is None:
        raise addon_not_found()
    if not ctx.may(app, access.VIEW if ctx.request.method == "GET" else access.DEPLOY):
        raise addon_not_found()
    return row


def _url(ctx: Ctx, row: Row) -> str:
    return ctx.platform.ledger.get_addon(UUID(row["id"])).config.get("URL", "")


def _info(ctx: Ctx, row: Row) -> list[dict[str, Any]]:
    service = find_service(row["service"])
    assert service is not None
    plan = service.find_plan(row["plan"]) or service.default_plan
    facts = [("Plan", plan.human_name)]
    facts += ctx.platform.addon_resources.facts(row["service"], row["id"], plan)
    seen: set[str] = set()
    unique = [(k, v) for k, v in facts if not (k in seen or seen.add(k))]
    return [{"name": name, "values": [str(value)]} for name, value in unique]


# --- Heroku Postgres ------------------------------------------------------------------------


def pg_database(ctx: Ctx) -> Reply:
    row = _addon(ctx, "heroku-postgresql")
    if row["state"] != "provisioned":
        return NOT_PROVISIONED
    return Reply({"resource_url": _url(ctx, row), "info": _info(ctx, row)})


def pg_reset(ctx: Ctx) -> Reply:
    """`pg:reset`: the add-on manager empties the database; answered once it has (or 202)."""
    row = _addon(ctx, "heroku-postgresql")
    if ctx.object_body().get("extensions"):
        raise ApiError(422, "invalid_params", "Installing extensions on reset is not supported.")
    reset = ctx.command(ctx.platform.ledger.request_reset, ctx.actor, UUID(row["id"]))
    if wait_for_manager(ctx.platform, row["id"], lambda r: r["resets_done"] >= reset, RESET_WAIT):
        return Reply({"message": f"{row['name']} was reset."})
    return Reply({"message": f"{row['name']} is being reset."}, 202)


def pg_connection_reset(ctx: Ctx) -> Reply:
    """`pg:killall`: end every session on the database now (sessions are not ledger state)."""
    row = _addon(ctx, "heroku-postgresql")
    if row["state"] != "provisioned":
        return NOT_PROVISIONED
    ended = ctx.platform.addon_resources.end_sessions(row["service"], row["id"])
    return Reply({"message": f"Ended {ended} connections to {row['name']}."})


def pg_wait_status(ctx: Ctx) -> Reply:
    row = _addon(ctx, "heroku-postgresql")
    return Reply(_wait(row))


def pg_credentials(ctx: Ctx) -> Reply:
    row = _addon(ctx, "heroku-postgresql")
    if ctx.param("credential") != "default" or row["state"] != "provisioned":
        return Reply({"id": "not_found", "message": "Couldn't find that credential."}, 404)
    url = urlparse(_url(ctx, row))
    return Reply(
        {
            "uuid": row["id"],
            "name": "default",
            "state": "active",
            "database": url.path.lstrip("/"),
            "host": url.hostname,
            "port": url.port or 5432,
            "credentials": [
                {
                    "user": unquote(url.username or ""),
                    "password": unquote(url.password or ""),
                    "state": "active",
                }
            ],
        }
    )


# --- Heroku Key-Value Store (Redis) ---------------------------------------------------------


def redis_database(ctx: Ctx) -> Reply:
    row = _addon(ctx, "heroku-redis")
    if row["state"] != "provisioned":
        return NOT_PROVISIONED
    service = find_service(row["service"])
    assert service is not None
    plan = service.find_plan(row["plan"]) or service.default_plan
    return Reply(
        {
            "name": row["name"],
            "plan": plan.name,  # premium-0, as Heroku names it (no service prefix)
            # The CLI's redis:cli speaks TLS to port + 1 for a plan not named "hobby" without
            # native TLS: each server listens there too (Heroku's old stunnel layout).
            "prefer_native_tls": False,
            "resource_url": _url(ctx, row),
            "info": _info(ctx, row),
        }
    )


def redis_wait(ctx: Ctx) -> Reply:
    return Reply(_wait(_addon(ctx, "heroku-redis")))


def _wait(row: Row) -> dict[str, Any]:
    return {
        "waiting?": row["state"] == "provisioning",
        "error?": row["state"] == "failed",
        "message": row["message"]
        or ("available" if row["state"] == "provisioned" else row["state"]),
    }


def routes(platform: Platform) -> list[Route]:
    def get(path: str, handler: Any) -> Route:
        return Route(path, endpoint(platform, handler), methods=["GET"])

    return [
        get("/client/v11/databases/{addon}", pg_database),
        get("/client/v11/databases/{addon}/wait_status", pg_wait_status),
        Route("/client/v11/databases/{addon}/reset", endpoint(platform, pg_reset), methods=["PUT"]),
        Route(
            "/client/v11/databases/{addon}/connection_reset",
            endpoint(platform, pg_connection_reset),
            methods=["POST"],
        ),
        get("/postgres/v0/databases/{addon}/credentials/{credential}", pg_credentials),
        get("/redis/v0/databases/{addon}", redis_database),
        get("/redis/v0/databases/{addon}/wait", redis_wait),
    ]
