"""Builds: create from a source tarball, list, info, the output stream; the build cache;
slugs; buildpack installations; and source blobs served by waka itself (`POST /sources`)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from waka.adapters.sources import SourceError, SourceTooLarge
from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, error_response, not_found
from waka.api.output_streams import follow_output
from waka.api.ranges import paginate
from waka.bootstrap import Platform
from waka.projections.builds import (
    build_by_id,
    buildpacks_of,
    builds_of,
    find_build,
    find_slug,
)

WRITE_EVERY = 1 << 20  # bytes of an upload handed to the source store at once
RANGE_FIELDS = {"id": lambda b: b["id"], "created_at": lambda b: b["created_at"]}


def _source_url(body: dict[str, Any]) -> tuple[str, str]:
    blob = body.get("source_blob")
    if not isinstance(blob, dict) or not isinstance(blob.get("url"), str) or not blob["url"]:
        raise ApiError(422, "invalid_params", "source_blob.url is required: a tarball's URL.")
    version = blob.get("version") or ""
    if not isinstance(version, str):
        raise ApiError(422, "invalid_params", "source_blob.version must be a string.")
    return blob["url"], version


def _buildpack_names(items: Any, fields: tuple[str, ...]) -> list[str]:
    """Builds send `buildpacks: [{"url"|"name": ...}]`; installations `updates: [{"buildpack":
    ...}]`. Either way, a list of names or URLs."""
    if not isinstance(items, list):
        raise ApiError(422, "invalid_params", "Buildpacks must be a list.")
    names = []
    for item in items:
        value = next((item[f] for f in fields if isinstance(item, dict) and item.get(f)), None)
        if not isinstance(value, str) or not value.strip():
            raise ApiError(422, "invalid_params", "Each buildpack needs a name or a URL.")
        names.append(value.strip())
    return names


def create_build(ctx: Ctx) -> Reply:
    row = ctx.app()
    body = ctx.object_body()
    url, version = _source_url(body)
    ledger, app_id = ctx.platform.ledger, ctx.app_id(row)
    if body.get("buildpacks"):
        ctx.command(
            ledger.set_buildpacks,
            ctx.actor,
            app_id,
            _buildpack_names(body["buildpacks"], ("url", "name")),
        )
    build_id = ctx.command(ledger.request_build, ctx.actor, app_id, url, version)
    build = find_build(ctx.platform.store, row["id"], build_id)
    assert build is not None
    return Reply(render.build(build, row, ctx.platform.settings), 201)


def list_builds(ctx: Ctx) -> Reply:
    row = ctx.app()
    items = [
        render.build(b, row, ctx.platform.settings)
        for b in builds_of(ctx.platform.store, row["id"])
    ]
    status, page, headers = paginate(items, ctx.request.headers.get("range"), RANGE_FIELDS)
    return Reply(page, status, headers)


def show_build(ctx: Ctx) -> Reply:
    row = ctx.app()
    build = find_build(ctx.platform.store, row["id"], ctx.param("build"))
    if build is None:
        raise not_found("Couldn't find that build.")
    return Reply(render.build(build, row, ctx.platform.settings))


def clear_build_cache(ctx: Ctx) -> Reply:
    row = ctx.app()
    ctx.command(ctx.platform.ledger.clear_build_cache, ctx.actor, ctx.app_id(row))
    return Reply({}, 202)


def show_slug(ctx: Ctx) -> Reply:
    row = ctx.app()
    slug = find_slug(ctx.platform.store, row["id"], ctx.param("slug"))
    if slug is None:
        raise not_found("Couldn't find that slug.")
    return Reply(render.slug(slug))


def list_buildpacks(ctx: Ctx) -> Reply:
    row = ctx.app()
    return Reply(render.buildpack_installations(buildpacks_of(ctx.platform.store, row["id"])))


def update_buildpacks(ctx: Ctx) -> Reply:
    row = ctx.app()
    names = _buildpack_names(ctx.object_body().get("updates"), ("buildpack",))
    ctx.command(ctx.platform.ledger.set_buildpacks, ctx.actor, ctx.app_id(row), names)
    return Reply(render.buildpack_installations(buildpacks_of(ctx.platform.store, row["id"])))


def create_source(ctx: Ctx) -> Reply:
    token = ctx.platform.sources.new_token()
    url = f"{ctx.platform.settings.api_url}/sources/{token}"
    return Reply({"source_blob": {"get_url": url, "put_url": url}}, 201)


def routes(platform: Platform) -> list[Route]:
    async def put_source(request: Request) -> Response:
        """Upload a source tarball; the URL itself is the permission (like a signed URL).
        The store is written from the thread pool (on PostgreSQL each MiB is a query)."""
        upload = platform.sources.upload(request.path_params["token"])
        try:
            sink = await run_in_threadpool(upload.__enter__)
            try:
                pending = bytearray()
                async for chunk in request.stream():
                    pending += chunk
                    if len(pending) >= WRITE_EVERY:
                        await run_in_threadpool(sink.write, bytes(pending))
                        pending.clear()
                await run_in_threadpool(sink.write, bytes(pending))
            except BaseException as error:  # nothing of a cut-off or refused upload is kept
                await run_in_threadpool(upload.__exit__, type(error), error, error.__traceback__)
                raise
            await run_in_threadpool(upload.__exit__, None, None, None)
        except SourceTooLarge as error:
            return error_response(413, "request_entity_too_large", str(error))
        except SourceError as error:
            return error_response(404, "not_found", str(error))
        return Response(status_code=200)

    async def get_source(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            if await run_in_threadpool(platform.sources.exists, token):
                return StreamingResponse(
                    platform.sources.chunks(token), media_type="application/octet-stream"
                )
        except SourceError:
            pass
        return error_response(404, "not_found", "Couldn't find that source blob.")

    async def build_output(request: Request) -> Response:
        return follow_output(
            platform,
            platform.build_logs,
            request.path_params["build"],
            build_by_id,
            "Couldn't find that build.",
        )

    return [
        Route("/apps/{app}/builds", endpoint(platform, list_builds), methods=["GET"]),
        Route("/apps/{app}/builds", endpoint(platform, create_build), methods=["POST"]),
        Route("/apps/{app}/builds/{build}", endpoint(platform, show_build), methods=["GET"]),
        Route("/apps/{app}/build-cache", endpoint(platform, clear_build_cache), methods=["DELETE"]),
        Route("/apps/{app}/slugs/{slug}", endpoint(platform, show_slug), methods=["GET"]),
        Route(
            "/apps/{app}/buildpack-installations",
            endpoint(platform, list_buildpacks),
            methods=["GET"],
        ),
        Route(
            "/apps/{app}/buildpack-installations",
            endpoint(platform, update_buildpacks),
            methods=["PUT"],
        ),
        Route("/sources", endpoint(platform, create_source), methods=["POST"]),
        Route("/sources/{token}", put_source, methods=["PUT"]),
        Route("/sources/{token}", get_source, methods=["GET"]),
        Route("/builds/{build}/output", build_output, methods=["GET"]),
    ]
