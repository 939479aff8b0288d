"""Releases: list, info by id or version, rollback (POST with {"release": ...}), a new
release of a slug (POST with {"slug": ...}, which `heroku releases:retry` sends), and the
release-phase output each release with a release phase has at its `output_stream_url`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.api.output_streams import follow_output
from waka.api.ranges import paginate
from waka.bootstrap import Platform
from waka.projections.apps import find_app
from waka.projections.builds import find_slug
from waka.projections.releases import find_release, release_by_output, releases_of
from waka.projections.store import Row

RANGE_FIELDS = {"id": lambda r: r["id"], "version": lambda r: r["version"]}


def list_releases(ctx: Ctx) -> Reply:
    row = ctx.app()
    settings = ctx.platform.settings
    releases = [
        render.release(r, row, settings) for r in releases_of(ctx.platform.store, row["id"])
    ]
    # Without a Range header Heroku lists by version, oldest first.
    header = ctx.request.headers.get("range") or "version ..; max=200"
    status, page, headers = paginate(releases, header, RANGE_FIELDS)
    return Reply(page, status, headers)


def show_release(ctx: Ctx) -> Reply:
    row = ctx.app()
    release = find_release(ctx.platform.store, row["id"], ctx.param("release"))
    if release is None:
        raise not_found("Couldn't find that release.")
    return Reply(render.release(release, row, ctx.platform.settings))


def create_release(ctx: Ctx) -> Reply:
    row = ctx.app()
    body = ctx.object_body()
    if "release" in body:
        target = find_release(ctx.platform.store, row["id"], str(body["release"]))
        if target is None:
            raise not_found("Couldn't find that release.")
        actor = ctx.actor_of_request  # the same request again is not a second rollback
        app = ctx.command(ctx.platform.ledger.rollback, actor, ctx.app_id(row), target["version"])
    elif "slug" in body:
        return _release_slug(ctx, row, body)
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
    return Reply(render.release(new, updated, ctx.platform.settings), 201, headers)


def _release_slug(ctx: Ctx, row: Row, body: dict[str, Any]) -> Reply:
    """A new release of a slug this app built, with the config vars of now. With a release
    phase it is pending until the phase ends (the builder's thread runs it)."""
    ref = body["slug"]
    slug_id = ref.get("id") if isinstance(ref, dict) else ref
    if not isinstance(slug_id, str) or not slug_id:
        raise ApiError(422, "invalid_params", "slug must be a slug id.")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise ApiError(422, "invalid_params", "description must be a string.")
    slug = find_slug(ctx.platform.store, row["id"], slug_id)
    if slug is None:
        raise not_found("Couldn't find that slug.")
    commit = slug["commit_sha"] or ""
    description = description or (f"Deploy {commit[:8]}" if commit else "Deploy")
    release = {"id": slug["id"], "process_types": orjson.loads(slug["process_types"])}
    _, version = ctx.command(
        ctx.platform.ledger.release_slug, ctx.actor, ctx.app_id(row), release, description
    )
    updated = find_app(ctx.platform.store, row["id"])
    new = find_release(ctx.platform.store, row["id"], str(version))
    assert updated is not None and new is not None
    return Reply(render.release(new, updated, ctx.platform.settings), 201)


def routes(platform: Platform) -> list[Route]:
    async def release_output(request: Request) -> Response:
        return follow_output(
            platform,
            platform.release_logs,
            request.path_params["output"],
            release_by_output,
            "Couldn't find that release output.",
        )

    return [
        Route("/release-output/{output}", release_output, methods=["GET"]),
        Route("/apps/{app}/releases", endpoint(platform, list_releases), methods=["GET"]),
        Route("/apps/{app}/releases", endpoint(platform, create_release), methods=["POST"]),
        Route("/apps/{app}/releases/{release}", endpoint(platform, show_release), methods=["GET"]),
    ]
