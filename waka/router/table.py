"""The routing table: which web dynos serve which host.

The dyno manager replaces entries from its own thread while the router reads them on every
request, so reads take no lock: writers build new dicts under a lock and swap them in whole
(a reference assignment is atomic), and a reader sees either the old table or the new one.
Each snapshot remembers the answers it gave per Host value, so a lookup is usually one dict get.

Two writers: the dyno manager states each app's whole route every tick, from read models it
read at the start of the tick; the ledger's follower (`waka/router/follower.py`) applies
renames and destroys the moment they are saved. A name the ledger gave wins over a tick's
older read, so a rename is served at once and a stale tick cannot take it back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from waka.router.http import valid_host

LOCAL_SUFFIX = ".localhost"
_SEEN_MAX = 4096
_UNSEEN = object()


@dataclass(frozen=True)
class Backend:
    host: str
    port: int
    dyno: str  # "web.1": shown in the router's log line


@dataclass(frozen=True)
class Route:
    app_id: str
    app_name: str
    maintenance: bool = False
    backends: tuple[Backend, ...] = ()
    crashed: bool = False  # web dynos exist but none is up (H10)
    sleeping: bool = False  # eco app asleep: hold the request and wake it


def normalize_host(host: str) -> str:
    """`Host` header value -> bare lower-case name: port, IPv6 brackets and final dot dropped."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class RouteTable:
    """Host -> Route. `set_app` states an app's whole routing state, custom domains included."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = _Snapshot({}, {}, {})
        # Names the ledger gave apps while this table lived (None: destroyed).
        self._ledger_names: dict[str, str | None] = {}

    def set_app(self, route: Route, domains: Iterable[str] = ()) -> None:
        wanted = {normalize_host(d) for d in domains}
        with self._lock:
            if route.app_id in self._ledger_names:
                name = self._ledger_names[route.app_id]
                if name is None:
                    return  # destroyed: a tick that read the app before cannot bring it back
                route = replace(route, app_name=name)
            old = self._snapshot
            routes = {**old.routes, route.app_id: route}
            names = {n: a for n, a in old.names.items() if a != route.app_id}
            names[route.app_name.lower()] = route.app_id
            table = {d: a for d, a in old.domains.items() if a != route.app_id}
            table.update(dict.fromkeys(wanted, route.app_id))  # a domain goes to its last setter
            self._snapshot = _Snapshot(routes, names, table)

    def set_all(self, stated: list[tuple[Route, list[str]]]) -> None:
        """Every app's route at once (a router process loading the shared table): one new
        snapshot, the ledger's names winning as in `set_app`."""
        routes: dict[str, Route] = {}
        names: dict[str, str] = {}
        table: dict[str, str] = {}
        with self._lock:
            for route, domains in stated:
                if route.app_id in self._ledger_names:
                    name = self._ledger_names[route.app_id]
                    if name is None:
                        continue
                    route = replace(route, app_name=name)
                routes[route.app_id] = route
                names[route.app_name.lower()] = route.app_id
                table.update(dict.fromkeys((normalize_host(d) for d in domains), route.app_id))
            self._snapshot = _Snapshot(routes, names, table)

    def rename_app(self, app_id: str, new_name: str) -> None:
        """The ledger renamed the app: its new name routes now, its old name no longer."""
        with self._lock:
            self._ledger_names[app_id] = new_name
            old = self._snapshot
            names = {n: a for n, a in old.names.items() if a != app_id}
            names[new_name.lower()] = app_id
            routes = old.routes
            if app_id in routes:
                routes = {**routes, app_id: replace(routes[app_id], app_name=new_name)}
            self._snapshot = _Snapshot(routes, names, dict(old.domains))

    def remove_app(self, app_id: str, destroyed: bool = False) -> None:
        """Take the app off the table; `destroyed` (the ledger says so): for good."""
        with self._lock:
            if destroyed:
                self._ledger_names[app_id] = None
            old = self._snapshot
            routes = {a: r for a, r in old.routes.items() if a != app_id}
            names = {n: a for n, a in old.names.items() if a != app_id}
            table = {d: a for d, a in old.domains.items() if a != app_id}
            self._snapshot = _Snapshot(routes, names, table)

    def get(self, app_id: str) -> Route | None:
        return self._snapshot.routes.get(app_id)

    def lookup(self, host: str | bytes) -> Route | None:
        """`<app>.localhost[:port]` or a custom domain (exact, then one `*.` wildcard level).
        `host` is a Host header's value, as str or as the bytes that came (the router's)."""
        snap = self._snapshot
        route = snap.seen.get(host, _UNSEEN)  # the same few Host values come again and again
        if route is not _UNSEEN:
            return route  # type: ignore[return-value]
        raw = host if isinstance(host, bytes) else host.encode("latin-1", "replace")
        if valid_host(raw.strip(b" \t")):
            route = self._find(snap, normalize_host(raw.decode("latin-1")))
        else:  # "app.localhost/x", "a b": routed nowhere, whatever a lenient reading finds
            route = None
        if len(snap.seen) >= _SEEN_MAX:  # bounded: clients choose what they send as Host
            snap.seen.clear()
        snap.seen[host] = route
        return route

    @staticmethod
    def _find(snap: _Snapshot, name: str) -> Route | None:
        app_id = snap.domains.get(name)
        if app_id is None and name.endswith(LOCAL_SUFFIX):
            app_id = snap.names.get(name[: -len(LOCAL_SUFFIX)])
        if app_id is None and "." in name:
            app_id = snap.domains.get("*." + name.partition(".")[2])
        return snap.routes.get(app_id) if app_id is not None else None


@dataclass(frozen=True)
class _Snapshot:
    """Never mutated once published: readers hold one and see a consistent table."""

    routes: dict[str, Route]  # app_id -> route
    names: dict[str, str]  # lower-case app name -> app_id
    domains: dict[str, str]  # custom domain (or "*.example.com") -> app_id
    seen: dict[str | bytes, Route | None] = field(default_factory=dict)  # Host -> its lookup
