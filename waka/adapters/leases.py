"""Leases: which process does a piece of work that must be done once (a build, the dyno
manager's reconciling, an add-on's provisioning).

On PostgreSQL a lease is a session advisory lock held on one connection per process: when the
process dies its connection closes and PostgreSQL frees every lease it held at once (a host
that vanishes is noticed by TCP keepalives within about 10 s), so another worker takes the
work over. Losing that connection loses the leases; `hold` notices before the next piece of
work. On the embedded SQLite store there is one process: leases are a set in memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

log = logging.getLogger("waka.leases")


class Leases(Protocol):
    def hold(self, name: str) -> bool:
        """Take the lease, or confirm it is still ours; False if another process has it."""
        ...

    def release(self, name: str) -> None: ...

    def taken(self, name: str) -> bool:
        """Does any process (this one included) hold it? (Is a manager running somewhere?)"""
        ...

    def close(self) -> None: ...


@contextmanager
def leased(leases: Leases, name: str) -> Iterator[bool]:
    """Hold `name` for the block if it is free; yields whether it was taken."""
    got = leases.hold(name)
    try:
        yield got
    finally:
        if got:
            leases.release(name)


def work_dir_prefix(lease: str) -> str:
    """A work directory is named after the lease it is used under (`build_<id>-<random>`), so
    a worker starting on a home another live worker shares can tell whose it is."""
    return lease.replace(":", "_") + "-"


def lease_of_work_dir(name: str) -> str | None:
    prefix, dash, _random = name.rpartition("-")  # mkdtemp's random part has no dash
    return prefix.replace("_", ":") if dash and prefix else None


class LocalLeases:
    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, name: str) -> bool:
        with self._lock:
            self._held.add(name)
            return True

    def release(self, name: str) -> None:
        with self._lock:
            self._held.discard(name)

    def taken(self, name: str) -> bool:
        with self._lock:
            return name in self._held

    def close(self) -> None:
        with self._lock:
            self._held.clear()


class PostgresLeases:
    """Within one process a lease is held once: a second `hold` of a held name is a check."""

    def __init__(self, database_url: str, schema: str) -> None:
        self.database_url = database_url
        self.schema = schema
        self._conn = None
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def _key(self, name: str) -> str:
        return f"{self.schema}:{name}"

    def _connection(self):  # type: ignore[no-untyped-def]
        import psycopg

        if self._conn is None or self._conn.closed:
            if self._held:
                log.warning("lost the leases %s with the database connection", sorted(self._held))
            self._held.clear()
            self._conn = psycopg.connect(
                self.database_url,
                autocommit=True,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                application_name="waka-leases",
            )
        return self._conn

    def _query(self, sql: str, name: str) -> bool:
        try:
            row = self._connection().execute(sql, (self._key(name),)).fetchone()
        except Exception as error:
            log.warning("lease %s: %s", name, error)
            self._drop()
            return False
        return bool(row and row[0])

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        self._conn = None
        self._held.clear()

    def hold(self, name: str) -> bool:
        with self._lock:
            if name in self._held:
                return self._query("SELECT %s::text IS NOT NULL", name)  # connected: still ours
            if self._query("SELECT pg_try_advisory_lock(hashtextextended(%s::text, 0))", name):
                self._held.add(name)
                return True
            return False

    def release(self, name: str) -> None:
        with self._lock:
            if name in self._held:
                self._held.discard(name)
                self._query("SELECT pg_advisory_unlock(hashtextextended(%s::text, 0))", name)

    def taken(self, name: str) -> bool:
        with self._lock:
            if name in self._held:
                return True
            if self._query("SELECT pg_try_advisory_lock(hashtextextended(%s::text, 0))", name):
                self._query("SELECT pg_advisory_unlock(hashtextextended(%s::text, 0))", name)
                return False
            return self._conn is not None  # not taken by us: someone else has it

    def close(self) -> None:
        with self._lock:
            self._drop()
