"""Dynos: none run until the dyno manager exists, so the list is empty and honest."""

from __future__ import annotations

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform


def list_dynos(ctx: Ctx) -> Reply:
    ctx.app()
    return Reply([])


def show_dyno(ctx: Ctx) -> Reply:
    ctx.app()
    raise not_found("Couldn't find that dyno.")


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/dynos", endpoint(platform, list_dynos), methods=["GET"]),
        Route("/apps/{app}/dynos/{dyno}", endpoint(platform, show_dyno), methods=["GET"]),
    ]
