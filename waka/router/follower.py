"""The route table follows the ledger: a rename or a destroy reaches the router at once.

The dyno manager restates every app's route each tick, but a tick reads the read models at
its start and may take a second or more (it asks the container engine), so a renamed app's
new host name would answer 404 meanwhile. This follower reads the ledger's notification log
itself and applies `Renamed` and `Destroyed` to the table: woken by the ledger right after a
save in this process (in the saving thread, so the change is routed before the API answers),
by the store's notifications for other processes' writes, and every `interval` seconds. A
reactor (waka.reactors.lifecycle) of every process that routes.

It starts at the newest notification: what came before is in the read models the dyno
manager reads. Its position lives in memory only, as the table does.
"""

from __future__ import annotations

import threading
from typing import Any

from waka.domain.app import App
from waka.notification_log import follow, newest
from waka.reactors.lifecycle import topics_of
from waka.router.table import RouteTable

TOPICS = topics_of(App.Renamed, App.Destroyed)


class RouteFollower:
    name = "route-follower"
    topics = TOPICS

    def __init__(self, ledger: Any, table: RouteTable, interval: float = 1.0) -> None:
        self.ledger = ledger
        self.table = table
        self.interval = interval
        self.position = newest(ledger)
        self._lock = threading.Lock()

    def poll(self) -> int:
        """Apply every watched event since the last poll; return how many were applied."""
        applied = 0
        with self._lock:
            for notice in follow(self.ledger, self.position, TOPICS):
                self.position = notice.id
                if notice.event is not None:
                    self._apply(notice.event)
                    applied += 1
        return applied

    def _apply(self, event: Any) -> None:
        app_id = str(event.originator_id)
        if isinstance(event, App.Renamed):
            self.table.rename_app(app_id, event.new_name)
        elif isinstance(event, App.Destroyed):
            self.table.remove_app(app_id, destroyed=True)

    def tick(self) -> None:
        self.poll()

    def notice(self, topics: frozenset[str] | None) -> None:
        """A watched event was saved: follow it now, in the notifying thread."""
        self.poll()
