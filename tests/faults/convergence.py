"""What "the platform converged" means after a fault, checked from outside the processes: the
ledger, the read models, the Docker engine (or, with WAKA_RUNTIME=swarm, the Swarm's services
and its nodes' engines: tests/faults/swarm_seen.py), the add-on servers and /proc.

Each check returns a list of problems (empty: it holds); `settle` polls them until none is
left, since a restarted waka needs a moment to finish the work the killed one left."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
from psycopg import sql

from tests.e2e.processes import git_processes
from waka.adapters import cipher_key
from waka.config import Settings
from waka.ledger import Ledger
from waka.projections.projector import Projector
from waka.projections.sealing import Sealer
from waka.projections.store import PostgresReadStore

from .swarm_seen import SwarmDynosSeen

Check = Callable[[], list[str]]
EventKey = tuple[int, str, int]  # notification id, originator id, originator version


def settle(checks: Iterable[Check], timeout: float, what: str, context: str = "") -> list[str]:
    """Poll the checks until they all hold; fail with what is still wrong. Returns the
    problems seen on the way (what the platform was still doing), once each."""
    checks = list(checks)
    deadline = time.monotonic() + timeout
    seen: dict[str, None] = {}
    while True:
        problems = [p for check in checks for p in _problems(check)]
        if not problems:
            return list(seen)
        seen.update(dict.fromkeys(p[:160] for p in problems))
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not converged within {timeout:.0f} s{context}:\n  "
                + "\n  ".join(problems)
            )
        time.sleep(0.3)


def _problems(check: Check) -> list[str]:
    try:
        return check()
    except Exception as error:  # e.g. the database restarting: not converged yet
        return [f"{getattr(check, '__name__', check)} failed: {error!r}"]


def retrying(action: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`action()`, again while it fails on a database that is away (a restart under test)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Observer:
    """Reads one installation's stores as a separate process would (the ledger, the live read
    models, its containers and processes); writes nothing of the platform's."""

    def __init__(
        self,
        homes: list[Path],
        database_url: str,
        schema: str,
        key: str | None = None,
        swarm: SwarmDynosSeen | None = None,
    ) -> None:
        """`homes`: every process's WAKA_HOME, the first the API's; `key`: WAKA_CIPHER_KEY,
        if the processes are given one (else the first home's key file); `swarm`: where the
        dynos are when WAKA_RUNTIME=swarm (else the local Docker engine)."""
        self.homes = homes
        self.swarm = swarm
        self.home = homes[0]
        self.database_url = database_url
        self.schema = schema
        self.settings = cipher_key.resolve(
            Settings(
                home=self.home, database_url=database_url, database_schema=schema, cipher_key=key
            )
        )
        self.platform_id = self.settings.platform_id
        self.ledger = Ledger(env=self.settings.eventsourcing_env())
        self.sealer = Sealer(self.settings.cipher_key)
        self.live = PostgresReadStore(database_url, schema, max_size=2, sealer=self.sealer)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.live.pool.close()
        with contextlib.suppress(Exception):
            self.ledger.close()

    # --- the ledger ----------------------------------------------------------------------

    def events(self) -> list[EventKey]:
        """Every stored event, in notification order."""
        return retrying(self._events)

    def _events(self) -> list[EventKey]:
        keys: list[EventKey] = []
        start = 1
        while True:
            batch = self.ledger.recorder.select_notifications(start=start, limit=1000)
            keys += [(n.id, str(n.originator_id), n.originator_version) for n in batch]
            if len(batch) < 1000:
                return keys
            start = batch[-1].id + 1

    def topics(self) -> Counter[str]:
        """How many events of each topic the ledger holds (App.Released, ...)."""
        batch = self.ledger.recorder.select_notifications(start=1, limit=1_000_000)
        return Counter(n.topic.rpartition(":")[2] for n in batch)

    def no_event_lost(self, before: list[EventKey]) -> Check:
        def check() -> list[str]:
            now = set(self.events())
            lost = [key for key in before if key not in now]
            return (
                [f"{len(lost)} event(s) stored before the fault are gone: {lost[:5]}"]
                if lost
                else []
            )

        return check

    # --- the read models -----------------------------------------------------------------

    def replay_equals_live(self) -> list[str]:
        """Replay the whole ledger into read models in a FRESH schema and compare them with the
        live ones, once the live projector has caught up with the ledger."""
        last = self.ledger.recorder.max_notification_id() or 0
        rows = self.live.query("SELECT name, position FROM waka_positions")
        behind = {r["name"]: r["position"] for r in rows if r["position"] < last}
        if behind:
            return [f"live read models behind the ledger's {last}: {behind}"]
        fresh_schema = f"replay_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(fresh_schema)))
        fresh = PostgresReadStore(self.database_url, fresh_schema, max_size=2, sealer=self.sealer)
        try:
            replayed = Projector(self.ledger, fresh)
            replayed.setup()
            replayed.catch_up()
            live = Projector(self.ledger, self.live)  # only to dump the live tables
            expected, actual = replayed.dump(), live.dump()
            if (self.ledger.recorder.max_notification_id() or 0) != last:
                return ["the ledger moved while comparing the read models"]
            return [
                f"read model {table}: live {_diff(actual.get(table, []), rows)} the replay"
                for table, rows in expected.items()
                if actual.get(table) != rows
            ]
        finally:
            fresh.pool.close()
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(fresh_schema)))

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return retrying(lambda: self.live.query(statement, params))

    # --- builds, releases, add-ons (the read models; the ledger's equal by replay) --------

    def no_duplicate_builds_or_releases(self) -> list[str]:
        problems = []
        builds = self.query("SELECT * FROM waka_builds")
        by_commit = Counter((b["app_id"], b["source_version"]) for b in builds)
        problems += [f"{n} builds of one commit {key}" for key, n in by_commit.items() if n > 1]
        pending = [b["id"] for b in builds if b["status"] == "pending"]
        problems += [f"build {b} still pending" for b in pending]
        releases = self.query("SELECT app_id, version, description, status FROM waka_releases")
        deploys = Counter(
            (r["app_id"], r["description"])
            for r in releases
            if str(r["description"]).startswith("Deploy ") and r["status"] == "succeeded"
        )
        problems += [f"{n} releases '{d}' of one build" for (_, d), n in deploys.items() if n > 1]
        versions: dict[str, list[int]] = {}
        for r in releases:
            versions.setdefault(r["app_id"], []).append(r["version"])
        for app_id, found in versions.items():
            if sorted(found) != list(range(1, len(found) + 1)):
                problems.append(f"app {app_id}: release versions {sorted(found)}")
        return problems

    def addons(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM waka_addons")

    def postgres_addon_resources(self, admin_url: str) -> list[str]:
        """One role u<hex> and one database d<hex> per live Heroku Postgres add-on, and none
        other (the add-on server is this test's own cluster)."""
        live = {
            uuid.UUID(a["id"]).hex
            for a in self.addons()
            if a["service"] == "heroku-postgresql" and a["state"] == "provisioned"
        }
        with psycopg.connect(admin_url, autocommit=True) as conn:
            roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles")]
            databases = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
        found_roles = {r[1:] for r in roles if _addon_name(r, "u")}
        found_dbs = {d[1:] for d in databases if _addon_name(d, "d")}
        problems = []
        if found_roles != live:
            problems.append(f"add-on roles {sorted(found_roles)} != live add-ons {sorted(live)}")
        if found_dbs != live:
            problems.append(f"add-on databases {sorted(found_dbs)} != live add-ons {sorted(live)}")
        return problems

    def redis_addon_servers(self) -> list[str]:
        """Exactly one redis-server per live Redis add-on (by its working directory)."""
        live = {
            a["id"]
            for a in self.addons()
            if a["service"] == "heroku-redis" and a["state"] == "provisioned"
        }
        roots = {home / "addons" / "redis" for home in self.homes}
        servers: Counter[str] = Counter()
        for _pid, cwd, command in _processes():
            if "redis-server" in command and cwd.parent in roots:
                servers[cwd.name] += 1
        problems = [f"{n} redis-servers for add-on {a}" for a, n in servers.items() if n > 1]
        if set(servers) != live:
            problems.append(f"redis-servers for {sorted(servers)} != live add-ons {sorted(live)}")
        return problems

    def addons_settled(self) -> list[str]:
        return [
            f"add-on {a['name']} is {a['state']}"
            for a in self.addons()
            if a["state"] not in ("provisioned", "deprovisioned")
        ]

    # --- dynos and processes -------------------------------------------------------------

    def dynos_match_formation(self) -> list[str]:
        """The running dynos by label are the formation of each app's current release: none
        missing, none extra, no name twice, none left of a build or a one-off. Read from the
        Docker engine, or with `swarm` from the Swarm's services and the nodes' engines."""
        if self.swarm is not None:
            return self.dyno_problems(self.swarm.services()) + self.swarm.container_problems()
        from waka.adapters.runtime import docker_client

        client = docker_client()
        if client is None:
            return ["no Docker engine"]
        return self.dyno_problems(listed_containers(client, self.platform_id))

    def dyno_problems(self, observed: list[Any]) -> list[str]:
        """`dynos_match_formation` for these observed dynos, from either runtime (anything
        with `labels` and `status`: "running", or what else it is)."""
        dynos = [c for c in observed if "waka.dyno" in c.labels]
        builds = [c.labels.get("waka.build") for c in observed if "waka.build" in c.labels]
        problems = [f"a build's container is left: {b}" for b in builds]
        one_offs = [c.labels["waka.run"] for c in observed if "waka.run" in c.labels]
        problems += [f"a one-off is left: {name}" for name in one_offs]
        names = Counter((c.labels["waka.app"], c.labels["waka.dyno"]) for c in dynos)
        problems += [f"dyno {k} runs {n} times" for k, n in names.items() if n > 1]
        problems += [
            f"dyno {c.labels['waka.dyno']} is {c.status}" for c in dynos if c.status != "running"
        ]
        running = {
            (c.labels["waka.app"], c.labels["waka.dyno"]) for c in dynos if c.status == "running"
        }
        wanted: set[tuple[str, str]] = set()
        for app in self.query("SELECT * FROM waka_apps"):
            types = _process_types(app)
            for row in self.query(
                "SELECT type, quantity FROM waka_formation WHERE app_id = ?", (app["id"],)
            ):
                if row["type"] in types:
                    count = row["quantity"]
                    wanted |= {(app["id"], f"{row['type']}.{i}") for i in range(1, count + 1)}
        if running != wanted:
            problems.append(f"running dynos {_by_app(running)} != formation {_by_app(wanted)}")
        return problems

    def no_orphan_processes(self, role_pids: set[int]) -> list[str]:
        """No process of this installation but its roles and its add-on servers: no git,
        hook or build process outlives the one that started it."""
        left = {}
        markers = {f"WAKA_HOME={home}".encode() for home in self.homes}
        roots = tuple(f"GIT_PROJECT_ROOT={home}".encode() for home in self.homes)
        for pid, _cwd, command in _processes():
            if pid in role_pids or "redis-server" in command:
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if markers & set(environ) or any(e.startswith(roots) for e in environ):
                left[pid] = command
        for home in self.homes:
            left.update(git_processes(home))
        return [f"process left behind: {pid} {command}" for pid, command in left.items()]


def listed_containers(client: Any, platform_id: str) -> list[SimpleNamespace]:
    """The platform's containers with their labels and state, from the list call alone: the
    SDK's `containers.list` inspects each one afterwards, and fails with 404 when the dyno
    manager removes one in between."""
    mine = {"label": [f"waka.platform={platform_id}"]}
    return [
        SimpleNamespace(id=c["Id"], labels=c.get("Labels") or {}, status=c["State"])
        for c in client.api.containers(all=True, filters=mine)
    ]


def _by_app(dynos: set[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for app, name in sorted(dynos):
        found.setdefault(app[:8], []).append(name)
    return found


def _diff(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    extra = [r for r in actual if r not in expected]
    missing = [r for r in expected if r not in actual]
    return (
        f"has {len(extra)} row(s) not in ({extra[:2]}) and lacks {len(missing)} of ({missing[:2]})"
    )


def _addon_name(name: str, prefix: str) -> bool:
    rest = name[1:]
    return (
        name.startswith(prefix) and len(rest) == 32 and all(c in "0123456789abcdef" for c in rest)
    )


def _process_types(app: dict[str, Any]) -> set[str]:
    import json

    raw = app.get("process_types") or "{}"
    try:
        return set(json.loads(raw) if isinstance(raw, str) else raw)
    except ValueError:
        return set()


def _processes() -> Iterable[tuple[int, Path, str]]:
    """(pid, working directory, command line) of every live, non-zombie process."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        yield int(proc.name), cwd, command
