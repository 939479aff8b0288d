"""ReadStore: the SQL database that holds the read models, SQLite or PostgreSQL.

Queries are written once with `?` placeholders; the PostgreSQL store rewrites them to `%s`.
`transaction()` is exclusive across processes (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock), so two followers never apply the same events twice.

On PostgreSQL a plain `query()` runs on an autocommit connection: one round trip, where a
connection in a transaction would add a BEGIN before it and the pool's ROLLBACK after it.
`transaction(pipelined=True)` sends its statements in psycopg's pipeline mode: they go out
without waiting for each other's answers, and only a query's rows (or the commit) wait.
`durable=False` commits without waiting for the WAL flush (synchronous_commit off): for the
projector, whose rows and positions are derived from the ledger and commit together, so a
server crash can only take back its last catch-ups, which it then makes again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from waka.projections.sealing import Sealer

Row = dict[str, Any]

# Any fixed number: the key of the advisory lock that serialises projection catch-ups.
_PROJECTION_LOCK = 0x7761_6B61


Statement = tuple[str, Sequence[Any]]


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def query_all(self, *statements: Statement) -> list[list[Row]]: ...


class ReadStore(Protocol):
    sealer: Sealer  # encrypts secrets in the read models (when there is a cipher key)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def transaction(self, pipelined: bool = False, durable: bool = True) -> Any: ...
    def close(self) -> None: ...


class _SqliteCursor:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.conn.execute(sql, tuple(params))
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query_all(self, *statements: Statement) -> list[list[Row]]:
        return [self.query(sql, params) for sql, params in statements]


class SqliteReadStore:
    def __init__(self, path: Path, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []  # every thread's, so close() closes all
        self._opened_lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return _SqliteCursor(self._conn).query(sql, params)

    @contextmanager
    def transaction(self, pipelined: bool = False, durable: bool = True) -> Iterator[_SqliteCursor]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SqliteCursor(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


class _PostgresCursor:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.conn.execute(sql.replace("?", "%s"), tuple(params)).fetchall())

    def query_all(self, *statements: Statement) -> list[list[Row]]:
        """All sent before any answer is read: in a pipelined transaction, one round trip."""
        cursors = [self.conn.execute(sql.replace("?", "%s"), tuple(p)) for sql, p in statements]
        return [list(cursor.fetchall()) for cursor in cursors]


class PostgresReadStore:
    def __init__(
        self, url: str, schema: str = "public", max_size: int = 10, sealer: Sealer | None = None
    ) -> None:
        self.sealer = sealer or Sealer()
        self.url = url
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        def configure(conn: Any) -> None:
            conn.row_factory = dict_row
            conn.execute(f'SET search_path TO "{schema}"')
            conn.commit()

        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            configure=configure,
            open=True,
            kwargs={"autocommit": True},  # transaction() opens its own
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run on a pooled connection. One that died while idle (PostgreSQL restarted) fails
        the query: then the pool's dead connections are dropped and it is asked once more."""
        import psycopg

        broken = False
        try:
            with self.pool.connection() as conn:
                try:
                    return _PostgresCursor(conn).query(sql, params)
                except psycopg.OperationalError:
                    broken = conn.broken
                    raise
        except psycopg.OperationalError:
            if not broken:
                raise
        self.drop_dead_connections()
        with self.pool.connection() as conn:
            return _PostgresCursor(conn).query(sql, params)

    def drop_dead_connections(self) -> None:
        """Check the idle pooled connections (one round trip each) and drop the dead ones: after
        one was found dead, the others that were idle through the same restart are too."""
        self.pool.check()

    @contextmanager
    def transaction(
        self, pipelined: bool = False, durable: bool = True
    ) -> Iterator[_PostgresCursor]:
        with (
            self.pool.connection() as conn,
            conn.pipeline() if pipelined else nullcontext(),
            conn.transaction(),
        ):
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PROJECTION_LOCK,))
            yield _PostgresCursor(conn)

    def same_database(self, params: dict[str, Any]) -> bool:
        """Is this the database that connection parameters (host, port, dbname) name?"""
        from psycopg.conninfo import conninfo_to_dict

        mine = conninfo_to_dict(self.url)
        return all(
            str(mine.get(key) or default) == str(params.get(key) or default)
            for key, default in (("host", "localhost"), ("port", 5432), ("dbname", ""))
        )

    def close(self) -> None:
        self.pool.close()
