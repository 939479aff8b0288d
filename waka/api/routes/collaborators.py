"""Collaborators and add-ons as `apps:info` reads them: the owner only, and no add-ons yet.

Adding collaborators and add-ons each arrive with their own issue; until then these lists
tell the truth about an app.
"""

from __future__ import annotations

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform


def list_collaborators(ctx: Ctx) -> Reply:
    return Reply([render.collaborator(ctx.app())])


def list_addons(ctx: Ctx) -> Reply:
    ctx.app()
    return Reply([])


def pipeline_coupling(ctx: Ctx) -> Reply:
    ctx.app()
    raise not_found("This app is not in a pipeline.")


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/collaborators", endpoint(platform, list_collaborators), methods=["GET"]),
        Route("/apps/{app}/addons", endpoint(platform, list_addons), methods=["GET"]),
        Route(
            "/apps/{app}/pipeline-couplings", endpoint(platform, pipeline_coupling), methods=["GET"]
        ),
    ]
