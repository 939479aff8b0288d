"""Stacks: the one stack waka builds and runs on, `waka-bookworm`.

Builds and dynos run in containers of the image `waka/stack:bookworm` (labelled
`waka.stack=waka-bookworm`): Debian 12 "bookworm", made by `waka stack build`. That is the name
apps show as `stack` and `build_stack`, and the only stack `heroku stack:set` accepts.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform
from waka.domain import rules

# When the stack was introduced: Debian 12 "bookworm" was released on 2023-06-10.
INTRODUCED = "2023-06-10T00:00:00Z"


def _stack(name: str) -> dict[str, Any]:
    return {
        "created_at": INTRODUCED,
        "default": name == rules.DEFAULT_STACK,
        "id": render.catalogue_id("stack", name),
        "name": name,
        "state": "public",
        "updated_at": INTRODUCED,
    }


def list_stacks(ctx: Ctx) -> Reply:
    return Reply([_stack(name) for name in rules.STACKS])


def list_app_stacks(ctx: Ctx) -> Reply:
    ctx.app()  # an unknown app is a 404, as everywhere
    return list_stacks(ctx)


def show_stack(ctx: Ctx) -> Reply:
    wanted = ctx.param("stack")
    for name in rules.STACKS:
        stack = _stack(name)
        if wanted in (name, stack["id"]):
            return Reply(stack)
    raise not_found("Couldn't find that stack.")


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/stacks", endpoint(platform, list_stacks), methods=["GET"]),
        Route("/stacks/{stack}", endpoint(platform, show_stack), methods=["GET"]),
        Route("/apps/{app}/available-stacks", endpoint(platform, list_app_stacks), methods=["GET"]),
    ]
