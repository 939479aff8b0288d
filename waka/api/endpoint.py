"""The glue of every API route: read the body, authenticate, run the sync handler off the
event loop, and render JSON or an error in Heroku's shape.

Handlers are plain functions `handler(ctx) -> Reply` that parse, authorize, call one ledger
command or projection query, and render.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from waka.api.auth_limit import RateLimited, limiter_of
from waka.api.errors import ApiError, bad_request, not_found, unauthorized
from waka.bootstrap import Platform
from waka.domain import access
from waka.domain.account import hash_api_key
from waka.domain.actors import Actor
from waka.domain.authorization import SIGN_IN, scope_allows
from waka.domain.errors import DomainError
from waka.domain.passwords import verify_password
from waka.projections.accounts import account_by_key_hash
from waka.projections.apps import find_app
from waka.projections.authorizations import account_by_token_hash, password_hash_of
from waka.projections.collaborators import app_access
from waka.projections.store import Row

MAX_BODY = 1024 * 1024  # JSON bodies; config vars total 32 kB, nothing legitimate is bigger

T = TypeVar("T")


@dataclass
class Reply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Ctx:
    platform: Platform
    request: Request
    user: Row
    body: Any

    @property
    def actor(self) -> Actor:
        return {"id": self.user["id"], "email": self.user["email"]}

    @property
    def request_id(self) -> str:
        """The client's id of this request (the CLI sends the same again when it retries one
        whose connection broke), else one of ours."""
        return str(self.request.state.request_id)

    @property
    def actor_of_request(self) -> Actor:
        """The actor with this request's id: a command that keeps it in its event knows this
        request when it comes again, and does not apply it twice."""
        return {**self.actor, "request_id": self.request_id}

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def command(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ledger command, then bring the read models up to it (read-your-writes)."""
        result = fn(*args)
        self.platform.projector.catch_up()
        return result

    def app(self, permission: str | None = None) -> Row:
        """The app named in the path, on which the access policy lets the user do `permission`
        (by default what the request's method and path need: see access.permission_for)."""
        ident = self.param("app")
        row = find_app(self.platform.store, ident)
        if row is None:
            raise not_found("Couldn't find that app.")
        wanted = permission or access.permission_for(self.request.method, self.request.url.path)
        self.require(row, wanted)
        return row

    def may(self, app_row: Row, permission: str) -> bool:
        """Does the access policy let the user do `permission` on this app?"""
        return access.allows(app_access(self.platform.store, app_row), self.user["id"], permission)

    def require(self, app_row: Row, permission: str) -> None:
        """Heroku's 403 unless the user may do `permission` on this app."""
        if not self.may(app_row, permission):
            raise ApiError.from_domain(access.denied(app_row["name"]))

    def app_id(self, row: Row) -> UUID:
        return UUID(row["id"])

    def object_body(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise ApiError(422, "invalid_params", "Request body must be a JSON object.")
        return self.body


def json_response(reply: Reply, request_id: str) -> Response:
    return Response(
        orjson.dumps(reply.body),
        status_code=reply.status,
        media_type="application/json",
        headers={**reply.headers, "Request-Id": request_id},
    )


def error_reply(error: ApiError) -> Reply:
    body = {"id": error.error_id, "message": error.message}
    if error.resource:
        body["resource"] = error.resource
    if isinstance(error, RateLimited):
        return Reply(body, error.status, {"Retry-After": str(error.retry_after)})
    return Reply(body, error.status)


async def read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "request_entity_too_large", f"Request body is over {MAX_BODY} bytes.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(
                    413, "request_entity_too_large", f"Request body is over {MAX_BODY} bytes."
                )
            chunks.append(chunk)
    except ClientDisconnect:  # cut short, or a malformed chunked body the server gave up on
        raise bad_request("The request body ended before it was complete.") from None
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"Request body is not valid JSON: {error}.") from None


def api_key_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("Malformed Basic credentials.") from None
        return decoded.partition(":")[2] or None  # any user name; the API key is the password
    return None


def authenticate(platform: Platform, request: Request, *, sign_in: bool = False) -> Row:
    """The user whose API key or OAuth token the request carries (git's password too). A
    wrong key counts against the client's address, which is answered 429 once it has guessed
    too often (see auth_limit.py); no key at all does not count (git asks without one first).
    `sign_in`: Basic credentials may also be an email and its password (`heroku login -i`)."""
    limiter = limiter_of(platform)
    address = request.client.host if request.client else ""
    limiter.check(address)
    key = api_key_of(request)
    if key is None:
        raise unauthorized("Authentication required: send your API key as a Bearer token.")
    key_hash = hash_api_key(key)
    user = account_by_key_hash(platform.store, key_hash) or account_by_token_hash(
        platform.store, key_hash
    )
    if user is None and sign_in:
        user = _signed_in(platform, request)
    if user is None:
        limiter.failed(address)
        raise unauthorized("Invalid credentials provided.")
    scope = user["scope"].split(",") if user.get("scope") else None
    if not scope_allows(scope, request.method, request.url.path):
        raise ApiError(
            403, "forbidden", f"This token's scope ({user['scope']}) does not allow this request."
        )
    return user


def _signed_in(platform: Platform, request: Request) -> Row | None:
    """The account whose email and password are the request's Basic credentials."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    email, _, password = base64.b64decode(value.strip()).decode().partition(":")
    found = password_hash_of(platform.store, email)
    if found is None or not verify_password(password, found[1]):
        return None
    return {**found[0], "via": SIGN_IN}


def endpoint(
    platform: Platform, handler: Callable[[Ctx], Reply], *, sign_in: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        request_id = request.state.request_id
        try:
            body = await read_json(request) if request.method in ("POST", "PATCH", "PUT") else None
            reply = await run_in_threadpool(_run, platform, handler, request, body, sign_in)
        except ApiError as error:
            reply = error_reply(error)
        return json_response(reply, request_id)

    return route


def _run(
    platform: Platform,
    handler: Callable[[Ctx], Reply],
    request: Request,
    body: Any,
    sign_in: bool = False,
) -> Reply:
    user = authenticate(platform, request, sign_in=sign_in)
    try:
        return handler(Ctx(platform=platform, request=request, user=user, body=body))
    except DomainError as error:
        raise ApiError.from_domain(error) from None
