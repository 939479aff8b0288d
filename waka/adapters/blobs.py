"""Blobs: named byte strings every process of a platform can read, written whole or not at all.

Sources, slugs, build caches and git bundles are kept as blobs. Two stores:
- `LocalBlobStore`: files under a directory (the embedded `waka up` on SQLite, one process).
- `PostgresBlobStore`: the platform's PostgreSQL (`waka_blobs`, `waka_blob_chunks` in its
  schema), so an API process, a worker and another worker, each with its own WAKA_HOME and
  host, see the same blobs. A blob is written in chunks of ~1 MiB inside one transaction and
  published by its commit: a reader sees the whole blob or none, and an upload cut off (an
  exception, a dead process, a dropped connection) leaves nothing. Reads stream chunk by
  chunk in a REPEATABLE READ snapshot, so a blob replaced meanwhile is read whole (old).

Neither store holds a blob in memory: 50 MB or 500 MB stream both ways.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

CHUNK_SIZE = 1 << 20  # bytes per row of waka_blob_chunks
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


class BlobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no blob {self.args[0]}"


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str  # hex digest of the content


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: no `..`, no hidden segment, no absolute path."""
    if not _KEY.fullmatch(key) or len(key) > 500:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobWriter(Protocol):
    size: int

    def write(self, data: bytes) -> int: ...

    @property
    def sha256(self) -> str: ...


class BlobStore(Protocol):
    def upload(self, key: str) -> contextlib.AbstractContextManager[BlobWriter]:
        """Write a blob: it is published (replacing any blob of that key) when the block ends
        without an exception, and nothing of it is kept otherwise."""
        ...

    def read(self, key: str) -> contextlib.AbstractContextManager[Iterator[bytes]]:
        """The blob's content, chunk by chunk; BlobNotFound (a KeyError) if there is none."""
        ...

    def stat(self, key: str) -> BlobInfo | None: ...

    def delete(self, key: str) -> bool: ...

    def keys(self, prefix: str = "") -> list[str]: ...

    def older_than(self, prefix: str, seconds: float) -> list[str]:
        """The keys under `prefix` of blobs published more than `seconds` ago."""
        ...

    def close(self) -> None: ...


def put_file(store: BlobStore, key: str, path: Path) -> BlobInfo:
    with store.upload(key) as out, open(path, "rb") as source:
        while data := source.read(CHUNK_SIZE):
            out.write(data)
    return BlobInfo(key, out.size, out.sha256)


def put(store: BlobStore, key: str, chunks: Iterable[bytes]) -> BlobInfo:
    with store.upload(key) as out:
        for data in chunks:
            out.write(data)
    return BlobInfo(key, out.size, out.sha256)


def get_file(store: BlobStore, key: str, dest: Path) -> BlobInfo:
    """Copy the blob to `dest`, through a temporary file renamed into place (a reader of
    `dest` never sees half of it). BlobNotFound if there is none."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, store.read(key) as chunks:
            for data in chunks:
                digest.update(data)
                size += len(data)
                out.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return BlobInfo(key, size, digest.hexdigest())


class _Hashing:
    """Counts and hashes what passes through to `sink` (a callable taking bytes)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.size = 0
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        if data:
            self._digest.update(data)
            self.size += len(data)
            self.sink(data)
        return len(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


# --- files ------------------------------------------------------------------------------------


class LocalBlobStore:
    """Blobs as files under `root` (a key `a/b` is `root/a/b`), each written to a temporary
    file and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def upload(self, key: str) -> Iterator[BlobWriter]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                yield _Hashing(out.write)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def read(self, key: str) -> Iterator[Iterator[bytes]]:
        try:
            source = open(self.path(key), "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(key) from None
        with source:
            yield iter(lambda: source.read(CHUNK_SIZE), b"")

    def stat(self, key: str) -> BlobInfo | None:
        path = self.path(key)
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as source:
            while data := source.read(CHUNK_SIZE):
                digest.update(data)
        return BlobInfo(key, path.stat().st_size, digest.hexdigest())

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and _KEY.fullmatch(key) and key.startswith(prefix):
                found.append(key)
        return sorted(found)

    def older_than(self, prefix: str, seconds: float) -> list[str]:
        before = time.time() - seconds
        old = []
        for key in self.keys(prefix):
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                if self.path(key).stat().st_mtime < before:  # (renamed into place whole)
                    old.append(key)
        return old

    def close(self) -> None:
        pass


# --- PostgreSQL -------------------------------------------------------------------------------


def _like(prefix: str) -> str:
    """A LIKE pattern for the keys that start with `prefix`."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PostgresBlobStore:
    """Blobs in PostgreSQL: `waka_blobs` (key → version, size, sha256) and `waka_blob_chunks`
    (version, seq → ≤1 MiB of bytea). A version is written whole in one transaction and the
    key points at it in the same transaction; the version it replaces is deleted there too."""

    def __init__(self, url: str, schema: str = "public", *, chunk_size: int = CHUNK_SIZE) -> None:
        from psycopg import sql

        self.url = url
        self.schema = schema
        self.chunk_size = chunk_size
        self._blobs = sql.Identifier(schema, "waka_blobs")
        self._chunks = sql.Identifier(schema, "waka_blob_chunks")
        self._versions = sql.Identifier(schema, "waka_blob_versions")
        self._lock = threading.Lock()
        self._pool: Any = None

    def connection(self) -> contextlib.AbstractContextManager[Any]:
        """A connection of the store's pool (autocommit), for small queries of neighbours
        (push records); never for session state such as an advisory lock."""
        return self._connection()

    def _connection(self) -> contextlib.AbstractContextManager[Any]:
        """A pooled connection (autocommit: each use opens its own transaction). The pool
        and the tables are made on first use, so a process that never touches blobs never
        connects for them."""
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=8,
                    open=True,
                    kwargs={"autocommit": True},
                    # A connection broken by a restart of PostgreSQL is replaced, not used.
                    check=ConnectionPool.check_connection,
                )
                try:
                    with pool.connection() as conn:
                        self._setup(conn)
                except BaseException:
                    pool.close()
                    raise
                self._pool = pool
        return self._pool.connection()

    def _setup(self, conn: Any) -> None:
        from psycopg import sql

        statements = [
            "CREATE SEQUENCE IF NOT EXISTS {versions}",
            "CREATE TABLE IF NOT EXISTS {blobs} (key text PRIMARY KEY, version bigint NOT NULL,"
            " size bigint NOT NULL, sha256 text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())",
            "CREATE TABLE IF NOT EXISTS {chunks} (version bigint NOT NULL, seq integer NOT NULL,"
            " data bytea NOT NULL, PRIMARY KEY (version, seq))",
            # Stored as is, never compressed by TOAST: blobs are gzip tarballs and git packs.
            "ALTER TABLE {chunks} ALTER COLUMN data SET STORAGE EXTERNAL",
        ]
        with conn.transaction():
            # Two processes starting at once would race on CREATE ... IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('waka_blobs_setup', 0))")
            for statement in statements:
                conn.execute(
                    sql.SQL(statement).format(
                        versions=self._versions, blobs=self._blobs, chunks=self._chunks
                    )
                )

    @contextlib.contextmanager
    def upload(self, key: str) -> Iterator[BlobWriter]:
        from psycopg import sql

        check_key(key)
        insert = sql.SQL("INSERT INTO {} (version, seq, data) VALUES (%s, %s, %b)").format(
            self._chunks
        )
        with self._connection() as conn, conn.transaction():
            version = conn.execute(
                sql.SQL("SELECT nextval(%s::regclass)"), (self._regclass("waka_blob_versions"),)
            ).fetchone()[0]
            buffer = bytearray()
            seq = 0

            def flush(final: bool = False) -> None:
                nonlocal seq, buffer
                while len(buffer) >= self.chunk_size or (final and buffer):
                    data = bytes(buffer[: self.chunk_size])
                    del buffer[: self.chunk_size]
                    conn.execute(insert, (version, seq, data))
                    seq += 1

            def sink(data: bytes) -> None:
                buffer.extend(data)
                if len(buffer) >= self.chunk_size:
                    flush()

            writer = _Hashing(sink)
            yield writer
            flush(final=True)
            self._publish(conn, key, version, writer.size, writer.sha256)

    def _publish(self, conn: Any, key: str, version: int, size: int, sha256: str) -> None:
        from psycopg import sql

        # Writers of one key publish one at a time, each dropping the version it replaces.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"blob:{key}",))
        old = conn.execute(
            sql.SQL("SELECT version FROM {} WHERE key = %s").format(self._blobs), (key,)
        ).fetchone()
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (key, version, size, sha256) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, "
                "size = EXCLUDED.size, sha256 = EXCLUDED.sha256, created_at = now()"
            ).format(self._blobs),
            (key, version, size, sha256),
        )
        if old is not None:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE version = %s").format(self._chunks), (old[0],)
            )

    def _regclass(self, name: str) -> str:
        from psycopg import sql

        return sql.Identifier(self.schema, name).as_string(None)

    @contextlib.contextmanager
    def read(self, key: str) -> Iterator[Iterator[bytes]]:
        from psycopg import sql

        check_key(key)
        select = sql.SQL("SELECT data FROM {} WHERE version = %s AND seq = %s").format(self._chunks)
        with self._connection() as conn, conn.transaction():
            # One snapshot for the whole read: a blob replaced meanwhile is read whole (old).
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute(
                sql.SQL("SELECT version FROM {} WHERE key = %s").format(self._blobs), (key,)
            ).fetchone()
            if row is None:
                raise BlobNotFound(key)
            version = row[0]

            def chunks() -> Iterator[bytes]:
                seq = 0
                while True:
                    found = conn.execute(select, (version, seq), binary=True).fetchone()
                    if found is None:
                        return
                    yield bytes(found[0])
                    seq += 1

            yield chunks()

    def stat(self, key: str) -> BlobInfo | None:
        from psycopg import sql

        check_key(key)
        with self._connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT size, sha256 FROM {} WHERE key = %s").format(self._blobs), (key,)
            ).fetchone()
        return None if row is None else BlobInfo(key, row[0], row[1])

    def delete(self, key: str) -> bool:
        from psycopg import sql

        check_key(key)
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"blob:{key}",))
            row = conn.execute(
                sql.SQL("DELETE FROM {} WHERE key = %s RETURNING version").format(self._blobs),
                (key,),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE version = %s").format(self._chunks), (row[0],)
            )
            return True

    def keys(self, prefix: str = "") -> list[str]:
        from psycopg import sql

        with self._connection() as conn:
            rows = conn.execute(
                sql.SQL("SELECT key FROM {} WHERE key LIKE %s ORDER BY key").format(self._blobs),
                (_like(prefix),),
            ).fetchall()
        return [row[0] for row in rows]

    def older_than(self, prefix: str, seconds: float) -> list[str]:
        from psycopg import sql

        with self._connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT key FROM {} WHERE key LIKE %s"
                    " AND created_at < now() - make_interval(secs => %s) ORDER BY key"
                ).format(self._blobs),
                (_like(prefix), seconds),
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def copy_to(store: BlobStore, key: str, out: BinaryIO) -> int:
    """Write the blob into an open binary file; returns its size."""
    size = 0
    with store.read(key) as chunks:
        for data in chunks:
            out.write(data)
            size += len(data)
    return size
