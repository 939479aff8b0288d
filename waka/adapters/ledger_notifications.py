"""Ledger notifications: "events were saved", from any process, to whoever follows the ledger.

Reactors and projections follow the ledger's notification log; these tell them when to look.
- In-process (`Ledger.listen`): right after a save made in this process, in the saving thread,
  with the saved events' topics.
- From other processes: on PostgreSQL a statement trigger on the events table sends
  `NOTIFY` with the topics of each insert (delivered at commit, so never before the events can
  be read); on SQLite the notification log's newest id is polled (topics unknown: None).
A lost notification costs latency only: every follower also ticks on a timer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("waka.notifications")

Topics = frozenset[str] | None  # None: not known, so anything may have changed
Callback = Callable[[Topics], None]

ALL = "*"  # the payload when the topics would not fit in one NOTIFY (8,000 bytes)


def channel_name(schema: str) -> str:
    """One channel per schema, so installations (and test schemas) do not wake each other."""
    return f"waka_ledger_{schema}"[:63]


def trigger_sql(schema: str, events_table: str) -> list[str]:
    """The statement trigger that announces every insert into the ledger with its topics."""
    function = f'"{schema}".waka_ledger_notify'
    channel = channel_name(schema).replace("'", "''")
    return [
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
        DECLARE topics text;
        BEGIN
          SELECT string_agg(DISTINCT topic, ' ') INTO topics FROM saved;
          IF topics IS NULL THEN RETURN NULL; END IF;
          IF length(topics) > 7900 THEN topics := '{ALL}'; END IF;
          PERFORM pg_notify('{channel}', topics);
          RETURN NULL;
        END $$ LANGUAGE plpgsql""",
        f'DROP TRIGGER IF EXISTS waka_ledger_notify ON "{schema}"."{events_table}"',
        f"""CREATE TRIGGER waka_ledger_notify AFTER INSERT ON "{schema}"."{events_table}"
        REFERENCING NEW TABLE AS saved FOR EACH STATEMENT EXECUTE FUNCTION {function}()""",
    ]


def announce(cur: Any, channel: str | None, topic: str) -> None:
    """Tell every process's followers `topic` changed, at the commit of `cur`'s transaction
    (PostgreSQL; `channel` None on SQLite, where the one process needs no telling)."""
    if channel:
        cur.query("SELECT pg_notify(?, ?) AS sent", (channel, topic))


def parse_payload(payload: str) -> Topics:
    if not payload or payload == ALL:
        return None
    return frozenset(payload.split(" "))


class LedgerNotifications:
    """Calls every subscriber with the topics of each save: this process's at once, other
    processes' as the store tells (PostgreSQL) or as polling finds them (SQLite)."""

    def __init__(
        self,
        ledger: Any,
        *,
        database_url: str | None = None,
        schema: str = "public",
        poll_interval: float = 0.5,
    ) -> None:
        self.ledger = ledger
        self.database_url = database_url
        self.schema = schema
        self.poll_interval = poll_interval
        self._subscribers: tuple[Callback, ...] = ()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unlisten: Callable[[], None] | None = None
        self._conn: Any = None

    def subscribe(self, callback: Callback) -> None:
        self._subscribers = (*self._subscribers, callback)

    def setup(self) -> None:
        """Install the PostgreSQL trigger (idempotent; a lock keeps concurrent starts apart)."""
        if not self.database_url:
            return
        import psycopg

        table = self.ledger.recorder.events_table_name
        with psycopg.connect(self.database_url, autocommit=False) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('waka_ledger_notify_setup'))")
            for statement in trigger_sql(self.schema, table):
                conn.execute(statement)
            conn.commit()

    def start(self) -> None:
        self._stopping.clear()
        self._unlisten = self.ledger.listen(self._saved_here)
        target = self._listen_postgres if self.database_url else self._poll_sqlite
        self._thread = threading.Thread(target=target, name="ledger-notifications", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=1)  # ends a wait in notifies()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def notify(self, topics: Topics) -> None:
        for callback in self._subscribers:
            try:
                callback(topics)
            except Exception:  # the events are saved: a follower's fault is its own
                log.exception("ledger follower %r failed", callback)

    def _saved_here(self, events: list[Any]) -> None:
        from eventsourcing.utils import get_topic

        self.notify(frozenset(get_topic(type(e)) for e in events))

    def _poll_sqlite(self) -> None:
        last = self.ledger.recorder.max_notification_id() or 0
        while not self._stopping.wait(self.poll_interval):
            try:
                newest = self.ledger.recorder.max_notification_id() or 0
            except Exception:
                log.exception("reading the ledger's newest notification failed; retrying")
                continue
            if newest != last:
                last = newest
                self.notify(None)

    def _listen_postgres(self) -> None:
        import psycopg

        channel = channel_name(self.schema)
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self.database_url,
                    autocommit=True,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                ) as conn:
                    self._conn = conn
                    conn.execute(f'LISTEN "{channel}"')
                    self.notify(None)  # what was saved while nobody listened
                    backoff = 0.5
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.notify(parse_payload(note.payload))
            except Exception as error:
                if self._stopping.is_set():
                    return
                log.warning("listening to the ledger failed (%s); again in %.1f s", error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._conn = None
