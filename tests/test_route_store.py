"""The route table shared by router processes, on both stores: a route written by the dyno
manager is what routers load; when each app last had a request never goes back in time."""

from __future__ import annotations

import time

import pytest

from waka.router.route_store import LastRequests, RouteStore
from waka.router.table import Backend, Route


def test_routes_written_are_loaded_and_removed(platform) -> None:  # type: ignore[no-untyped-def]
    routes = platform.route_store
    route = Route("app-1", "shop", backends=(Backend("10.0.0.2", 5000, "web.1"),))
    routes.publish(route, ["www.example.com"])
    routes.publish(route, ["www.example.com"])  # unchanged: nothing written again
    assert routes.routes() == [(route, ["www.example.com"])]
    routes.remove("app-1")
    assert routes.routes() == []


def test_the_last_request_of_an_app_only_moves_forward(platform) -> None:  # type: ignore[no-untyped-def]
    routes: RouteStore = platform.route_store
    routes.record_requests({"app-1": 1000.0, "app-2": 500.0})
    routes.record_requests({"app-1": 900.0})  # another router saw an older request
    routes.record_requests({"app-2": 600.0})
    assert routes.last_requests() == {"app-1": 1000.0, "app-2": 600.0}
    # Stored as wall-clock time; handed to the dyno manager in this process's monotonic time.
    offset = time.time() - time.monotonic()
    assert LastRequests(routes).get("app-1") == pytest.approx(1000.0 - offset, abs=1.0)
