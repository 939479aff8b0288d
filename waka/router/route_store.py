"""The route table shared by router processes, and what routers tell the dyno manager back.

The dyno manager (in a worker) states each app's route; router processes on any host serve
it. Each route is a row in the read store (`waka_routes`: the app's web backends, maintenance,
held/crashed, custom domains), written only when it changed; on PostgreSQL the write also
announces itself on the ledger's notification channel as the topic `waka:routes`, so the
routers' `SharedRoutes` reactor reloads within the notification's latency (milliseconds), and
every 2 s anyway. Back from the routers: when each app last had a request (`waka_route_activity`,
written every few seconds, for sleeping eco apps) and "wake this app" (the topic
`waka:wake:<app id>`, which the dyno manager notices).

In one process (`waka up`) the dyno manager sets the in-process table directly as well, so a
route reaches the router at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

from waka.adapters.ledger_notifications import announce, channel_name
from waka.router.table import Backend, Route, RouteTable

log = logging.getLogger("waka.router")

ROUTES_TOPIC = "waka:routes"
WAKE_PREFIX = "waka:wake:"

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS waka_routes ("
    " app_id TEXT PRIMARY KEY, route TEXT NOT NULL, domains TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS waka_route_activity ("
    " app_id TEXT PRIMARY KEY, last_request REAL NOT NULL)",
]


def _encode(route: Route, domains: list[str]) -> tuple[str, str]:
    body = {
        "app_name": route.app_name,
        "maintenance": route.maintenance,
        "backends": [[b.host, b.port, b.dyno] for b in route.backends],
        "crashed": route.crashed,
        "sleeping": route.sleeping,
    }
    return orjson.dumps(body).decode(), orjson.dumps(sorted(domains)).decode()


def _decode(app_id: str, route: str, domains: str) -> tuple[Route, list[str]]:
    body = orjson.loads(route)
    return (
        Route(
            app_id=app_id,
            app_name=body["app_name"],
            maintenance=body["maintenance"],
            backends=tuple(Backend(h, p, d) for h, p, d in body["backends"]),
            crashed=body["crashed"],
            sleeping=body["sleeping"],
        ),
        orjson.loads(domains),
    )


class RouteStore:
    def __init__(self, store: Any, database_url: str | None, schema: str) -> None:
        self.store = store
        self.channel = channel_name(schema) if database_url else None
        self._published: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        with store.transaction() as cur:
            for statement in SCHEMA:
                cur.execute(statement)

    def _announce(self, cur: Any, topic: str) -> None:
        announce(cur, self.channel, topic)  # delivered at commit, with the row

    # --- the dyno manager's side --------------------------------------------------------------

    def publish(self, route: Route, domains: list[str]) -> None:
        row = _encode(route, domains)
        with self._lock:
            if self._published.get(route.app_id) == row:
                return
            with self.store.transaction() as cur:
                cur.execute(
                    "INSERT INTO waka_routes (app_id, route, domains) VALUES (?, ?, ?)"
                    " ON CONFLICT (app_id) DO UPDATE SET route = excluded.route,"
                    " domains = excluded.domains",
                    (route.app_id, *row),
                )
                self._announce(cur, ROUTES_TOPIC)
            self._published[route.app_id] = row

    def remove(self, app_id: str) -> None:
        with self._lock:
            with self.store.transaction() as cur:
                cur.execute("DELETE FROM waka_routes WHERE app_id = ?", (app_id,))
                cur.execute("DELETE FROM waka_route_activity WHERE app_id = ?", (app_id,))
                self._announce(cur, ROUTES_TOPIC)
            self._published.pop(app_id, None)

    def last_requests(self) -> dict[str, float]:
        """When each app last had a request, by any router (wall clock)."""
        rows = self.store.query("SELECT app_id, last_request FROM waka_route_activity")
        return {r["app_id"]: r["last_request"] for r in rows}

    # --- the routers' side ---------------------------------------------------------------------

    def routes(self) -> list[tuple[Route, list[str]]]:
        rows = self.store.query("SELECT app_id, route, domains FROM waka_routes")
        return [_decode(r["app_id"], r["route"], r["domains"]) for r in rows]

    def record_requests(self, last: dict[str, float]) -> None:
        if not last:
            return
        with self.store.transaction() as cur:
            for app_id, at in last.items():
                cur.execute(  # never back in time: routers write what each of them saw
                    "INSERT INTO waka_route_activity (app_id, last_request) VALUES (?, ?)"
                    " ON CONFLICT (app_id) DO UPDATE SET last_request = excluded.last_request"
                    " WHERE excluded.last_request > waka_route_activity.last_request",
                    (app_id, at),
                )

    def wake(self, app_id: str) -> None:
        """Ask the dyno manager, wherever it runs, to start a sleeping app's dynos."""
        with self.store.transaction() as cur:
            self._announce(cur, WAKE_PREFIX + app_id)


class SharedRoutes:
    """A router process's reactor: its route table follows `waka_routes`."""

    name = "shared-routes"
    interval = 2.0
    topics = frozenset({ROUTES_TOPIC})

    def __init__(self, routes: RouteStore, table: RouteTable) -> None:
        self.routes = routes
        self.table = table
        self._loaded: list[tuple[Route, list[str]]] | None = None

    def tick(self) -> None:
        stated = sorted(self.routes.routes(), key=lambda item: item[0].app_id)
        if stated != self._loaded:  # a new snapshot empties the table's per-Host cache
            self.table.set_all(stated)
            self._loaded = stated


class RouteActivity:
    """A router process's reactor: when each app last had a request, for the dyno manager
    (eco apps sleep after a while without one). Written every few seconds, as the sleep
    timeout is measured in minutes."""

    name = "route-activity"
    interval = 5.0
    topics = frozenset({"waka:route-activity"})  # nothing saved wakes it: the timer does

    def __init__(self, routes: RouteStore, last_request: dict[str, float]) -> None:
        self.routes = routes
        self.last_request = last_request  # app id -> time.monotonic() of its last request
        self._written: dict[str, float] = {}

    def tick(self) -> None:
        offset = time.time() - time.monotonic()
        seen = dict(self.last_request)  # one snapshot: a request meanwhile is written next tick
        self.routes.record_requests(
            {app_id: at + offset for app_id, at in seen.items() if self._written.get(app_id) != at}
        )
        self._written.update(seen)


class LastRequests:
    """For a dyno manager without a router in its process: when each app last had a request
    (in this process's monotonic time), read from the routers' records every few seconds."""

    def __init__(self, routes: RouteStore, every: float = 5.0) -> None:
        self.routes = routes
        self.every = every
        self._read_at = float("-inf")
        self._last: dict[str, float] = {}

    def get(self, app_id: str) -> float | None:
        now = time.monotonic()
        if now - self._read_at >= self.every:
            offset = time.time() - now
            try:
                self._last = {a: at - offset for a, at in self.routes.last_requests().items()}
            except Exception:
                log.exception("reading when apps last had requests failed")
            self._read_at = now
        return self._last.get(app_id)
