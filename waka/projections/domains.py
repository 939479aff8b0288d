"""The domains read model: each live app's custom domains, for the API and the router."""

from __future__ import annotations

from uuid import NAMESPACE_URL, uuid5

from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row

_NS = uuid5(NAMESPACE_URL, "https://waka.invalid/domain-ids")


def domain_id(app_id: str, hostname: str) -> str:
    return str(uuid5(_NS, f"{app_id}:{hostname}"))


class DomainsProjection(Projection):
    name = "domains"
    tables = {
        "waka_domains": """CREATE TABLE IF NOT EXISTS waka_domains (
            hostname TEXT PRIMARY KEY, id TEXT NOT NULL, app_id TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
    }

    def added(self, cur: Cursor, e: App.DomainAdded) -> None:
        app_id = str(e.originator_id)
        cur.execute(
            "INSERT INTO waka_domains (hostname, id, app_id, created_at) VALUES (?, ?, ?, ?)",
            (e.hostname, domain_id(app_id, e.hostname), app_id, iso(e.timestamp)),
        )

    def removed(self, cur: Cursor, e: App.DomainRemoved) -> None:
        cur.execute("DELETE FROM waka_domains WHERE hostname = ?", (e.hostname,))

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        cur.execute("DELETE FROM waka_domains WHERE app_id = ?", (str(e.originator_id),))

    handlers = {App.DomainAdded: added, App.DomainRemoved: removed, App.Destroyed: destroyed}


def domains_of(store: ReadStore, app_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_domains WHERE app_id = ? ORDER BY hostname", (app_id,))
