"""GET /account and /users/{~|email|id}."""

from __future__ import annotations

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform


def _user_or_self(ctx: Ctx) -> None:
    wanted = ctx.param("user")
    if wanted not in ("~", ctx.user["id"], ctx.user["email"]):
        # Without team admin roles, a user may only read their own account.
        raise not_found("Couldn't find that user.")


def show_account(ctx: Ctx) -> Reply:
    return Reply(render.account(ctx.user))


def show_user(ctx: Ctx) -> Reply:
    _user_or_self(ctx)
    return Reply(render.account(ctx.user))


def unsupported(ctx: Ctx) -> Reply:
    raise ApiError(
        405, "method_not_allowed", "Accounts are managed by the operator with `waka users:*`."
    )


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/account", endpoint(platform, show_account), methods=["GET"]),
        Route("/account", endpoint(platform, unsupported), methods=["PATCH", "DELETE"]),
        Route("/users/{user}", endpoint(platform, show_user), methods=["GET"]),
    ]
