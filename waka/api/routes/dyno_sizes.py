"""Dyno sizes: the memory limit each size gives a dyno's container."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform
from waka.domain import rules


def _size(name: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "compute": 1,
        "cost": None,  # self-hosted: nothing to bill
        "dedicated": name.startswith("Performance"),
        "precise_dyno_units": 1.0,
        "generation": render.named("generation", "cedar"),
        "id": render.catalogue_id("dyno-size", name),
        "memory": rules.SIZE_MEMORY_MB[name] / 1024,  # GB, as Heroku reports it
        "name": name,
        "private_space_only": False,
    }


def list_sizes(ctx: Ctx) -> Reply:
    return Reply([_size(name) for name in rules.DYNO_SIZES])


def list_app_sizes(ctx: Ctx) -> Reply:
    ctx.app()  # an unknown app is a 404, as everywhere
    return list_sizes(ctx)


def show_size(ctx: Ctx) -> Reply:
    wanted = ctx.param("size").lower()
    for name in rules.DYNO_SIZES:
        size = _size(name)
        if wanted in (name.lower(), size["id"]):
            return Reply(size)
    raise not_found("Couldn't find that dyno size.")


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/dyno-sizes", endpoint(platform, list_sizes), methods=["GET"]),
        Route("/dyno-sizes/{size}", endpoint(platform, show_size), methods=["GET"]),
        Route(
            "/apps/{app}/available-dyno-sizes", endpoint(platform, list_app_sizes), methods=["GET"]
        ),
    ]
