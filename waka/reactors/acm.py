"""The ACM reactor: gets and renews certificates for the custom domains of apps with Automated
Certificate Management on, over ACME, and records every outcome in the ledger.

A pass reconciles the read models with what should be: each custom domain of an ACM app has a
certificate of ACM's that names it and is not within RENEW_BEFORE of its end; ACM certificates
of apps with ACM off, or of domains gone, are removed. A domain's failures are retried with a
growing pause, and after MAX_FAILURES it waits for `heroku certs:auto:refresh`. The state is
the ledger's, so a pass is idempotent and a restart resumes: an order cut short is made again.

Woken by the ledger at once when ACM is switched or a domain changes in this process, and every
`interval` seconds anyway (renewals, retries, other processes' writes). Never run by an HTTP
handler: an order takes seconds (the ACME server fetches the challenge through the router).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any
from uuid import UUID

from waka.adapters.acme import AcmeClient, AcmeError
from waka.domain.acm import ACM_ACTOR, FAILED, FAILING, ISSUED, AutomatedCertificates
from waka.domain.app import App
from waka.domain.certificate import parse_chain
from waka.projections.acm import acm_domains, enabled_apps
from waka.projections.base import iso
from waka.projections.domains import domains_of
from waka.projections.sni_endpoints import endpoint_domains, endpoints_of
from waka.reactors.lifecycle import topics_of
from waka.sni_endpoints import (
    add_endpoint,
    record_acm_result,
    remove_endpoint,
    set_domain_endpoint,
    update_endpoint,
)

log = logging.getLogger("waka.acm")

RENEW_BEFORE = dt.timedelta(days=30)  # as Heroku's ACM and certbot
RETRY_BASE = 30.0  # seconds after a first failure; doubled per failure


class CertificateManager:
    """A reactor (waka.reactors.lifecycle), one process at a time (leased): the state of each
    order is the ledger's, so the process taking over resumes it."""

    name = "acm"
    # Not its own Issued/Failed: what it records would wake it again.
    topics = topics_of(AutomatedCertificates, App.DomainAdded, App.DomainRemoved) - topics_of(
        AutomatedCertificates.Issued, AutomatedCertificates.Failed
    )

    def __init__(
        self,
        ledger: Any,
        store: Any,
        catch_up: Any,
        client: AcmeClient,
        interval: float = 60.0,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.catch_up = catch_up
        self.client = client
        self.interval = interval
        self._stopping = threading.Event()

    # --- one pass -------------------------------------------------------------------------------

    def reconcile(self) -> int:
        """One pass; returns how many certificates it issued."""
        self.catch_up()
        issued = 0
        enabled = set(enabled_apps(self.store))
        for app_id in sorted(enabled):
            issued += self._app(app_id)
        self._remove_orphans(enabled)
        return issued

    def _app(self, app_id: str) -> int:
        store = self.store
        hostnames = [d["hostname"] for d in domains_of(store, app_id)]
        states = acm_domains(store, app_id)
        chosen = endpoint_domains(store, app_id)
        ours = {e["id"]: e for e in endpoints_of(store, app_id) if e["acm"]}
        issued = 0
        now = dt.datetime.now(dt.UTC)
        for hostname in hostnames:
            if self._stopping.is_set():
                break
            current = _acm_endpoint_for(ours, chosen, hostname)
            state = states.get(hostname)
            if current is not None:
                expires = parse_chain(current["certificate_chain"]).expires_at
                if expires - now > RENEW_BEFORE:
                    if state is None or state["status"] != ISSUED:  # issued before a crash
                        record_acm_result(
                            self.ledger, UUID(app_id), hostname, current["id"], iso(expires)
                        )
                    continue
            if state is not None and not _due(state, now):
                continue
            issued += self._issue(app_id, hostname, current, chosen.get(hostname))
        return issued

    def _issue(
        self, app_id: str, hostname: str, current: dict | None, chosen_id: str | None
    ) -> int:
        app = UUID(app_id)
        log.info("ACM: ordering a certificate for %s", hostname)
        try:
            got = self.client.issue(hostname)
        except AcmeError as error:
            log.warning("ACM: no certificate for %s: %s", hostname, error)
            record_acm_result(self.ledger, app, hostname, reason=str(error))
            self.catch_up()
            return 0
        if current is not None:
            endpoint, info = update_endpoint(
                self.ledger, ACM_ACTOR, app, UUID(current["id"]), got.certificate_chain,
                got.private_key,
            )  # fmt: skip
        else:
            taken = frozenset(e["name"] for e in endpoints_of(self.store, app_id))
            endpoint, info = add_endpoint(
                self.ledger, ACM_ACTOR, app, got.certificate_chain, got.private_key,
                acm=True, taken=taken,
            )  # fmt: skip
        set_domain_endpoint(
            self.ledger, ACM_ACTOR, app, hostname, endpoint.id,
            UUID(chosen_id) if chosen_id else None,
        )  # fmt: skip
        record_acm_result(self.ledger, app, hostname, str(endpoint.id), iso(info.expires_at))
        log.info("ACM: certificate for %s issued, until %s", hostname, iso(info.expires_at))
        self.catch_up()
        return 1

    def _remove_orphans(self, enabled: set[str]) -> None:
        """ACM's certificates of apps with ACM off, or naming no domain of the app any more."""
        rows = self.store.query(
            "SELECT id, app_id, certificate_chain FROM waka_sni_endpoints WHERE acm = 1"
        )
        removed = False
        for row in rows:
            app_id = row["app_id"]
            names = parse_chain(row["certificate_chain"]).cert_domains
            hostnames = {d["hostname"] for d in domains_of(self.store, app_id)}
            if app_id in enabled and any(n in hostnames for n in names):
                continue
            remove_endpoint(self.ledger, ACM_ACTOR, UUID(app_id), UUID(row["id"]))
            removed = True
        if removed:
            self.catch_up()

    def tick(self) -> None:
        self.reconcile()

    def close(self) -> None:
        self._stopping.set()  # between orders: the next leader resumes from the ledger


def _acm_endpoint_for(ours: dict[str, dict], chosen: dict[str, str], hostname: str) -> dict | None:
    endpoint = ours.get(chosen.get(hostname, ""))
    if endpoint is not None:
        return endpoint
    for row in ours.values():
        if hostname in parse_chain(row["certificate_chain"]).cert_domains:
            return row
    return None


def _due(state: dict, now: dt.datetime) -> bool:
    """May a domain whose last order failed (or whose certificate is due) be tried again?"""
    if state["status"] == FAILED:
        return False  # until certs:auto:refresh
    if state["status"] == FAILING:
        since = dt.datetime.fromisoformat(state["updated_at"].replace("Z", "+00:00"))
        return (now - since).total_seconds() >= RETRY_BASE * 2 ** (state["failures"] - 1)
    return True
