"""Automated Certificate Management (`heroku certs:auto:enable`): one aggregate per app.

It holds whether ACM is on and, per custom domain, how getting its certificate went: the ACM
reactor (waka/reactors/acm.py) records each issue and each failure here, so `heroku certs:auto`
and `heroku domains` show the ledger's word, and a restart resumes where the ledger says.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from waka.domain.actors import Actor

_NS = uuid5(NAMESPACE_URL, "https://waka.invalid/acm")
ACM_ACTOR: Actor = {"id": "", "email": "acm"}  # the reactor's doing, not a user's

# Heroku's acm_status values.
PENDING, FAILING, FAILED, ISSUED = "pending", "failing", "failed", "cert issued"
MAX_FAILURES = 3  # then "failed" until `heroku certs:auto:refresh`


class AutomatedCertificates(Aggregate):
    @staticmethod
    def create_id(app_id: UUID, actor: Actor) -> UUID:  # type: ignore[override]
        return AutomatedCertificates.id_for(app_id)

    @staticmethod
    def id_for(app_id: UUID) -> UUID:
        return uuid5(_NS, str(app_id))

    @event("Started")
    def __init__(self, app_id: UUID, actor: Actor) -> None:
        self.app_id = app_id
        self.enabled = True
        self.domains: dict[str, dict[str, Any]] = {}  # hostname -> status, reason, failures

    def enable(self, actor: Actor) -> None:
        if not self.enabled:
            self._enable(actor=actor)

    @event("Enabled")
    def _enable(self, actor: Actor) -> None:
        self.enabled = True
        self.domains = {}

    def disable(self, actor: Actor) -> None:
        if self.enabled:
            self._disable(actor=actor)

    @event("Disabled")
    def _disable(self, actor: Actor) -> None:
        self.enabled = False
        self.domains = {}

    def refresh(self, actor: Actor) -> None:
        self._refresh(actor=actor)

    @event("Refreshed")
    def _refresh(self, actor: Actor) -> None:
        """Failed domains are tried again."""
        self.domains = {h: d for h, d in self.domains.items() if d["status"] == ISSUED}

    @event("Issued")
    def issued(self, hostname: str, endpoint_id: str, expires_at: str, actor: Actor) -> None:
        self.domains[hostname] = {"status": ISSUED, "reason": None, "failures": 0}

    @event("Failed")
    def failed(self, hostname: str, reason: str, actor: Actor) -> None:
        failures = self.domains.get(hostname, {}).get("failures", 0) + 1
        status = FAILED if failures >= MAX_FAILURES else FAILING
        self.domains[hostname] = {"status": status, "reason": reason, "failures": failures}
