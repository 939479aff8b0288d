"""Build output: one append-only file per build. The builder writes it; the git hook and
`output_stream_url` follow it while the build runs and replay it afterwards.

Where processes share PostgreSQL, the output is rows of `waka_build_output` instead
(`SharedBuildLogs`): a build run by a worker is followed by the hook of the API process that
took the push, and by `output_stream_url` on any API process.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("waka.build_logs")
BUILD_ID = re.compile(r"^[0-9a-f-]{36}$")


class BuildLogs:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, build_id: str) -> Path:
        if not BUILD_ID.fullmatch(build_id):
            raise ValueError(f"Invalid build id {build_id!r}.")
        return self.root / f"{build_id}.log"

    def open(self, build_id: str) -> BuildLog:
        return BuildLog(_LocalOutput(self.path(build_id)))  # type: ignore[arg-type]

    def follow(
        self,
        build_id: str,
        is_done: Callable[[], bool],
        poll: float = 0.2,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Yield the log as it grows, until the build is done and everything is read: the
        builder writes its last lines ("Released v2") after the ledger says the build is
        done, so "done" waits for the writer's end mark (or END_GRACE of a log that stopped
        growing: a writer killed mid-build, a log from before end marks)."""
        path = self.path(build_id)
        end = _end_mark(path)
        deadline = None if timeout is None else time.monotonic() + timeout
        position = 0
        while True:
            done = is_done()  # asked before reading, so no line written before "done" is lost
            ended = end.exists()  # before reading too: every line before the mark is read
            if path.exists():
                with path.open("rb") as log:
                    log.seek(position)
                    while chunk := log.read(1 << 16):
                        position += len(chunk)
                        yield chunk
            if done and (ended or _still_for(path, END_GRACE)):
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(poll if not done else min(poll, 0.05))


class _LocalOutput:
    """A build's log file; closing it marks its end (`<id>.end`) for followers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("ab", buffering=0)
        # A build run again after a crash appends: the earlier run's mark is not this end.
        _end_mark(path).unlink(missing_ok=True)

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        _end_mark(self.path).touch()


def _end_mark(path: Path) -> Path:
    return path.with_suffix(".end")


def _still_for(path: Path, seconds: float) -> bool:
    """Whether the file (or its absence) has not changed for `seconds`."""
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return True


class BuildLog:
    """A writer that keeps whole lines, Heroku style: `-----> step` and indented output."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def step(self, text: str) -> None:
        self.line(f"-----> {text}")

    def detail(self, text: str) -> None:
        self.line(f"       {text}")

    def error(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.line(f" !     {line}")

    def line(self, text: str) -> None:
        self.write((text.rstrip("\n") + "\n").encode())

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        self.out.close()


FLUSH_EVERY = 0.1  # seconds a written line may wait before it is in the database
END_GRACE = 5.0  # seconds a follower waits for the end of the output of a finished build


class SharedBuildLogs:
    """Output in PostgreSQL: one row per flush (`stream`, output id, seq, bytes); `stream`
    tells build output ("builds") from release-phase output ("release-output")."""

    def __init__(self, url: str, schema: str, stream: str) -> None:
        from psycopg import sql

        self.url = url
        self.stream = stream
        self.table = sql.Identifier(schema, "waka_build_output").as_string(None)
        self._ready = False

    def path(self, build_id: str) -> str:
        """Checks the id (callers validate with it); there is no file."""
        if not BUILD_ID.fullmatch(build_id):
            raise ValueError(f"Invalid build id {build_id!r}.")
        return f"{self.stream}/{build_id}"

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True)
        if not self._ready:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('waka_build_output', 0))"
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} (stream text NOT NULL,"
                    " output_id text NOT NULL, seq integer NOT NULL, data bytea NOT NULL,"
                    " PRIMARY KEY (stream, output_id, seq))"
                )
            self._ready = True
        return conn

    def open(self, build_id: str) -> BuildLog:
        self.path(build_id)
        return BuildLog(_SharedOutput(self, build_id))  # type: ignore[arg-type]

    def follow(
        self,
        build_id: str,
        is_done: Callable[[], bool],
        poll: float = 0.2,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Yield the output as it grows, until the build is done and everything is read:
        a writer ends its output with an empty row, and the builder writes its last lines
        after the ledger says the build is done, so "done" waits for that row (a while: a
        writer killed mid-build never writes it)."""
        self.path(build_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        seq, ended, done_since = 0, False, None
        with self._connect() as conn:
            while True:
                done = is_done()  # asked before reading: no line written before "done" is lost
                rows = conn.execute(
                    f"SELECT seq, data FROM {self.table} WHERE stream = %s AND output_id = %s"
                    " AND seq >= %s ORDER BY seq",
                    (self.stream, build_id, seq),
                    binary=True,
                ).fetchall()
                for found, data in rows:
                    seq = found + 1
                    ended = not data
                    if data:
                        yield bytes(data)
                if done:
                    done_since = done_since or time.monotonic()
                    if ended or time.monotonic() - done_since > END_GRACE:
                        return
                if deadline is not None and time.monotonic() > deadline:
                    return
                time.sleep(poll if not done else min(poll, 0.05))


class _SharedOutput:
    """A build's output being written: lines gather for FLUSH_EVERY, then go in one row (a
    build printing thousands of lines makes tens of rows a second, not thousands)."""

    def __init__(self, logs: SharedBuildLogs, output_id: str) -> None:
        self.logs = logs
        self.output_id = output_id
        self.conn = logs._connect()
        row = self.conn.execute(
            f"SELECT coalesce(max(seq) + 1, 0) FROM {logs.table}"
            " WHERE stream = %s AND output_id = %s",
            (logs.stream, output_id),
        ).fetchone()
        self.seq = row[0]  # a build run again after a crash appends to its output
        self.pending = bytearray()
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.flusher = threading.Thread(target=self._flush_often, daemon=True)
        self.flusher.start()

    def write(self, data: bytes) -> int:
        with self.lock:
            self.pending += data
        return len(data)

    def _flush_often(self) -> None:
        while not self.closed.wait(FLUSH_EVERY):
            try:
                self._flush()
            except Exception as error:  # the database is away: kept, and tried again
                log.warning("build output %s not stored yet: %s", self.output_id, error)
                self._reconnect()

    def _flush(self) -> None:
        with self.lock:
            if not self.pending:
                return
            self.conn.execute(
                f"INSERT INTO {self.logs.table} (stream, output_id, seq, data)"
                " VALUES (%s, %s, %s, %b)",
                (self.logs.stream, self.output_id, self.seq, bytes(self.pending)),
            )
            self.pending.clear()
            self.seq += 1

    def _reconnect(self) -> None:
        """After a restart of PostgreSQL the connection is gone for good: a new one."""
        with self.lock:
            if not self.conn.broken:
                return
            try:
                self.conn = self.logs._connect()
            except Exception as error:
                log.warning("build output %s: no database yet: %s", self.output_id, error)

    def close(self) -> None:
        self.closed.set()
        self.flusher.join()
        self._reconnect()
        try:
            self._flush()
            self.conn.execute(  # the end: followers stop here
                f"INSERT INTO {self.logs.table} (stream, output_id, seq, data)"
                " VALUES (%s, %s, %s, '')",
                (self.logs.stream, self.output_id, self.seq),
            )
        except Exception as error:  # the build's outcome is in the ledger all the same
            log.warning("the end of build output %s was lost: %s", self.output_id, error)
        finally:
            self.conn.close()
