"""The add-on catalogue: services and their plans (`heroku addons:services`, `addons:plans`)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from waka.addons.catalogue import Plan, Service, find_service, services
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import not_found
from waka.bootstrap import Platform


def _service(service: Service) -> dict[str, Any]:
    return {
        "cli_plugin_name": None,
        "created_at": "2026-01-01T00:00:00Z",
        "human_name": service.human_name,
        "id": str(service.id),
        "name": service.name,
        "state": "ga",
        "supports_multiple_installations": True,
        "supports_sharing": True,
        "updated_at": "2026-01-01T00:00:00Z",
        "supported_generations": [{"id": str(service.id), "name": "cedar"}],
    }


def _plan(service: Service, plan: Plan) -> dict[str, Any]:
    return {
        "addon_service": {"id": str(service.id), "name": service.name},
        "created_at": "2026-01-01T00:00:00Z",
        "compliance": None,
        "default": plan.default,
        "description": plan.description,
        "human_name": plan.human_name,
        "id": str(service.plan_id(plan)),
        "installable_inside_private_network": False,
        "installable_outside_private_network": True,
        "name": f"{service.name}:{plan.name}",
        "price": {"cents": plan.price_cents, "contract": False, "unit": "month"},
        "space_default": False,
        "state": "public",
        "updated_at": "2026-01-01T00:00:00Z",
        "visible": True,
        "limits": dict(plan.limits),  # not in Heroku's schema: what the provider enforces
    }


def _service_or_404(ctx: Ctx) -> Service:
    service = find_service(ctx.param("service"))
    if service is None:
        raise not_found("Couldn't find that add-on service.")
    return service


def list_services(ctx: Ctx) -> Reply:
    return Reply([_service(s) for s in services()])


def show_service(ctx: Ctx) -> Reply:
    return Reply(_service(_service_or_404(ctx)))


def list_plans(ctx: Ctx) -> Reply:
    service = _service_or_404(ctx)
    return Reply([_plan(service, p) for p in service.plans])


def show_plan(ctx: Ctx) -> Reply:
    service = _service_or_404(ctx)
    wanted = ctx.param("plan")
    for plan in service.plans:
        if wanted in (plan.name, f"{service.name}:{plan.name}", str(service.plan_id(plan))):
            return Reply(_plan(service, plan))
    raise not_found("Couldn't find that plan.")


def routes(platform: Platform) -> list[Route]:
    def get(path: str, handler: Any) -> Route:
        return Route(path, endpoint(platform, handler), methods=["GET"])

    return [
        get("/addon-services", list_services),
        get("/addon-services/{service}", show_service),
        get("/addon-services/{service}/plans", list_plans),
        get("/addon-services/{service}/plans/{plan}", show_plan),
    ]
