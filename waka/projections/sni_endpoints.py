"""The SNI endpoints read model: each app's certificates, and which domain uses which.

The private key is sealed (encrypted with the ledger's key) like config var values; `sealed`
says which rows are, so a key set later still reads the rows made before it.
"""

from __future__ import annotations

from waka.domain.app import App
from waka.domain.certificate import SniEndpoint
from waka.projections.base import Projection, iso
from waka.projections.sealing import Sealer
from waka.projections.store import Cursor, ReadStore, Row


class SniEndpointsProjection(Projection):
    name = "sni_endpoints"
    tables = {
        "waka_sni_endpoints": """CREATE TABLE IF NOT EXISTS waka_sni_endpoints (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, name TEXT NOT NULL,
            certificate_chain TEXT NOT NULL, private_key TEXT NOT NULL, sealed INTEGER NOT NULL,
            acm INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "waka_sni_domains": """CREATE TABLE IF NOT EXISTS waka_sni_domains (
            hostname TEXT PRIMARY KEY, app_id TEXT NOT NULL, endpoint_id TEXT NOT NULL)""",
    }

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()

    def created(self, cur: Cursor, e: SniEndpoint.Created) -> None:
        cur.execute(
            "INSERT INTO waka_sni_endpoints (id, app_id, name, certificate_chain, private_key,"
            " sealed, acm, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(e.originator_id),
                str(e.app_id),
                e.name,
                e.certificate_chain,
                self.sealer.seal(e.private_key),
                int(self.sealer.enabled),
                int(e.acm),
                iso(e.timestamp),
                iso(e.timestamp),
            ),
        )

    def updated(self, cur: Cursor, e: SniEndpoint.Updated) -> None:
        cur.execute(
            "UPDATE waka_sni_endpoints SET certificate_chain = ?, private_key = ?, sealed = ?,"
            " updated_at = ? WHERE id = ?",
            (
                e.certificate_chain,
                self.sealer.seal(e.private_key),
                int(self.sealer.enabled),
                iso(e.timestamp),
                str(e.originator_id),
            ),
        )

    def attached(self, cur: Cursor, e: SniEndpoint.DomainAttached) -> None:
        rows = cur.query(
            "SELECT app_id FROM waka_sni_endpoints WHERE id = ?", (str(e.originator_id),)
        )
        if rows:
            cur.execute("DELETE FROM waka_sni_domains WHERE hostname = ?", (e.hostname,))
            cur.execute(
                "INSERT INTO waka_sni_domains (hostname, app_id, endpoint_id) VALUES (?, ?, ?)",
                (e.hostname, rows[0]["app_id"], str(e.originator_id)),
            )

    def detached(self, cur: Cursor, e: SniEndpoint.DomainDetached) -> None:
        cur.execute(
            "DELETE FROM waka_sni_domains WHERE hostname = ? AND endpoint_id = ?",
            (e.hostname, str(e.originator_id)),
        )

    def removed(self, cur: Cursor, e: SniEndpoint.Removed) -> None:
        endpoint_id = str(e.originator_id)
        cur.execute("DELETE FROM waka_sni_endpoints WHERE id = ?", (endpoint_id,))
        cur.execute("DELETE FROM waka_sni_domains WHERE endpoint_id = ?", (endpoint_id,))

    def domain_removed(self, cur: Cursor, e: App.DomainRemoved) -> None:
        cur.execute("DELETE FROM waka_sni_domains WHERE hostname = ?", (e.hostname,))

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        app_id = str(e.originator_id)
        cur.execute("DELETE FROM waka_sni_endpoints WHERE app_id = ?", (app_id,))
        cur.execute("DELETE FROM waka_sni_domains WHERE app_id = ?", (app_id,))

    handlers = {
        SniEndpoint.Created: created,
        SniEndpoint.Updated: updated,
        SniEndpoint.DomainAttached: attached,
        SniEndpoint.DomainDetached: detached,
        SniEndpoint.Removed: removed,
        App.DomainRemoved: domain_removed,
        App.Destroyed: destroyed,
    }


def endpoints_of(store: ReadStore, app_id: str) -> list[Row]:
    """An app's endpoints, oldest first, without their keys."""
    return store.query(
        "SELECT id, app_id, name, certificate_chain, acm, created_at, updated_at"
        " FROM waka_sni_endpoints WHERE app_id = ? ORDER BY created_at, name",
        (app_id,),
    )


def endpoint_domains(store: ReadStore, app_id: str) -> dict[str, str]:
    """hostname -> endpoint id, for the app's domains that have one chosen."""
    rows = store.query(
        "SELECT hostname, endpoint_id FROM waka_sni_domains WHERE app_id = ?", (app_id,)
    )
    return {r["hostname"]: r["endpoint_id"] for r in rows}


def all_endpoints(store: ReadStore) -> list[Row]:
    """Every endpoint with its key opened (for the router only), and its chosen domains."""
    rows = store.query(
        "SELECT id, app_id, certificate_chain, private_key, sealed, updated_at"
        " FROM waka_sni_endpoints ORDER BY created_at"
    )
    return [
        {
            **r,
            "private_key": store.sealer.open(r["private_key"]) if r["sealed"] else r["private_key"],
        }
        for r in rows
    ]


def all_domain_choices(store: ReadStore) -> dict[str, str]:
    rows = store.query("SELECT hostname, endpoint_id FROM waka_sni_domains")
    return {r["hostname"]: r["endpoint_id"] for r in rows}
