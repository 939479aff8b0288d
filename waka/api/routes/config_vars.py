"""Config vars: the app's current ones, a release's, and PATCH with null to unset."""

from __future__ import annotations

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform
from waka.projections.config_vars import config_of
from waka.projections.releases import find_release


def show_config(ctx: Ctx) -> Reply:
    return Reply(config_of(ctx.platform.store, ctx.app()["id"]))


def update_config(ctx: Ctx) -> Reply:
    row = ctx.app()
    actor = ctx.actor_of_request  # the same request again is not a second release
    ctx.command(ctx.platform.ledger.set_config, actor, ctx.app_id(row), ctx.object_body())
    return Reply(config_of(ctx.platform.store, row["id"]))


def release_config(ctx: Ctx) -> Reply:
    """A past release's config vars: the ledger replayed to that release."""
    row = ctx.app()
    release = find_release(ctx.platform.store, row["id"], ctx.param("release"))
    if release is None:
        raise not_found("Couldn't find that release.")
    config = ctx.platform.ledger.config_at_release(ctx.app_id(row), release["version"])
    return Reply(dict(sorted(config.items())))


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/config-vars", endpoint(platform, show_config), methods=["GET"]),
        Route("/apps/{app}/config-vars", endpoint(platform, update_config), methods=["PATCH"]),
        Route(
            "/apps/{app}/releases/{release}/config-vars",
            endpoint(platform, release_config),
            methods=["GET"],
        ),
    ]
