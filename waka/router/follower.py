"""The route table follows the ledger: a rename or a destroy reaches the router at once.

The dyno manager restates every app's route each tick, but a tick reads the read models at
its start and may take a second or more (it asks the container engine), so a renamed app's
new host name would answer 404 meanwhile. This follower reads the ledger's notification log
itself and applies `Renamed` and `Destroyed` to the table: woken by the ledger right after a
save in this process (in the saving thread, so the change is routed before the API answers),
and every `interval` seconds for other processes' writes.

It starts at the newest notification: what came before is in the read models the dyno
manager reads. Its position lives in memory only, as the table does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventsourcing.utils import get_topic

from waka.domain.app import App
from waka.router.table import RouteTable

log = logging.getLogger("waka.router")

BATCH = 500
WATCHED = (App.Renamed, App.Destroyed)
TOPICS = frozenset(get_topic(kind) for kind in WATCHED)


class RouteFollower:
    def __init__(self, ledger: Any, table: RouteTable, interval: float = 1.0) -> None:
        self.ledger = ledger
        self.table = table
        self.interval = interval
        self.position = ledger.recorder.max_notification_id() or 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unlisten: Any = None

    def poll(self) -> int:
        """Apply every watched event since the last poll; return how many were applied."""
        applied = 0
        with self._lock:
            while True:
                batch = self.ledger.recorder.select_notifications(
                    start=self.position, limit=BATCH, inclusive_of_start=False
                )
                for notification in batch:
                    self.position = notification.id
                    if notification.topic in TOPICS:  # decode only what matters here
                        self._apply(self.ledger.mapper.to_domain_event(notification))
                        applied += 1
                if len(batch) < BATCH:
                    return applied

    def _apply(self, event: Any) -> None:
        app_id = str(event.originator_id)
        if isinstance(event, App.Renamed):
            self.table.rename_app(app_id, event.new_name)
        elif isinstance(event, App.Destroyed):
            self.table.remove_app(app_id, destroyed=True)

    def saved(self, events: list[Any]) -> None:
        """The ledger's listener: a watched event was saved here, so follow it now."""
        if any(isinstance(e, WATCHED) for e in events):
            self.poll()

    def start(self) -> None:
        self._unlisten = self.ledger.listen(self.saved)
        self._thread = threading.Thread(target=self._run, name="route-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.poll()
            except Exception:
                log.exception("following the ledger for the route table failed; retrying")
