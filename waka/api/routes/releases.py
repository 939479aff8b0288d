"""Releases: list, info by id or version, and rollback (POST with {"release": ...})."""

from __future__ import annotations

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.ranges import paginate
from waka.bootstrap import Platform
from waka.projections.apps import find_app
from waka.projections.releases import find_release, releases_of

RANGE_FIELDS = {"id": lambda r: r["id"], "version": lambda r: r["version"]}


def list_releases(ctx: Ctx) -> Reply:
    row = ctx.app()
    releases = [render.release(r, row) for r in releases_of(ctx.platform.store, row["id"])]
    # Without a Range header Heroku lists by version, oldest first.
    header = ctx.request.headers.get("range") or "version ..; max=200"
    status, page, headers = paginate(releases, header, RANGE_FIELDS)
    return Reply(page, status, headers)


def show_release(ctx: Ctx) -> Reply:
    row = ctx.app()
    release = find_release(ctx.platform.store, row["id"], ctx.param("release"))
    if release is None:
        raise not_found("Couldn't find that release.")
    return Reply(render.release(release, row))


def create_release(ctx: Ctx) -> Reply:
    row = ctx.app()
    body = ctx.object_body()
    if "release" in body:
        target = find_release(ctx.platform.store, row["id"], str(body["release"]))
        if target is None:
            raise not_found("Couldn't find that release.")
        app = ctx.command(
            ctx.platform.ledger.rollback, ctx.actor, ctx.app_id(row), target["version"]
        )
    elif "slug" in body:
        raise not_found("Couldn't find that slug.")  # slugs are made by builds
    else:
        raise ApiError(422, "invalid_params", "Give a release to roll back to, or a slug.")
    updated = find_app(ctx.platform.store, row["id"])
    new = find_release(ctx.platform.store, row["id"], str(app.latest_release))
    assert updated is not None and new is not None
    headers = {}
    kept = sorted({f"{a['addon_name']} as {a['name']}" for a in app.attachments.values()})
    if kept:  # the CLI prints this header as a warning
        headers["X-Heroku-Warning"] = (
            f"Rollback keeps the add-ons attached now ({', '.join(kept)}) and their current "
            "config vars; add-ons are not rolled back."
        )
    return Reply(render.release(new, updated), 201, headers)


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/releases", endpoint(platform, list_releases), methods=["GET"]),
        Route("/apps/{app}/releases", endpoint(platform, create_release), methods=["POST"]),
        Route("/apps/{app}/releases/{release}", endpoint(platform, show_release), methods=["GET"]),
    ]
