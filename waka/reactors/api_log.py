"""The API log: platform actions appear in the app's log as `app[api]` lines, as on Heroku.

    app[api]: Deploy 1a2b3c4d by user@example.com
    app[api]: Release v5 created by user@example.com
    app[api]: Scaled to web@2:Standard-1X by user@example.com

A reactor (waka.reactors.lifecycle) following the ledger's notification log, one process at a
time (leased). Logs are ephemeral, so it starts at the newest notification and never replays
old events; it keeps its position in memory only: a worker taking over starts at the newest
too, so lines of events saved during a takeover (seconds) are not logged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from eventsourcing.application import Application

from waka.domain.addon import Addon
from waka.domain.app import App
from waka.logplex.logplex import Logplex
from waka.notification_log import follow, newest
from waka.reactors.lifecycle import topics_of


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

    def __init__(self, ledger: Application, logplex: Logplex, interval: float = 0.5) -> None:
        self.ledger = ledger
        self.logplex = logplex
        self.interval = interval
        self.position = newest(ledger)
        self._lock = threading.Lock()

    def tick(self) -> None:
        self.poll()

    def took_over(self) -> None:
        """Leading from now on: what the last leader logged is not logged again."""
        with self._lock:
            self.position = newest(self.ledger)

    def poll(self) -> int:
        """Log every event since the last poll; return how many events were read."""
        read = 0
        with self._lock:
            for notice in follow(self.ledger, self.position, self.topics):
                if notice.event is not None:
                    self._log(notice.event)
                self.position = notice.id
                read += 1
        return read

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
