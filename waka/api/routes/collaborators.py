"""Collaborators as `apps:info` reads them: the owner only.

Adding collaborators arrives with its own issue; until then this list tells the truth.
"""

from __future__ import annotations

from starlette.routing import Route

from waka.api import render
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform


def list_collaborators(ctx: Ctx) -> Reply:
    return Reply([render.collaborator(ctx.app())])


def pipeline_coupling(ctx: Ctx) -> Reply:
    ctx.app()
    raise not_found("This app is not in a pipeline.")


def routes(platform: Platform) -> list[Route]:
    return [
        Route("/apps/{app}/collaborators", endpoint(platform, list_collaborators), methods=["GET"]),
        Route(
            "/apps/{app}/pipeline-couplings", endpoint(platform, pipeline_coupling), methods=["GET"]
        ),
    ]
