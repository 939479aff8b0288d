"""The ACM read model: which apps have Automated Certificate Management on, and how each of
their custom domains' certificate is going (Heroku's acm_status and acm_status_reason)."""

from __future__ import annotations

from waka.domain.acm import FAILED, FAILING, ISSUED, MAX_FAILURES, AutomatedCertificates
from waka.domain.app import App
from waka.projections.base import Projection, iso
from waka.projections.store import Cursor, ReadStore, Row

Acm = AutomatedCertificates


class AcmProjection(Projection):
    name = "acm"
    tables = {
        "waka_acm": """CREATE TABLE IF NOT EXISTS waka_acm (
            app_id TEXT PRIMARY KEY, id TEXT NOT NULL, enabled INTEGER NOT NULL,
            updated_at TEXT NOT NULL)""",
        "waka_acm_domains": """CREATE TABLE IF NOT EXISTS waka_acm_domains (
            hostname TEXT PRIMARY KEY, app_id TEXT NOT NULL, status TEXT NOT NULL,
            reason TEXT, failures INTEGER NOT NULL, updated_at TEXT NOT NULL)""",
    }

    def _set(self, cur: Cursor, app_id: str, enabled: bool, at: str, acm_id: str = "") -> None:
        cur.execute(
            "INSERT INTO waka_acm (app_id, id, enabled, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (app_id) DO UPDATE SET enabled = excluded.enabled,"
            " updated_at = excluded.updated_at",
            (app_id, acm_id, int(enabled), at),
        )
        cur.execute("DELETE FROM waka_acm_domains WHERE app_id = ?", (app_id,))

    def started(self, cur: Cursor, e: Acm.Started) -> None:
        self._set(cur, str(e.app_id), True, iso(e.timestamp), str(e.originator_id))

    def enabled(self, cur: Cursor, e: Acm.Enabled) -> None:
        self._set(cur, _app_of(cur, e), True, iso(e.timestamp))

    def disabled(self, cur: Cursor, e: Acm.Disabled) -> None:
        self._set(cur, _app_of(cur, e), False, iso(e.timestamp))

    def refreshed(self, cur: Cursor, e: Acm.Refreshed) -> None:
        cur.execute(
            "DELETE FROM waka_acm_domains WHERE app_id = ? AND status != ?",
            (_app_of(cur, e), ISSUED),
        )

    def issued(self, cur: Cursor, e: Acm.Issued) -> None:
        self._put(cur, _app_of(cur, e), e.hostname, ISSUED, None, 0, iso(e.timestamp))

    def failed(self, cur: Cursor, e: Acm.Failed) -> None:
        app_id = _app_of(cur, e)
        rows = cur.query(
            "SELECT failures FROM waka_acm_domains WHERE hostname = ? AND app_id = ?",
            (e.hostname, app_id),
        )
        failures = (rows[0]["failures"] if rows else 0) + 1
        status = FAILED if failures >= MAX_FAILURES else FAILING
        self._put(cur, app_id, e.hostname, status, e.reason, failures, iso(e.timestamp))

    @staticmethod
    def _put(
        cur: Cursor, app_id: str, hostname: str, status: str, reason: str | None, n: int, at: str
    ) -> None:
        cur.execute("DELETE FROM waka_acm_domains WHERE hostname = ?", (hostname,))
        cur.execute(
            "INSERT INTO waka_acm_domains (hostname, app_id, status, reason, failures,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (hostname, app_id, status, reason, n, at),
        )

    def domain_removed(self, cur: Cursor, e: App.DomainRemoved) -> None:
        cur.execute("DELETE FROM waka_acm_domains WHERE hostname = ?", (e.hostname,))

    def destroyed(self, cur: Cursor, e: App.Destroyed) -> None:
        app_id = str(e.originator_id)
        cur.execute("DELETE FROM waka_acm WHERE app_id = ?", (app_id,))
        cur.execute("DELETE FROM waka_acm_domains WHERE app_id = ?", (app_id,))

    handlers = {
        Acm.Started: started,
        Acm.Enabled: enabled,
        Acm.Disabled: disabled,
        Acm.Refreshed: refreshed,
        Acm.Issued: issued,
        Acm.Failed: failed,
        App.DomainRemoved: domain_removed,
        App.Destroyed: destroyed,
    }


def _app_of(cur: Cursor, e: object) -> str:
    """The app of an ACM event after the first (only that one names it)."""
    rows = cur.query("SELECT app_id FROM waka_acm WHERE id = ?", (str(e.originator_id),))  # type: ignore[attr-defined]
    return rows[0]["app_id"] if rows else ""


def acm_enabled(store: ReadStore, app_id: str) -> bool:
    rows = store.query("SELECT enabled FROM waka_acm WHERE app_id = ?", (app_id,))
    return bool(rows and rows[0]["enabled"])


def enabled_apps(store: ReadStore) -> list[str]:
    return [r["app_id"] for r in store.query("SELECT app_id FROM waka_acm WHERE enabled = 1")]


def acm_domains(store: ReadStore, app_id: str) -> dict[str, Row]:
    rows = store.query("SELECT * FROM waka_acm_domains WHERE app_id = ?", (app_id,))
    return {r["hostname"]: r for r in rows}
