"""The projector: follows the ledger's notification log and keeps the read models current.

Each projection remembers its own position in `waka_positions`, written in the same
transaction as the rows it changed, so a crash at any point neither loses nor repeats an
event. Catch-up runs after every command (read-your-writes) and periodically, so another
process's writes (the `waka` CLI, a second API) show up too.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from waka.notification_log import notices, read_batch
from waka.projections.accounts import AccountsProjection
from waka.projections.acm import AcmProjection
from waka.projections.addons import AddonsProjection
from waka.projections.apps import AppsProjection
from waka.projections.authorizations import AuthorizationsProjection
from waka.projections.base import Projection
from waka.projections.builds import BuildsProjection
from waka.projections.collaborators import CollaboratorsProjection
from waka.projections.config_vars import ConfigVarsProjection
from waka.projections.domains import DomainsProjection
from waka.projections.drains import DrainsProjection
from waka.projections.features import FeaturesProjection
from waka.projections.formation import FormationProjection
from waka.projections.releases import ReleasesProjection
from waka.projections.sealing import Sealer
from waka.projections.sni_endpoints import SniEndpointsProjection
from waka.projections.store import ReadStore, Row
from waka.projections.teams import TeamsProjection
from waka.projections.transfers import AppTransfersProjection
from waka.projections.webhooks import WebhooksProjection

POSITIONS = """CREATE TABLE IF NOT EXISTS waka_positions (
    name TEXT PRIMARY KEY, position BIGINT NOT NULL, schema TEXT NOT NULL)"""

BATCH = 500


def all_projections(sealer: Sealer | None = None) -> list[Projection]:
    return [
        AppsProjection(),
        ReleasesProjection(),
        ConfigVarsProjection(sealer),
        FormationProjection(),
        AccountsProjection(),
        AuthorizationsProjection(),
        BuildsProjection(),
        DomainsProjection(),
        DrainsProjection(sealer),
        AddonsProjection(),
        SniEndpointsProjection(sealer),
        AcmProjection(),
        WebhooksProjection(sealer),
        FeaturesProjection(),
        CollaboratorsProjection(),
        TeamsProjection(),
        AppTransfersProjection(),
    ]


def schema_digest(projection: Projection) -> str:
    ddl = "\n".join(f"{name}:{sql}" for name, sql in sorted(projection.tables.items()))
    return hashlib.sha256(ddl.encode()).hexdigest()[:16]


class Projector:
    def __init__(
        self, ledger: Application, store: ReadStore, projections: Sequence[Projection] | None = None
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.projections = list(projections or all_projections(getattr(store, "sealer", None)))
        self._lock = threading.Lock()
        # Every projection here has applied the ledger up to this notification (it only
        # grows: positions are never moved back but by a rebuild, which resets it).
        self._caught_up_to = 0
        self._notifications_sql = self._same_database_notifications()

    def setup(self) -> None:
        """Create the read models; one whose tables changed shape since it was built is
        dropped and rebuilt from the ledger (read models are derived, the ledger is not)."""
        try:
            with self.store.transaction() as cur:
                cur.execute(POSITIONS)
                built = {
                    r["name"]: r["schema"]
                    for r in cur.query("SELECT name, schema FROM waka_positions")
                }
        except Exception:  # positions of an older layout: rebuild everything
            with self.store.transaction() as cur:
                cur.execute("DROP TABLE IF EXISTS waka_positions")
                cur.execute(POSITIONS)
            built = {}
        with self.store.transaction() as cur:
            for projection in self.projections:
                digest = schema_digest(projection)
                if built.get(projection.name) != digest:
                    for table in projection.tables:
                        cur.execute(f"DROP TABLE IF EXISTS {table}")
                    cur.execute("DELETE FROM waka_positions WHERE name = ?", (projection.name,))
                for ddl in projection.tables.values():
                    cur.execute(ddl)
                cur.execute(
                    "INSERT INTO waka_positions (name, position, schema) VALUES (?, 0, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (projection.name, digest),
                )

    def is_behind(self) -> bool:
        latest = self.ledger.recorder.max_notification_id() or 0
        rows = self.store.query("SELECT min(position) AS position FROM waka_positions")
        return (rows[0]["position"] or 0) < latest

    def catch_up(self) -> int:
        """Apply every notification not yet applied; return how many were read.

        Per batch one transaction, in pipeline mode on PostgreSQL: the lock, the positions
        and the notifications after them in one round trip (the notifications on the same
        connection when the read models live in the ledger's database), then every
        projection's statements, one UPDATE of all their positions and a commit that does not
        wait for the WAL flush in a second (see ReadStore.transaction: `durable`). With
        nothing of this process's own to apply, one cheap query first asks whether there is
        anything past the stored positions."""
        with self._lock:
            try:
                return self._catch_up()
            except Exception as error:
                if not _connection_lost(error):
                    raise
                # A pooled connection died while idle (PostgreSQL restarted): the transaction
                # is rolled back, so once the dead ones are dropped a new try starts clean.
                drop = getattr(self.store, "drop_dead_connections", None)
                if drop is not None:
                    drop()
                return self._catch_up()

    def _catch_up(self) -> int:
        applied = 0
        ours_pending = getattr(self.ledger, "last_recorded", 0) > self._caught_up_to
        if not ours_pending and not self._anything_new():
            return 0
        while True:
            with self.store.transaction(pipelined=True, durable=False) as cur:
                read = [("SELECT name, position FROM waka_positions", ())]
                if self._notifications_sql is not None:
                    names = [p.name for p in self.projections]
                    read.append((self._notifications_sql, (*names, BATCH)))
                rows, *found = cur.query_all(*read)
                positions = {r["name"]: r["position"] for r in rows}
                start = min(positions.get(p.name, 0) for p in self.projections)
                if found and all(p.name in positions for p in self.projections):
                    # (a projection without a position starts at 0; the query's min()
                    # would not see it: then it is read again below, from 0)
                    notifications = notices(self.ledger, map(_notification, found[0]))
                else:
                    notifications = read_batch(self.ledger, start, limit=BATCH)
                for notice in notifications:
                    for projection in self.projections:
                        if positions.get(projection.name, 0) < notice.id:
                            projection.apply(cur, notice.event)
                last = notifications[-1].id if notifications else start
                behind = [p.name for p in self.projections if positions.get(p.name, 0) < last]
                if behind:
                    marks = ", ".join("?" for _ in behind)
                    cur.execute(
                        f"UPDATE waka_positions SET position = ? WHERE name IN ({marks})",
                        (last, *behind),
                    )
            applied += len(notifications)
            self._caught_up_to = last
            if len(notifications) < BATCH:
                return applied

    def _anything_new(self) -> bool:
        """Is there a notification past some projection's stored position? Asked of the store,
        not of what this process last saw: another process may have rebuilt the read models,
        and a crash of PostgreSQL may take back the last catch-ups (they commit without
        waiting for the WAL flush)."""
        names = [p.name for p in self.projections]
        if self._notifications_sql is not None:
            query = f"SELECT 1 AS new FROM ({self._notifications_sql}) AS newer"
            return bool(self.store.query(query, (*names, 1)))
        latest = self.ledger.recorder.max_notification_id() or 0
        marks = ", ".join("?" for _ in names)
        rows = self.store.query(
            f"SELECT name, position FROM waka_positions WHERE name IN ({marks})", names
        )
        stored = {r["name"]: r["position"] for r in rows}
        return any(stored.get(name, 0) < latest for name in names)

    def _same_database_notifications(self) -> str | None:
        """The query for the notifications after the projections' lowest position, on the read
        store's own connection; None where the ledger is elsewhere (SQLite, another server)."""
        from eventsourcing.postgres import PostgresApplicationRecorder

        recorder = self.ledger.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            return None
        same = getattr(self.store, "same_database", None)
        if same is None or not same(recorder.datastore.pool.kwargs):
            return None
        table = f"{_quoted(recorder.datastore.schema)}.{_quoted(recorder.events_table_name)}"
        names = ", ".join("?" for _ in self.projections)
        return (
            "SELECT notification_id, originator_id, originator_version, topic, state"
            f" FROM {table} WHERE notification_id >"
            f" (SELECT coalesce(min(position), 0) FROM waka_positions WHERE name IN ({names}))"
            " ORDER BY notification_id LIMIT ?"
        )

    def rebuild(self) -> int:
        """Drop the read models and replay the whole ledger into them."""
        with self._lock, self.store.transaction() as cur:
            for projection in self.projections:  # forgotten, so setup() builds them anew
                cur.execute("DELETE FROM waka_positions WHERE name = ?", (projection.name,))
            self._caught_up_to = 0
        self.setup()
        return self.catch_up()

    def dump(self) -> dict[str, list[Row]]:
        """Every row of every read model, in a stable order (to compare two builds)."""
        out: dict[str, list[Row]] = {}
        for projection in self.projections:
            for table in projection.tables:
                rows = self.store.query(f"SELECT * FROM {table}")
                out[table] = sorted(rows, key=lambda r: sorted((k, str(v)) for k, v in r.items()))
        return out


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _notification(row: Row) -> Notification:
    return Notification(
        id=row["notification_id"],
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )


def _connection_lost(error: Exception) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(error, psycopg.OperationalError)
