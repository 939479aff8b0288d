"""The Platform API as one Starlette application."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from waka.api import git
from waka.api.errors import ENDPOINT_NOT_FOUND, error_response
from waka.api.routes import (
    account,
    acm,
    addon_attachments,
    addon_services,
    addons,
    apps,
    authorizations,
    builds,
    collaborators,
    config_vars,
    data,
    domains,
    dyno_sizes,
    dynos,
    features,
    formation,
    logs,
    releases,
    run,
    sni_endpoints,
    stacks,
    teams,
    transfers,
    webhooks,
)
from waka.bootstrap import Platform
from waka.rendezvous import RendezvousServer

log = logging.getLogger("waka.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9\-_.]{1,200}$")


class RequestIdMiddleware:
    """Every response carries a Request-Id (the client's, if it sent a sane one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(b"request-id", b"").decode("latin-1")
        # The Heroku CLI sends this request's id first, then the ids of its earlier ones.
        sent = sent.split(",", 1)[0].strip()
        request_id = sent if _REQUEST_ID.match(sent) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"request-id"]
                headers.append((b"request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _not_found(request: Request, exc: Any) -> Response:
    return error_response(404, "not_found", ENDPOINT_NOT_FOUND)


async def _not_allowed(request: Request, exc: Any) -> Response:
    return error_response(405, "method_not_allowed", ENDPOINT_NOT_FOUND)


def _database_away(exc: BaseException | None) -> bool:
    """The database went away under the request (a restart, a failover, a full pool): the
    client may try again, as it would after any 503."""
    from eventsourcing.persistence import InterfaceError, OperationalError
    from psycopg import InterfaceError as PgInterfaceError
    from psycopg import OperationalError as PgOperationalError
    from psycopg_pool import PoolTimeout

    away = (OperationalError, InterfaceError, PgOperationalError, PgInterfaceError, PoolTimeout)
    seen = 0
    while exc is not None and seen < 10:  # the chain: eventsourcing wraps psycopg's error
        if isinstance(exc, away):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


async def _crashed(request: Request, exc: Exception) -> Response:
    # The trace goes to the operator's log, never to the user.
    # The route's template, not the path: a log stream's path is its secret token.
    route = getattr(request.scope.get("route"), "path", None) or "(no route)"
    if _database_away(exc):
        log.warning("database unavailable on %s %s: %s", request.method, route, exc)
        response = error_response(
            503, "unavailable", "The platform's database is unavailable; try again shortly."
        )
        response.headers["Retry-After"] = "1"
        return response
    log.exception("internal error on %s %s", request.method, route, exc_info=exc)
    return error_response(
        500, "internal_server_error", "Internal server error: the operator's log has the details."
    )


def create_api(platform: Platform, rendezvous: RendezvousServer | None = None) -> Starlette:
    routes = [
        *account.routes(platform),
        *authorizations.routes(platform),
        *apps.routes(platform),
        *config_vars.routes(platform),
        *releases.routes(platform),
        *formation.routes(platform),
        *run.routes(platform, rendezvous),  # POST /apps/{app}/dynos; GET/DELETE are in dynos
        *dynos.routes(platform),
        *collaborators.routes(platform),
        *addon_services.routes(platform),
        *addons.routes(platform),
        *addon_attachments.routes(platform),
        *data.routes(platform),
        *builds.routes(platform),
        *domains.routes(platform),
        *sni_endpoints.routes(platform),
        *acm.routes(platform),
        *features.routes(platform),
        *dyno_sizes.routes(platform),
        *stacks.routes(platform),
        *teams.routes(platform),
        *transfers.routes(platform),
        *webhooks.routes(platform),
        *logs.routes(platform, platform.logplex),
        *git.routes(platform),
    ]
    api = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _not_allowed, Exception: _crashed},
    )
    api.add_middleware(RequestIdMiddleware)
    return api
