"""The fault-injection suite against the Swarm runtime (WAKA_RUNTIME=swarm): the split roles
(`waka api`, `waka router`, two `waka worker`s on the suite's own PostgreSQL) drive dynos that
are Swarm services on a real multi-node Swarm (tests/swarm_cluster.py).

- kill -9 of each role at a seeded random point of the operations where it does Swarm work: the
  worker holding the leases while it builds a push, turns the slug into an image, pushes it to
  the registry and replaces the dynos (the other worker must take over); a worker and the
  router during a scale (services made and removed); the API during a config change and a
  `heroku run:detached` (its one-off service must end and be gone); the worker holding the
  leases while the app is destroyed (no service of it may be left).
- A Swarm node lost (its container killed) at a random point of a scale and of a push, then
  revived: the dynos equal the formation on the remaining nodes, and again once it is back,
  with no dyno twice (nor any container of a removed service left on the node).
- Add-on creation with a worker killed (Heroku Redis) and with the lease-holder killed and
  left dead (Heroku Postgres); PostgreSQL crashing (`pg_ctl restart -m immediate`) at a random
  point of a push whose dynos are Swarm services: every role carries on.

After each fault the checks of tests/faults/convergence.py, reading the Swarm: the services and
their tasks on the manager (a dyno runs when its service's newest task runs on a Ready node)
and the containers of each node's own engine. The random points come from WAKA_FAULT_SEED.
`waka up` on the Swarm is tests/faults/test_swarm_up.py."""

from __future__ import annotations

import copy
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.swarm_cluster import SwarmCluster

from .convergence import settle
from .operations import (
    SETTLE_TIMEOUT,
    AddonCreate,
    ConfigSet,
    Destroy,
    Fault,
    Operation,
    Push,
    RunDetached,
    Scale,
    Target,
    act_with_fault,
    platform_checks,
    retried,
)
from .postgres_cluster import PostgresCluster
from .roles import waka_has_command
from .swarm_seen import containers_problems, services_seen
from .test_kill_roles import app_answers
from .test_kill_up import Platform, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

# How long after the client connected a node may be lost (by Operation.name): through a push's
# build, its image made and pushed to the registry, and the dynos replaced; through a scale's
# services made and removed. A push's role kills fall in the same window.
NODE_WINDOWS = {"scale": (0.0, 4.0), "push": (0.0, 20.0)}


@pytest.fixture(scope="module")
def platform(
    heroku_cli: Path,
    own_postgres: PostgresCluster,
    swarm_cluster: SwarmCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    if not waka_has_command("worker"):
        pytest.skip("this waka has no separate roles (`waka api`, `waka router`, `waka worker`)")
    tmp = tmp_path_factory.mktemp("faults-swarm")
    # Not deployed yet: the first fault's push is the app's first deploy (a push costs most).
    with running_platform(
        tmp, heroku_cli, own_postgres, split=True, deploy=False, swarm=swarm_cluster
    ) as platform:
        yield platform


def converged(platform: Platform, operation: Operation, before: list, context: str) -> list[str]:
    """Every check of the suite, then the app answering through the router."""
    observer = platform.observer
    waited_for = settle(
        [
            observer.no_event_lost(before),
            *operation.checks(),
            *platform_checks(observer, platform.deployment, platform.cluster.url),
        ],
        timeout=SETTLE_TIMEOUT,
        what=operation.name,
        context=context,
    )
    settle([lambda: app_answers(platform.target)], timeout=60, what=f"the app{context}")
    return waited_for


def lose_a_node(
    platform: Platform, cluster: SwarmCluster, operation: Operation, rng: random.Random
) -> Fault:
    """A worker node's host lost at a random point of the operation: its container killed, no
    goodbye to the Swarm. Converged with it lost (the dynos run on the remaining nodes), then
    it is revived and the platform converges again (nothing twice from the node that was
    away)."""
    delay = rng.uniform(*NODE_WINDOWS[operation.name])
    context = f" (operation {operation.name}, node lost at {delay:.2f} s)"
    before: list = []
    victim = ""

    def lose() -> None:
        nonlocal victim, context
        before.extend(platform.observer.events())
        victim = busiest_worker_node(platform, cluster, rng)
        context += f" ({victim})"
        cluster.kill(victim)

    acknowledged = act_with_fault(operation, platform.deployment, delay, lose)
    attempts = retried(operation, acknowledged)
    returned = time.monotonic()
    waited_for = converged(platform, operation, before, context)
    lost_converged = time.monotonic() - returned
    seen = platform.observer.swarm.services()
    on_victim = [s.labels.get("waka.dyno") for s in seen if s.node == victim]
    assert not on_victim, f"dynos {on_victim} counted as running on the lost node{context}"
    assert cluster.node(victim).state == "down", f"{victim} came back by itself{context}"
    revived = time.monotonic()
    cluster.revive(victim)
    waited_for += converged(platform, operation, before, f"{context}, once revived")
    print(f"node {victim} revived: converged again in {time.monotonic() - revived:.1f} s")
    fault = Fault(
        operation.name,
        f"node {victim}",
        round(delay, 2),
        acknowledged,
        attempts,
        0.0,
        round(lost_converged, 2),  # after the client returned, with the node lost
        waited_for[:4],
    )
    print(f"fault: {fault}")
    return fault


def busiest_worker_node(platform: Platform, cluster: SwarmCluster, rng: random.Random) -> str:
    """The worker node running the most dynos now (a tie drawn from `rng`): losing it loses
    dynos. (The manager is never lost: it holds the Swarm's state alone.)"""
    running = Counter(s.node for s in platform.observer.swarm.services() if s.status == "running")
    workers = sorted(cluster.worker_names, key=lambda n: rng.random())
    return max(workers, key=lambda n: running[n])


def larger_scale(target: Target, rng: random.Random) -> Scale:
    """A scale to dynos on several nodes, so that a lost node holds some of them."""
    current = {f["type"]: f["quantity"] for f in target.get(f"/apps/{target.app}/formation")}
    web = rng.choice([n for n in (2, 3, 4) if n != current.get("web")])
    return Scale(target, rng, quantities={"web": web, "worker": 1})


def crash_postgres(platform: Platform, operation: Operation, rng: random.Random) -> Fault:
    """PostgreSQL crashes (`pg_ctl restart -m immediate`: no checkpoint, recovery from WAL)
    at a random point of the operation; the user retries if their command failed; the platform
    converges with every role still running."""
    delay = rng.uniform(*operation.window)
    context = f" (operation {operation.name}, PostgreSQL crashed at {delay:.2f} s)"
    before: list = []

    def crash() -> None:
        before.extend(platform.observer.events())
        platform.cluster.restart("immediate")

    acknowledged = act_with_fault(operation, platform.deployment, delay, crash)
    attempts = retried(operation, acknowledged)
    began = time.monotonic()
    waited_for = converged(platform, operation, before, context)
    dead = [n for n, r in platform.deployment.roles.items() if r.process.poll() is not None]
    assert not dead, f"roles that died with PostgreSQL: {dead}{context}"
    fault = Fault(
        operation.name,
        "postgres",
        round(delay, 2),
        acknowledged,
        attempts,
        0.0,
        round(time.monotonic() - began, 2),
        waited_for[:4],
    )
    print(f"fault: {fault}")
    return fault


# (role, "node" or "postgres"; operation; whether a killed role comes back at once): see
# test_kill_roles.py
CASES = [
    ("lease-holder", "push", False),
    ("worker", "scale", True),
    ("router", "scale", True),
    ("api", "config", True),
    ("worker", "addon-redis", True),
    ("lease-holder", "addon-postgres", False),
    ("node", "larger-scale", True),
    ("node", "push", True),
    ("postgres", "push", True),
    ("api", "run", True),
]
OPERATIONS = {
    # A kill may fall anywhere from the build to the dynos of the new release (on Swarm the
    # slug is made an image and pushed to the registry in between).
    "push": lambda target, rng: Push(target, window=NODE_WINDOWS["push"]),
    "scale": lambda target, rng: Scale(target, rng),
    "larger-scale": larger_scale,
    "config": lambda target, rng: ConfigSet(target, rng),
    "run": lambda target, rng: RunDetached(target),
    "addon-redis": lambda target, rng: AddonCreate(target, "heroku-redis"),
    "addon-postgres": lambda target, rng: AddonCreate(target, "heroku-postgresql"),
}


def test_faults_of_roles_and_nodes_on_a_swarm(
    platform: Platform, swarm_cluster: SwarmCluster, schedule: random.Random
) -> None:
    # One test for the whole sequence (see test_kill_up.py).
    began = time.monotonic()
    for role, name, restart in CASES:
        operation = OPERATIONS[name](platform.target, schedule)
        if role == "node":
            lose_a_node(platform, swarm_cluster, operation, schedule)
        elif role == "postgres":
            crash_postgres(platform, operation, schedule)
        else:
            platform.fault(operation, role, schedule, restart)
            settle([lambda: app_answers(platform.target)], timeout=60, what=f"{role}: the app")
    swarm_checks_see_what_they_look_for(platform)
    # Last, the app destroyed while the worker leading the dyno manager is lost: no service of
    # it may be left.
    platform.fault(Destroy(platform.target), "lease-holder", schedule, restart=False)
    assert platform.observer.swarm.services() == []
    codes = platform.deployment.stop()
    assert set(codes.values()) == {0}, f"{codes}\n{platform.deployment.log()[-4000:]}"
    print(f"swarm faults: {len(CASES) + 1} in {time.monotonic() - began:.0f} s")
    print("ended containers Docker left (moby/swarmkit#2273):", platform.observer.swarm.leftovers())


def swarm_checks_see_what_they_look_for(platform: Platform) -> None:
    """The checks fail on made-up broken Swarm state (a running waka would repair a real one
    before the check could see it): each variation of the real, converged state below."""
    observer, seen = platform.observer, platform.observer.swarm
    api = seen.cluster.manager().api
    services = api.services(filters=seen._mine())
    ids = {s["ID"] for s in services}
    tasks = [t for t in api.tasks() if t.get("ServiceID") in ids]
    nodes = api.nodes()
    assert observer.dyno_problems(services_seen(services, tasks, nodes)) == []
    assert containers_problems(services_seen(services, tasks, nodes), seen.node_containers()) == []
    web = next(s for s in services if s["Spec"]["Labels"]["waka.type"] == "web")
    newest = max((t for t in tasks if t["ServiceID"] == web["ID"]), key=lambda t: t["CreatedAt"])

    def problems(
        services: list[dict[str, Any]] = services,
        tasks: list[dict[str, Any]] = tasks,
        nodes: list[dict[str, Any]] = nodes,
    ) -> list[str]:
        return observer.dyno_problems(services_seen(services, tasks, nodes))

    # Its node lost: the dyno is not running, though its task still says so.
    down = copy.deepcopy(nodes)
    for node in down:
        if node["ID"] == newest["NodeID"]:
            node["Status"]["State"] = "down"
    found = problems(nodes=down)
    assert any("(down)" in p for p in found) and any("!=" in p for p in found), found
    # Its newest task ended (an older one's "running" is history).
    ended = {**copy.deepcopy(newest), "ID": "t-new", "CreatedAt": newest["CreatedAt"] + "9"}
    ended["Status"]["State"] = "failed"
    assert any("failed" in p for p in problems(tasks=[*tasks, ended])), "an ended task"

    # A service of a scaled-down dyno, of a destroyed app, the dyno twice, a one-off left over.
    def another(**labels: str) -> list[dict[str, Any]]:
        service = copy.deepcopy(web)
        service["ID"] = f"s-{uuid.uuid4().hex[:8]}"
        service["Spec"]["Labels"].update(labels)
        task = {**copy.deepcopy(newest), "ID": f"t-{service['ID']}", "ServiceID": service["ID"]}
        tasks.append(task)
        return [*services, service]

    tasks = list(tasks)
    assert any("!=" in p for p in problems(another(**{"waka.dyno": "web.9"}), tasks))
    assert any("!=" in p for p in problems(another(**{"waka.app": str(uuid.uuid4())}), tasks))
    assert any("runs 2 times" in p for p in problems(another(), tasks))
    one_off = another(**{"waka.run": "run.1234"})
    del one_off[-1]["Spec"]["Labels"]["waka.dyno"]
    assert any("one-off" in p for p in problems(one_off, tasks))
    # On a node's engine: a container of a service that is gone, a dyno in two containers.
    listed = seen.node_containers()
    node, running = next((n, c) for n, cs in listed.items() for c in cs if c["State"] == "running")
    gone = copy.deepcopy(running)
    gone["Labels"]["com.docker.swarm.service.id"] = "gone"
    live = services_seen(services, tasks, nodes)
    assert any("gone" in p for p in containers_problems(live, {**listed, node: [gone]}))
    twice = {**listed, f"{node}-again": [running]}
    assert any("containers" in p for p in containers_problems(live, twice))
