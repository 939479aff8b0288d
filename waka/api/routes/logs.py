"""Logs: log sessions read as Server-Sent Events (`heroku logs [--tail]`), and log drains.

`POST /apps/:app/log-sessions` checks who asks and remembers the request behind a random
token; `GET /log-streams/:token` (no credentials: the URL is the permission, as Heroku's
logplex_url is) answers with the recent lines as SSE events, `id: <seq>` and `data: <line>`,
and with `tail` keeps the stream open for new lines, with a comment as heartbeat. A client
that reconnects with Last-Event-ID resumes after that line.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, error_response, not_found
from waka.bootstrap import Platform
from waka.logplex.lines import SOURCES, LogLine
from waka.logplex.logplex import BUFFER_LINES, Logplex, LogplexUnavailable
from waka.logplex.sessions import LogSession, LogSessions
from waka.projections.apps import find_app
from waka.projections.base import iso
from waka.projections.drains import drains_of, find_drain
from waka.projections.store import Row

if TYPE_CHECKING:
    from waka.logplex.redis_logplex import RedisLogplex

DEFAULT_LINES = 100
HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle tail
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DYNO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GONE = "Couldn't find that log session; it may have expired. Start a new one."
DOWN = "Logs are unavailable right now: waka cannot reach its log store (Redis). Try again soon."


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


def _session_params(body: dict[str, Any]) -> tuple[int, str | None, str | None, bool]:
    """lines, source, dyno, tail from a log-session body. The CLI sends `dyno` (a dyno name
    or a process type); the schema names them `dyno_name` and `type`."""
    lines = body.get("lines")
    if lines is None:
        lines = DEFAULT_LINES
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
        raise invalid("lines must be a whole number of at least 1.")
    lines = min(lines, BUFFER_LINES)  # as on Heroku: the buffer holds no more than this
    source = body.get("source")
    if source is not None and source not in SOURCES:
        raise invalid(f"source must be one of: {', '.join(SOURCES)}.")
    dyno = None
    for key in ("dyno", "dyno_name", "type"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not _DYNO.match(value):
            raise invalid(f"{key} must be a dyno name (web.1) or a process type (web).")
        if dyno is not None and value != dyno:
            raise invalid("Give one of dyno, dyno_name or type.")
        dyno = value
    tail = body.get("tail")
    if tail is None:
        tail = False
    if not isinstance(tail, bool):
        raise invalid("tail must be true or false.")
    return lines, source, dyno, tail


def _event(line: LogLine) -> str:
    return f"id: {line.seq}\ndata: {line.format()}\n\n"


def _events(lines: list[LogLine]) -> bytes:
    return "".join(_event(x) for x in lines).encode("utf-8", "replace")


def render_drain(row: Row, app_row: Row) -> dict[str, Any]:
    return {
        "addon": None,
        "app": {"id": app_row["id"], "name": app_row["name"]},
        "created_at": row["created_at"],
        "id": row["id"],
        "token": row["token"],
        "updated_at": row["updated_at"],
        "url": row["url"],
    }


def routes(
    platform: Platform,
    logplex: Logplex | RedisLogplex,
    sessions: LogSessions | None = None,
    heartbeat: float = HEARTBEAT,
) -> list[Route]:
    sessions = sessions or LogSessions()

    def create_session(ctx: Ctx) -> Reply:
        row = ctx.app()
        lines, source, dyno, tail = _session_params(ctx.object_body())
        try:
            logplex.check()  # a clear error now, rather than a stream that fails
        except LogplexUnavailable:
            raise ApiError(503, "unavailable", DOWN) from None
        session = sessions.open(row["id"], lines, source, dyno, tail)
        at = iso(session.created_at)
        url = f"{platform.settings.api_url}/log-streams/{session.token}"
        return Reply(
            {"created_at": at, "id": session.id, "logplex_url": url, "updated_at": at}, 201
        )

    def list_drains(ctx: Ctx) -> Reply:
        row = ctx.app()
        return Reply([render_drain(d, row) for d in drains_of(platform.store, row["id"])])

    def create_drain(ctx: Ctx) -> Reply:
        row = ctx.app()
        url = ctx.object_body().get("url")
        if not isinstance(url, str) or not url.strip():
            raise invalid("url is required: the drain's https:// or syslog+tls:// URL.")
        added = ctx.command(
            platform.ledger.add_drain,
            ctx.actor_of_request,  # the same request again is not refused as a second add
            ctx.app_id(row),
            url.strip(),
        )
        drain = find_drain(platform.store, row["id"], added["id"])
        assert drain is not None
        return Reply(render_drain(drain, row), 201)

    def _drain(ctx: Ctx, row: Row) -> Row:
        drain = find_drain(platform.store, row["id"], ctx.param("drain"))
        if drain is None:
            raise not_found("Couldn't find that log drain.")
        return drain

    def show_drain(ctx: Ctx) -> Reply:
        row = ctx.app()
        return Reply(render_drain(_drain(ctx, row), row))

    def delete_drain(ctx: Ctx) -> Reply:
        row = ctx.app()
        drain = find_drain(platform.store, row["id"], ctx.param("drain"))
        removed = ctx.command(
            platform.ledger.remove_drain,
            ctx.actor_of_request,  # the same request again is answered, not refused as gone
            ctx.app_id(row),
            drain["id"] if drain else ctx.param("drain"),
        )
        if drain is None:  # this request sent again: the drain as it was, timed now
            now = iso(datetime.now(UTC))
            drain = {**removed, "created_at": now, "updated_at": now}
        return Reply(render_drain(drain, row))

    async def log_stream(request: Request) -> Response:
        session = sessions.get(request.path_params["token"])
        if session is None:
            return error_response(404, "not_found", GONE)
        if await run_in_threadpool(find_app, platform.store, session.app_id) is None:
            return error_response(404, "not_found", GONE)  # the app was destroyed
        try:  # off the loop: on Redis these are network calls
            if not session.tail:
                recent = await run_in_threadpool(
                    logplex.recent, session.app_id, session.lines, session.source, session.dyno
                )
                return Response(
                    _events(recent), media_type="text/event-stream", headers=SSE_HEADERS
                )
            await run_in_threadpool(logplex.check)
        except LogplexUnavailable:
            return error_response(503, "unavailable", DOWN)
        return StreamingResponse(
            _tail(session, _last_event_id(request)),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    async def _tail(session: LogSession, after: int | None) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:  # in the stream, so that it is closed however the stream ends
            feed = await run_in_threadpool(
                lambda: logplex.subscribe(
                    session.app_id,
                    session.source,
                    session.dyno,
                    backlog=session.lines,
                    after=after,
                    loop=loop,
                )
            )
        except LogplexUnavailable:  # Redis went away since the check: the stream ends
            return
        with feed:
            yield b": waka logplex\n\n"  # headers and a first byte now, even for a quiet app
            while True:
                try:
                    lines = await asyncio.wait_for(feed.batch(), heartbeat)
                except TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                if not lines:  # the app was destroyed
                    return
                yield _events(lines)

    return [
        Route("/apps/{app}/log-sessions", endpoint(platform, create_session), methods=["POST"]),
        Route("/log-streams/{token}", log_stream, methods=["GET"]),
        Route("/apps/{app}/log-drains", endpoint(platform, list_drains), methods=["GET"]),
        Route("/apps/{app}/log-drains", endpoint(platform, create_drain), methods=["POST"]),
        # `heroku drains:remove URL` sends the URL percent-encoded, slashes and all.
        Route(
            "/apps/{app}/log-drains/{drain:path}", endpoint(platform, show_drain), methods=["GET"]
        ),
        Route(
            "/apps/{app}/log-drains/{drain:path}",
            endpoint(platform, delete_drain),
            methods=["DELETE"],
        ),
    ]


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id", "").strip()
    return int(raw) if raw.isdigit() else None
