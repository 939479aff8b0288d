"""The stores read around waka, as someone with a copy of them would: for secrets in clear.

Every file in the home byte by byte, and every value of every table through the database
itself (SQLite files, or the PostgreSQL schema's tables); a zlib-compressed value (an event's
state written without encryption) is decompressed too, as compressed is still in clear.
"""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Iterator

from waka.config import Settings


def _values(value: object) -> Iterator[bytes]:
    """A stored value as bytes, and decompressed too when it is zlib data."""
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        return
    yield value
    with contextlib.suppress(zlib.error):
        value = zlib.decompress(value)
        yield value


def raw_store_contents(settings: Settings) -> list[bytes]:
    """Everything the stores hold, read around waka: the home's files, every table's values."""
    found = [p.read_bytes() for p in settings.home.rglob("*") if p.is_file()]
    if settings.database_url:
        import psycopg
        from psycopg import sql

        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (settings.database_schema,),
            ).fetchall()
            assert len(tables) >= 3, tables  # events, snapshots, read models
            for (table,) in tables:
                query = sql.SQL("SELECT * FROM {}.{}").format(
                    sql.Identifier(settings.database_schema), sql.Identifier(table)
                )
                for row in conn.execute(query):
                    found += [v for value in row for v in _values(value)]
    else:
        for name in ("ledger.sqlite", "projections.sqlite"):
            conn = sqlite3.connect(settings.home / name)
            try:
                tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                for (table,) in tables.fetchall():
                    for row in conn.execute(f'SELECT * FROM "{table}"'):
                        found += [v for value in row for v in _values(value)]
            finally:
                conn.close()
    return found


def in_clear(settings: Settings, *secrets: str) -> set[str]:
    contents = raw_store_contents(settings)
    return {s for s in secrets if any(s.encode() in blob for blob in contents)}
