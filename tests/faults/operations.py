"""The operations a fault lands in, done as a user does them (the real Heroku CLI, real git),
and the fault itself: kill -9 of a role at a random point of the operation, the role started
again at once on the same ports, and the user trying again if their command failed.

An operation knows how to act once, whether its effect is there (a careful user looks before
running a command again: `heroku config:get`, `heroku addons`, `git ls-remote`), and what must
hold once the platform converged (every acknowledged write in place, nothing twice)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.e2e.conftest import Api, GitRepo, WakaServer, git_url
from tests.e2e.test_git_push import remote_head

from .convergence import Check, EventKey, Observer, settle
from .roles import Deployment

SETTLE_TIMEOUT = 90.0
RESTART_BOUND = 15.0  # "restarts at once": ready again within this many seconds
RETRIES = 3


class Operation(Protocol):
    name: str
    # The kill falls this many seconds after the client first connected to the API (the CLI
    # spends its first second starting Node.js: a kill then would miss the operation).
    window: tuple[float, float]

    def act(self) -> bool:
        """Run the client once; whether it reported success (the write was acknowledged)."""

    def done(self) -> bool:
        """Whether the effect is visible, as the user would look before trying again."""

    def checks(self) -> list[Check]:
        """What must hold once converged."""


@dataclass
class Target:
    """The app the operations act on, and how to reach it."""

    deployment: Deployment
    app: str
    repo: GitRepo
    counter: int = 0

    @property
    def server(self) -> WakaServer:
        return self.deployment.server

    def api(self) -> Api:
        return Api(self.server)

    def get(self, path: str) -> Any:
        api = self.api()
        try:
            return api.get(path)
        finally:
            api.close()

    def releases(self) -> list[dict[str, Any]]:
        """Every release, page by page as Heroku's clients do (a load test makes thousands)."""
        api = self.api()
        found: list[dict[str, Any]] = []
        headers = {"Range": "version ..; max=1000"}
        try:
            while True:
                response = api.client.get(f"/apps/{self.app}/releases", headers=headers)
                assert response.status_code in (200, 206), (
                    f"{response.status_code}: {response.text[:500]}"
                )
                found += response.json()
                if response.status_code == 200:
                    return found
                headers = {"Range": response.headers["Next-Range"]}
        finally:
            api.close()

    def next(self) -> int:
        self.counter += 1
        return self.counter


@dataclass
class Push:
    """git push of a new commit: receive, hook, build, release, new dynos."""

    target: Target
    name: str = "push"
    window: tuple[float, float] = (0.0, 2.5)
    sha: str = ""

    def __post_init__(self) -> None:
        n = self.target.next()
        (self.target.repo.path / "fault.txt").write_text(f"push {n}\n")
        self.sha = self.target.repo.commit_all(f"fault push {n}")

    def act(self) -> bool:
        result = self.target.repo.push(git_url(self.target.server, self.target.app))
        return result.returncode == 0

    def done(self) -> bool:
        return remote_head(self.target.repo, git_url(self.target.server, self.target.app)) == (
            self.sha
        )

    def checks(self) -> list[Check]:
        target, sha = self.target, self.sha

        def pushed() -> list[str]:
            problems = [] if self.done() else [f"the branch is not at the pushed {sha[:8]}"]
            builds = [
                b
                for b in target.get(f"/apps/{target.app}/builds")
                if b["source_blob"]["version"] == sha
            ]
            if [b["status"] for b in builds] != ["succeeded"]:
                problems.append(f"builds of {sha[:8]}: {[b['status'] for b in builds]}")
            releases = [r for r in target.releases() if r["description"] == f"Deploy {sha[:8]}"]
            if [r["status"] for r in releases] != ["succeeded"]:
                problems.append(f"releases of {sha[:8]}: {[r['status'] for r in releases]}")
            return problems

        return [pushed]


@dataclass
class Scale:
    """heroku ps:scale web=W worker=K."""

    target: Target
    rng: random.Random
    name: str = "scale"
    window: tuple[float, float] = (0.0, 0.8)
    quantities: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        current = {
            f["type"]: f["quantity"] for f in self.target.get(f"/apps/{self.target.app}/formation")
        }
        while not self.quantities or self.quantities == current:  # always a change
            self.quantities = {"web": self.rng.randint(0, 2), "worker": self.rng.randint(0, 1)}

    def act(self) -> bool:
        args = [f"{t}={q}" for t, q in self.quantities.items()]
        done = self.target.server.heroku("ps:scale", *args, "-a", self.target.app, check=False)
        return done.returncode == 0

    def done(self) -> bool:
        formation = self.target.get(f"/apps/{self.target.app}/formation")
        return {f["type"]: f["quantity"] for f in formation} == self.quantities

    def checks(self) -> list[Check]:
        return [lambda: [] if self.done() else [f"formation is not {self.quantities}"]]


@dataclass
class ConfigSet:
    """heroku config:set FAULT_<n>=<random>: one release."""

    target: Target
    rng: random.Random
    name: str = "config"
    window: tuple[float, float] = (0.0, 0.8)
    key: str = ""
    value: str = ""

    def __post_init__(self) -> None:
        self.key = f"FAULT_{self.target.next()}"
        self.value = f"{self.rng.getrandbits(64):016x}"

    def act(self) -> bool:
        done = self.target.server.heroku(
            "config:set", f"{self.key}={self.value}", "-a", self.target.app, check=False
        )
        return done.returncode == 0

    def done(self) -> bool:
        return self.target.get(f"/apps/{self.target.app}/config-vars").get(self.key) == self.value

    def checks(self) -> list[Check]:
        def one_release() -> list[str]:
            problems = [] if self.done() else [f"{self.key} is not set"]
            described = f"Set {self.key} config vars"
            releases = [r for r in self.target.releases() if r["description"] == described]
            if len(releases) != 1:
                problems.append(f"{len(releases)} releases '{described}'")
            return problems

        return [one_release]


@dataclass
class AddonCreate:
    """heroku addons:create SERVICE --name <app>-<n>: one add-on, provisioned once."""

    target: Target
    service: str
    name: str = "addon"
    window: tuple[float, float] = (0.0, 1.5)
    addon: str = ""

    def __post_init__(self) -> None:
        self.name = f"addon-{self.service}"
        self.addon = f"{self.target.app}-a{self.target.next()}"

    def act(self) -> bool:
        done = self.target.server.heroku(
            "addons:create",
            self.service,
            "-a",
            self.target.app,
            "--name",
            self.addon,
            check=False,
        )
        return done.returncode == 0

    def _mine(self) -> list[dict[str, Any]]:
        addons = self.target.get(f"/apps/{self.target.app}/addons")
        return [a for a in addons if a["name"] == self.addon]

    def done(self) -> bool:
        return bool(self._mine())

    def checks(self) -> list[Check]:
        def provisioned() -> list[str]:
            states = [a["state"] for a in self._mine()]
            return [] if states == ["provisioned"] else [f"add-on {self.addon}: {states}"]

        return [provisioned]


@dataclass
class RunDetached:
    """heroku run:detached: a one-off dyno that ends by itself and leaves nothing behind."""

    target: Target
    name: str = "run"
    window: tuple[float, float] = (0.0, 3.0)

    def act(self) -> bool:
        app = self.target.app
        done = self.target.server.heroku("run:detached", "-a", app, "sleep 1", check=False)
        return done.returncode == 0

    def done(self) -> bool:
        return False  # a one-off more is no harm: the user just runs it again

    def checks(self) -> list[Check]:
        return []  # `dynos_match_formation`: no one-off left once it ended


@dataclass
class Destroy:
    """heroku apps:destroy: the app gone, and every dyno it ran."""

    target: Target
    name: str = "destroy"
    window: tuple[float, float] = (0.0, 2.0)

    def act(self) -> bool:
        app = self.target.app
        done = self.target.server.heroku("apps:destroy", "-a", app, "--confirm", app, check=False)
        return done.returncode == 0

    def done(self) -> bool:
        api = self.target.api()
        try:
            return api.client.get(f"/apps/{self.target.app}").status_code == 404
        finally:
            api.close()

    def checks(self) -> list[Check]:
        # Its dynos: `dynos_match_formation` wants none of an app that is gone.
        return [lambda: [] if self.done() else [f"app {self.target.app} is still there"]]


@dataclass
class Fault:
    """What happened to one operation: when the kill fell, how it went."""

    operation: str
    role: str
    delay: float
    acknowledged_first: bool
    attempts: int
    restart_seconds: float
    converged_seconds: float = 0.0
    waited_for: list[str] = field(default_factory=list)  # what was not yet so, on the way


def connections_to(port: int) -> set[str]:
    """The established TCP connections to a local port (their socket inodes), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def platform_checks(
    observer: Observer, deployment: Deployment, addons_admin_url: str
) -> list[Check]:
    """What must hold after any fault, whatever the operation."""
    return [
        observer.no_duplicate_builds_or_releases,
        observer.addons_settled,
        lambda: observer.postgres_addon_resources(addons_admin_url),
        observer.redis_addon_servers,
        observer.dynos_match_formation,
        lambda: observer.no_orphan_processes(deployment.pids()),
        observer.replay_equals_live,
    ]


def act_with_fault(
    operation: Operation, deployment: Deployment, delay: float, fault: Callable[[], None]
) -> bool:
    """Run the operation once, with `fault()` falling `delay` seconds after its client first
    connected to the API; whether the client reported success."""
    port = deployment.server.port
    already = connections_to(port)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(operation.act)
        connected = time.monotonic()
        while not connections_to(port) - already and not first.done():
            if time.monotonic() - connected > 30:
                raise AssertionError(f"the client of {operation.name} never connected")
            time.sleep(0.01)
        time.sleep(delay)
        fault()
        return first.result(timeout=120)


def retried(operation: Operation, acknowledged: bool) -> int:
    """How many times the user ran the command: their command failed, they look (`heroku
    config:get`, `heroku addons`, `git ls-remote`) and, not finding its effect, run it again.
    An acknowledged write is never retried: it must be there."""
    attempts = 1
    while not acknowledged and not operation.done() and attempts <= RETRIES:
        attempts += 1
        if operation.act():
            break
    return attempts


def run_with_fault(
    operation: Operation,
    role: str,
    deployment: Deployment,
    observer: Observer,
    rng: random.Random,
    addons_admin_url: str,
    restart: bool = True,
) -> Fault:
    """Start the operation, kill -9 `role` at a random point of its window, start the role
    again at once, let the user retry, and wait for the platform to converge.

    `role` "lease-holder": the worker holding the most leases at that moment. `restart=False`:
    the killed role stays dead until the platform converged (another copy must cover it)."""
    # Half the kills fall inside the write's own request (its first tenths of a second), half
    # anywhere in the work that follows it (a build, new dynos, provisioning).
    delay = rng.uniform(0.0, 0.15) if rng.random() < 0.5 else rng.uniform(*operation.window)
    context = f" (operation {operation.name}, kill -9 of {role} at {delay:.2f} s)"
    before: list[EventKey] = []
    took = 0.0

    def kill() -> None:
        nonlocal role, context, before, took
        before = observer.events()  # every event stored before the kill must survive it
        if role == "lease-holder":
            role = deployment.lease_holder()
            context += f" ({role})"
        deployment.kill(role)
        took = deployment.restart(role) if restart else 0.0

    acknowledged = act_with_fault(operation, deployment, delay, kill)
    assert took < RESTART_BOUND, f"{role} took {took:.1f} s to restart{context}"
    attempts = retried(operation, acknowledged)
    began = time.monotonic()
    waited_for = settle(
        [
            observer.no_event_lost(before),
            *operation.checks(),
            *platform_checks(observer, deployment, addons_admin_url),
        ],
        timeout=SETTLE_TIMEOUT,
        what=operation.name,
        context=context,
    )
    if not restart:
        deployment.restart(role)  # covered: back for the next fault
    fault = Fault(
        operation.name,
        role,
        round(delay, 2),
        acknowledged,
        attempts,
        round(took, 2),
        round(time.monotonic() - began, 2),
        waited_for[:4],
    )
    print(f"fault: {fault}")
    return fault
