"""The dyno manager: formation x current release → running dynos. A reconciler.

Every tick it compares what should run (the read models: each app's live slug, release,
formation, config and restart generations) with what runs (containers found by their labels)
and converges: start what is missing, replace dynos of an older release or generation, stop
what is no longer wanted, restart crashed dynos with back-off. Level-triggered, so a restart
of waka, a missed event or a container killed from outside all end the same way.

Web dynos are replaced as on Heroku, by the app's `preboot` feature. Without it (the default):
the old dyno leaves the router and gets SIGTERM (SIGKILL 10 s later); the new one starts once
the old has exited, and the router holds the app's requests until it binds $PORT (H20 after
the router's wake timeout). With preboot: the new dynos start beside the old ones, which keep
serving until every new web dyno has bound $PORT within the boot timeout (else R10, and the
old one keeps serving); then the router switches to all the new ones at once, and the old ones
get SIGTERM. Worker dynos are replaced as soon as their new one runs, either way.

Runtime facts (up, crashed, addresses) live here, not in the ledger; the router's table and
the app's log hear about them through callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from waka.adapters.dyno_containers import R15
from waka.adapters.dyno_states import DynoStates
from waka.adapters.dynos import Dynos, DynoSpec, ObservedDyno, port_open
from waka.adapters.slugs import SlugStore
from waka.domain import rules
from waka.domain.features import PREBOOT
from waka.features import dyno_metadata, with_dyno_id
from waka.projections.config_vars import config_of
from waka.projections.features import enabled_features
from waka.projections.formation import formation_of
from waka.projections.store import ReadStore, Row
from waka.router.route_store import WAKE_PREFIX

log = logging.getLogger("waka.dyno_manager")

BOOT_TIMEOUT = 60.0
SLEEP_AFTER = 30 * 60.0  # eco dynos sleep after this long without a request, as on Heroku
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL
# A dyno taken out of routing gets SIGTERM only after this long, so that requests the router
# already sent it can finish: a redeploy or a scale-down fails no request.
DRAIN = 2.0
MAX_BACKOFF = 60.0

LogFn = Callable[[str, str, str, str], None]  # app_id, source, dyno, message


@dataclass
class RouteUpdate:
    app_id: str
    app_name: str
    maintenance: bool
    backends: list[tuple[str, int, str]]  # host, port, dyno
    crashed: bool
    gone: bool = False  # the app was destroyed: take it off the router
    sleeping: bool = False  # an eco app asleep: the router holds requests and wakes it


@dataclass
class _Dyno:
    """What the manager knows of one container beyond what Docker says."""

    state: str = "starting"  # starting, up, crashed
    started: float = field(default_factory=time.monotonic)
    up_since: float | None = None
    logged_exit: bool = False


@dataclass
class _Backoff:
    # The dyno of one release and restart generation: a new release's (or a restarted)
    # dyno starts at once, whatever the old one's crashes.
    release: int
    generation: int
    crashes: int = 0
    not_before: float = 0.0


class DynoManager:
    """A reactor (waka.reactors.lifecycle), one process at a time (leased): it adopts the
    dynos it finds by label, so the worker taking over carries on from the engine's state."""

    name = "dyno-manager"
    interval = 0.25

    def __init__(
        self,
        store: ReadStore,
        slugs: SlugStore,
        dynos: Dynos,
        *,
        log_line: LogFn,
        route: Callable[[RouteUpdate], None],
        boot_timeout: float = BOOT_TIMEOUT,
        last_request: Callable[[str], float | None] = lambda app_id: None,
        sleep_after: float = SLEEP_AFTER,
        states: DynoStates | None = None,
    ) -> None:
        self.store = store
        self.slugs = slugs
        self.dynos = dynos
        self.log_line = log_line
        self.route = route
        self.boot_timeout = boot_timeout
        self.known: dict[str, _Dyno] = {}  # container id -> state
        self.backoff: dict[tuple[str, str], _Backoff] = {}  # (app, dyno) -> crash back-off
        self.stopping: set[str] = set()
        # Without preboot: (app, dyno) whose old dyno is shutting down before the new one starts,
        # and apps whose requests the router holds meanwhile.
        self.stopping_first: set[tuple[str, str]] = set()
        self.held: set[str] = set()
        self.routed: set[str] = set()  # apps the router has been told about
        self.last_request = last_request
        self.sleep_after = sleep_after
        self.asleep: set[str] = set()
        self.awake_since: dict[str, float] = {}  # counts as activity for an app never requested
        self.observed: list[ObservedDyno] = []
        self.states = states  # what runs, for `heroku ps` in any API process
        self.wakeup = threading.Event()
        self._lock = threading.Lock()
        # App webhooks' `dyno` events: observed state, not ledger facts, so told in-process
        # (the composition root sets this to the webhook reactor's dyno_changed).
        self.dyno_events: Callable[[str, str, dict[str, Any]], None] | None = None

    # --- the loop ---------------------------------------------------------------------------

    def notice(self, topics: frozenset[str] | None) -> None:
        """A router (in any process) asked for a sleeping app: wake it."""
        for topic in topics or ():
            if topic.startswith(WAKE_PREFIX):
                self.wake(topic.removeprefix(WAKE_PREFIX))

    def close(self) -> None:
        self.dynos.shutdown()  # host-process dynos stop with their manager; containers stay

    def tick(self) -> None:
        apps = {row["id"]: row for row in self.store.query("SELECT * FROM waka_apps")}
        observed = [d for d in self.dynos.list() if d.container_id not in self.stopping]
        with self._lock:
            self.observed = observed
        by_app: dict[str, list[ObservedDyno]] = {}
        for dyno in observed:
            by_app.setdefault(dyno.app_id, []).append(dyno)
        for app_id in set(apps) | set(by_app):
            app = apps.get(app_id)
            desired = self._desired(app) if app else {}
            if app is not None and self._should_sleep(app_id, desired):
                desired = {}
            self._converge(app_id, app, desired, by_app.get(app_id, []))
        for app_id in self.routed - set(apps):
            self.route(RouteUpdate(app_id, "", False, [], False, gone=True))
            self.held.discard(app_id)
        self.routed = set(apps)
        if self.states is not None:
            self.states.publish(
                {app_id: self.dynos_of(app_id) for app_id in sorted(by_app) if app_id in apps}
            )
        # Forget containers that are gone; not the ones this tick started (not listed yet).
        live = {d.container_id for d in observed}
        recent = time.monotonic() - 30
        self.known = {
            cid: state for cid, state in self.known.items() if cid in live or state.started > recent
        }

    # --- desired state ------------------------------------------------------------------------

    def _desired(self, app: Row) -> dict[str, DynoSpec]:
        if not app["slug_id"]:
            return {}
        process_types: dict[str, str] = orjson.loads(app["process_types"])
        restarts: dict[str, int] = orjson.loads(app["restarts"])
        formation = formation_of(self.store, app["id"])
        if not any(f["quantity"] for f in formation if f["type"] in process_types):
            return {}
        try:
            slug_path = self.slugs.get(app["slug_id"]).path
        except KeyError:
            log.warning("slug %s of %s is missing", app["slug_id"], app["name"])
            return {}
        # Config vars, and Heroku's dyno metadata when runtime-dyno-metadata is on.
        config = {
            **config_of(self.store, app["id"]),
            **dyno_metadata(self.store, app["id"], app["current_release"]),
        }
        desired = {}
        for row in formation:
            command = process_types.get(row["type"])
            if command is None or row["type"] == "release":
                continue
            for index in range(1, row["quantity"] + 1):
                name = f"{row['type']}.{index}"
                desired[name] = DynoSpec(
                    app_id=app["id"],
                    app_name=app["name"],
                    name=name,
                    process_type=row["type"],
                    command=command,
                    release=app["current_release"],
                    generation=sum(restarts.get(k, 0) for k in ("", row["type"], name)),
                    env=config,
                    memory_mb=rules.SIZE_MEMORY_MB.get(row["size"], 512),
                    size=row["size"],
                    slug_path=slug_path,
                )
        return desired

    # --- converging one app -------------------------------------------------------------------

    def _converge(
        self,
        app_id: str,
        app: Row | None,
        desired: dict[str, DynoSpec],
        observed: list[ObservedDyno],
    ) -> None:
        by_name: dict[str, list[ObservedDyno]] = {}
        for dyno in observed:
            by_name.setdefault(dyno.name, []).append(dyno)
        serving: list[ObservedDyno] = []
        preboot = app is not None and PREBOOT in enabled_features(self.store, app_id)
        prebooted: list[tuple[ObservedDyno, list[ObservedDyno]]] = []  # new web dyno up, old ones
        web_booting = False  # a web dyno of the current release is still on its way up
        for name, spec in desired.items():
            web = spec.process_type == "web"
            containers = by_name.pop(name, [])
            current = [
                c
                for c in containers
                # A new release, a restart or a new size: the dyno is replaced.
                if (c.release, c.generation, c.size) == (spec.release, spec.generation, spec.size)
            ]
            older = [c for c in containers if c not in current]
            for extra in current[1:]:
                self._stop(extra, "Stopping a duplicate")
            dyno = current[0] if current else None
            if dyno is not None and not dyno.running:
                self._crashed(dyno)
                dyno = None
            if dyno is None:
                web_booting = web_booting or (web and self._backoff_of(spec) is None)
                if web and not preboot and any(c.running for c in older):
                    # Heroku's standard replacement: the old dyno stops first; the new one
                    # starts once it has exited, and the router holds requests meanwhile.
                    key = (app_id, name)
                    self.stopping_first.add(key)
                    self.held.add(app_id)
                    for old in older:
                        self._stop(
                            old,
                            "Stopping all processes with SIGTERM",
                            then=lambda key=key: self.stopping_first.discard(key),
                        )
                    continue
                if (app_id, name) in self.stopping_first:
                    continue  # its old dyno is still shutting down
                self._start_when_due(spec)
                # Until the replacement is up, the older dyno keeps serving.
                serving += [c for c in older if c.running]
                continue
            up = self._check_boot(dyno, spec)
            if up and web and preboot:
                prebooted.append((dyno, older))  # switched below, all at once
            elif up:
                serving.append(dyno)
                for old in older:
                    self._stop(old, "Stopping all processes with SIGTERM")
            else:
                web_booting = web_booting or web
                serving += [c for c in older if c.running]
        for dyno, older in prebooted:
            # Preboot: the old web dynos serve until every new one is up; then all switch.
            still = [c for c in older if c.running]
            if web_booting and still:
                serving += still
                continue
            serving.append(dyno)
            for old in older:
                self._stop(old, "Stopping all processes with SIGTERM")
        for containers in by_name.values():  # no longer wanted: scaled down, gone, destroyed
            for dyno in containers:
                self._stop(dyno, "Stopping all processes with SIGTERM")
        if app is not None:
            backends = [
                (*d.address, d.name)
                for d in serving
                if d.process_type == "web" and d.address is not None
            ]
            # Web dynos that keep crashing (in back-off) and none serving: H10.
            crashed = not backends and any(
                self._backoff_of(s) is not None for s in desired.values() if s.process_type == "web"
            )
            if backends or crashed or not web_booting:
                self.held.discard(app_id)
            self.route(
                RouteUpdate(
                    app_id=app_id,
                    app_name=app["name"],
                    maintenance=bool(app["maintenance"]),
                    backends=backends,
                    # Asleep, or between an old web dyno and its replacement (no preboot): the
                    # router holds requests until a dyno is routed, as it does to wake an app.
                    sleeping=app_id in self.asleep or app_id in self.held,
                    crashed=crashed,
                )
            )

    def _should_sleep(self, app_id: str, desired: dict[str, DynoSpec]) -> bool:
        """Eco apps sleep after `sleep_after` without a request; all their dynos stop."""
        eco_web = any(s.process_type == "web" and s.size == "Eco" for s in desired.values())
        if not eco_web:
            self.asleep.discard(app_id)
            self.awake_since.pop(app_id, None)
            return False
        if app_id in self.asleep:
            return True
        now = time.monotonic()
        if app_id in self.held:  # its web dyno is being replaced (no preboot): not idle yet
            self.awake_since[app_id] = now
            return False
        since = self.awake_since.setdefault(app_id, now)
        last = max(self.last_request(app_id) or 0.0, since)
        if now - last > self.sleep_after:
            self.asleep.add(app_id)
            for spec in desired.values():
                self.log_line(app_id, "heroku", spec.name, "Idling")
            return True
        return False

    def wake(self, app_id: str) -> None:
        """A request came for a sleeping app: run its dynos again (the router waits)."""
        if app_id in self.asleep:
            self.asleep.discard(app_id)
            self.awake_since[app_id] = time.monotonic()
            self.log_line(app_id, "heroku", "web.1", "Unidling")
            self.wakeup.set()

    def _dyno_event(self, app_id: str, action: str, name: str, kind: str, state: str) -> None:
        if self.dyno_events is None:
            return
        try:
            self.dyno_events(app_id, action, {"name": name, "type": kind, "state": state})
        except Exception:  # a webhook must never stop the dynos
            log.exception("dyno event of %s not recorded", name)

    def _check_boot(self, dyno: ObservedDyno, spec: DynoSpec) -> bool:
        state = self.known.get(dyno.container_id)
        if state is None:  # running before this manager started: adopt it, follow its output
            state = self.known[dyno.container_id] = _Dyno(state="up", up_since=0.0)
            self.dynos.follow_output(
                dyno.container_id,
                lambda line: self.log_line(spec.app_id, "app", spec.name, line),
                from_now=True,
            )
        if state.state == "up":
            if state.up_since and time.monotonic() - state.up_since > 30:
                self.backoff.pop((spec.app_id, spec.name), None)  # it stayed up: forgive
            return True
        if spec.process_type != "web" or (dyno.address and port_open(dyno.address)):
            state.state, state.up_since = "up", time.monotonic()
            self.log_line(spec.app_id, "heroku", spec.name, "State changed from starting to up")
            self._dyno_event(spec.app_id, "update", spec.name, spec.process_type, "up")
            return True
        if time.monotonic() - state.started > self.boot_timeout:
            self.log_line(
                spec.app_id,
                "heroku",
                spec.name,
                f"Error R10 (Boot timeout) -> Web process failed to bind to $PORT within "
                f"{self.boot_timeout:.0f} seconds of launch",
            )
            self.log_line(spec.app_id, "heroku", spec.name, "Stopping process with SIGKILL")
            self.dynos.remove(dyno.container_id)
            self._note_crash(spec.app_id, spec.name, spec.release, spec.generation)
            self.log_line(
                spec.app_id, "heroku", spec.name, "State changed from starting to crashed"
            )
            self._dyno_event(spec.app_id, "update", spec.name, spec.process_type, "crashed")
        return False

    def _crashed(self, dyno: ObservedDyno) -> None:
        state = self.known.get(dyno.container_id, _Dyno(state="up"))
        if dyno.oom_killed:  # over its memory: the kernel killed a process of it
            self.log_line(dyno.app_id, "heroku", dyno.name, R15)
            if dyno.exit_code == 137:  # ... its main one (not only a child it outlived)
                self.log_line(dyno.app_id, "heroku", dyno.name, "Stopping process with SIGKILL")
        if dyno.exit_code is not None:  # None: its host was lost, and the process with it
            self.log_line(
                dyno.app_id, "heroku", dyno.name, f"Process exited with status {dyno.exit_code}"
            )
        self.log_line(
            dyno.app_id, "heroku", dyno.name, f"State changed from {state.state} to crashed"
        )
        self._dyno_event(dyno.app_id, "update", dyno.name, dyno.process_type, "crashed")
        self.dynos.remove(dyno.container_id)
        self.known.pop(dyno.container_id, None)
        self._note_crash(dyno.app_id, dyno.name, dyno.release, dyno.generation)

    def _note_crash(self, app_id: str, name: str, release: int, generation: int) -> None:
        # The first crash restarts at once; each further one waits twice as long (max 60 s).
        backoff = self.backoff.get((app_id, name))
        if backoff is None or (backoff.release, backoff.generation) != (release, generation):
            backoff = self.backoff[(app_id, name)] = _Backoff(release, generation)
        delay = 0.0 if backoff.crashes == 0 else min(2.0 ** (backoff.crashes - 1), MAX_BACKOFF)
        backoff.crashes += 1
        backoff.not_before = time.monotonic() + delay

    def _backoff_of(self, spec: DynoSpec) -> _Backoff | None:
        """The crash back-off of this very dyno; an older release's or generation's is over."""
        backoff = self.backoff.get((spec.app_id, spec.name))
        if backoff is None or (backoff.release, backoff.generation) != (
            spec.release,
            spec.generation,
        ):
            return None
        return backoff

    def _start_when_due(self, spec: DynoSpec) -> None:
        backoff = self._backoff_of(spec)
        if backoff and time.monotonic() < backoff.not_before:
            return
        self.log_line(
            spec.app_id, "heroku", spec.name, f"Starting process with command `{spec.command}`"
        )
        try:
            # Each dyno its own HEROKU_DYNO_ID (with runtime-dyno-metadata on).
            container_id = self.dynos.start(replace(spec, env=with_dyno_id(spec.env)))
        except Exception as error:
            log.exception("could not start %s of %s", spec.name, spec.app_name)
            self.log_line(spec.app_id, "heroku", spec.name, f"Failed to start: {error}")
            self._note_crash(spec.app_id, spec.name, spec.release, spec.generation)
            return
        self.known[container_id] = _Dyno(state="starting")
        self._dyno_event(spec.app_id, "create", spec.name, spec.process_type, "starting")
        self.dynos.follow_output(
            container_id, lambda line: self.log_line(spec.app_id, "app", spec.name, line)
        )

    def _stop(
        self, dyno: ObservedDyno, message: str, then: Callable[[], None] | None = None
    ) -> None:
        if dyno.container_id in self.stopping:
            return
        self.stopping.add(dyno.container_id)
        self.log_line(dyno.app_id, "heroku", dyno.name, message)

        def stop() -> None:
            if dyno.running and dyno.process_type == "web":
                time.sleep(DRAIN)
            code = self.dynos.stop(dyno.container_id, timeout=STOP_GRACE)
            if code is not None:
                self.log_line(
                    dyno.app_id, "heroku", dyno.name, f"Process exited with status {code}"
                )
            self.stopping.discard(dyno.container_id)
            self._dyno_event(dyno.app_id, "destroy", dyno.name, dyno.process_type, "down")
            if then is not None:  # e.g. start its replacement now
                then()
                self.wakeup.set()

        threading.Thread(target=stop, name=f"stop-{dyno.name}", daemon=True).start()

    # --- what the API shows -------------------------------------------------------------------

    def dynos_of(self, app_id: str) -> list[dict[str, Any]]:
        with self._lock:
            observed = [d for d in self.observed if d.app_id == app_id]
        shown = []
        for dyno in sorted(observed, key=lambda d: (d.process_type, d.name, d.release)):
            state = self.known.get(dyno.container_id)
            shown.append(
                {
                    "name": dyno.name,
                    "type": dyno.process_type,
                    "command": dyno.command,
                    "release": dyno.release,
                    "size": dyno.size,
                    "created_at": dyno.created_at,
                    "state": "crashed" if not dyno.running else (state.state if state else "up"),
                    "container_id": dyno.container_id,
                    "host": dyno.host,
                    "address": list(dyno.address) if dyno.address else None,
                }
            )
        return shown
