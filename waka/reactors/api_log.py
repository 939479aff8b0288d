"""The API log: platform actions appear in the app's log as `app[api]` lines, as on Heroku.

    app[api]: Deploy 1a2b3c4d by user@example.com
    app[api]: Release v5 created by user@example.com
    app[api]: Scaled to web@2:Standard-1X by user@example.com

A reactor (waka.reactors.lifecycle) following the ledger's notification log, one process at a
time (leased). Its position is in the store (`waka_api_log_position`), moved after each batch
is logged, so a worker taking over, or a platform started again, goes on where the last leader
stopped: a lead lost between logging a batch and moving the position logs that batch again
(at least once, as a log may). Logs are ephemeral: a platform's first start begins at the
newest event, and one that was stopped long logs at most the last BACKLOG events it missed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from eventsourcing.application import Application

from waka.domain.addon import Addon
from waka.domain.app import App
from waka.logplex.logplex import Logplex
from waka.notification_log import BATCH, newest, read_batch
from waka.projections.store import ReadStore
from waka.reactors.lifecycle import topics_of

BACKLOG = 1500  # notifications: Logplex keeps an app's last 1,500 lines anyway
POSITION = """CREATE TABLE IF NOT EXISTS waka_api_log_position (
    name TEXT PRIMARY KEY, position BIGINT NOT NULL)"""


def setup(store: ReadStore, ledger: Application) -> None:
    """The position's table, and its row: a platform's first start logs from now on, not
    its whole past."""
    with store.transaction() as cur:
        cur.execute(POSITION)
        cur.execute(
            "INSERT INTO waka_api_log_position (name, position) VALUES ('api-log', ?)"
            " ON CONFLICT (name) DO NOTHING",
            (newest(ledger),),
        )


def describe(event: Any, ledger: Application) -> Iterator[str]:
    """The `app[api]` lines for one ledger event (none for most)."""
    by = f"by {event.actor.get('email') or 'waka'}"
    match event:
        case App.Released():
            yield f"{event.description} {by}"
            yield f"Release v{event.version} created {by}"
        case App.ReleaseFailed():
            yield f"{event.description} {by}"
            yield f"Release v{event.version} command failed {by}"
        case App.FormationChanged():
            yield f"Scaled to {_formation(event, ledger)} {by}"
        case App.BuildRequested():
            yield f"Build started {by}"
        case App.BuildSucceeded():
            yield "Build succeeded"
        case App.BuildFailed():
            yield "Build failed"


def _formation(event: Any, ledger: Application) -> str:
    """Heroku names the whole formation after the change: `web@2:Standard-1X worker@0:...`."""
    try:
        app = ledger.repository.get(event.originator_id, version=event.originator_version)
        formation = app.formation
    except Exception:  # the change itself still says what moved
        formation = {u["type"]: u for u in event.updates}
    return " ".join(
        f"{kind}@{f.get('quantity', '')}:{f.get('size', '')}".rstrip(":")
        for kind, f in sorted(formation.items())
    )


class ApiLog:
    name = "api-log"
    topics = topics_of(App, Addon)

    def __init__(
        self,
        ledger: Application,
        logplex: Logplex,
        store: ReadStore | None = None,
        interval: float = 0.5,
    ) -> None:
        self.ledger = ledger
        self.logplex = logplex
        self.store = store  # None: the position is this process's only (tests)
        self.interval = interval
        self._lock = threading.Lock()
        if store is not None:
            setup(store, ledger)
        self.position = self._stored()

    def tick(self) -> None:
        self.poll()

    def took_over(self) -> None:
        """Leading from now on: on from where the last leader stopped."""
        if self.store is None:
            return  # the position is this process's own: on from it (not from the newest,
            # which would skip what was saved between taking the lease and this call)
        with self._lock:
            self.position = self._stored()

    def _stored(self) -> int:
        """The stored position, at most BACKLOG behind the newest notification."""
        latest = newest(self.ledger)
        if self.store is None:
            return latest
        rows = self.store.query("SELECT position FROM waka_api_log_position WHERE name = 'api-log'")
        stored = rows[0]["position"] if rows else latest
        return max(stored, latest - BACKLOG)

    def poll(self) -> int:
        """Log every event since the last poll; return how many events were read."""
        read = 0
        with self._lock:
            while True:
                batch = read_batch(self.ledger, self.position, self.topics)
                for notice in batch:
                    if notice.event is not None:
                        self._log(notice.event)
                if batch:
                    self.position = batch[-1].id
                    read += len(batch)
                    self._store_position()
                if len(batch) < BATCH:
                    return read

    def _store_position(self) -> None:
        if self.store is None:
            return
        with self.store.transaction() as cur:
            cur.execute(
                "UPDATE waka_api_log_position SET position = ? WHERE name = 'api-log'"
                " AND position < ?",
                (self.position, self.position),
            )

    def _log(self, event: Any) -> None:
        if isinstance(event, Addon.Event):
            self._log_addon(event)
            return
        if not isinstance(event, App.Event):
            return
        app_id = str(event.originator_id)
        if isinstance(event, App.Destroyed):
            self.logplex.forget(app_id)
            return
        for message in describe(event, self.ledger):
            self.logplex.emit(app_id, "app", "api", message, at=event.timestamp)

    def _log_addon(self, event: Any) -> None:
        """An add-on's life, in its billing app's log (attachments log as releases)."""
        match event:
            case Addon.Created():
                app_id, name = event.app_id, event.name
                message = (
                    f"Provisioning {event.service}:{event.plan} ({name}) "
                    f"by {event.actor.get('email') or 'waka'}"
                )
            case Addon.ProvisionFailed() | Addon.Deprovisioned():
                try:
                    addon = self.ledger.repository.get(
                        event.originator_id, version=event.originator_version
                    )
                except Exception:  # no app to log to; the ledger still has the event
                    return
                app_id, name = addon.app_id, addon.name
                if isinstance(event, Addon.ProvisionFailed):
                    message = f"Add-on {name} failed to provision: {event.reason}"
                else:
                    message = f"Add-on {name} deprovisioned"
            case _:
                return
        self.logplex.emit(app_id, "app", "api", message, at=event.timestamp)
