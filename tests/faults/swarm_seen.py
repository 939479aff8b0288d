"""The platform's dynos as a Docker Swarm has them (WAKA_RUNTIME=swarm), for the convergence
checks: the services and their tasks on the manager, and the containers each node's own engine
really runs. Read from outside waka, as an operator would with `docker service ps`.

A service is a running dyno when its newest task is running on a Ready node; anything else
(a task on a lost node, a task that ended, no task yet) is a dyno that is not running. The
services become the same observed dynos (labels, status) as local containers, so one check,
`Observer.dyno_problems`, judges both runtimes."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

NODE_TIMEOUT = 5  # seconds: a node just lost answers nothing


def services_seen(
    services: list[dict[str, Any]], tasks: list[dict[str, Any]], nodes: list[dict[str, Any]]
) -> list[SimpleNamespace]:
    """Each service (as the Docker API lists it) as an observed dyno: its labels, and its
    status: "running", else what its newest task is and where."""
    by_id = {n["ID"]: n for n in nodes}
    newest: dict[str, dict[str, Any]] = {}
    for task in tasks:
        service = task.get("ServiceID", "")
        if service not in newest or _version(task) > _version(newest[service]):
            newest[service] = task
    seen = []
    for service in services:
        task = newest.get(service["ID"])
        node = by_id.get((task or {}).get("NodeID", ""), {})
        hostname = (node.get("Description") or {}).get("Hostname", "?")
        if task is None:
            status = "a service with no task"
        else:
            state = (task.get("Status") or {}).get("State", "?")
            node_state = (node.get("Status") or {}).get("State", "unknown")
            if state == "running" and node_state == "ready":
                status = "running"
            else:
                status = f"{state} on node {hostname} ({node_state})"
        seen.append(
            SimpleNamespace(
                id=service["ID"],
                labels=(service.get("Spec") or {}).get("Labels") or {},
                status=status,
                node=hostname,
            )
        )
    return seen


def _version(task: dict[str, Any]) -> tuple[str, int]:
    return (task.get("CreatedAt", ""), int((task.get("Version") or {}).get("Index", 0)))


# States of a container that holds nothing but its files (no process, no port).
ENDED = ("created", "exited", "dead")


def containers_problems(
    services: list[SimpleNamespace], containers: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """What the nodes' engines hold (`containers`: node name → its containers of the platform,
    as the Docker API lists them, stopped ones too) against the services: no container of a
    service that is gone still running (a removed dyno on a node that was away), no dyno
    running twice. An ended container of a gone service is Docker's leftover, not a dyno (see
    `leftovers`)."""
    live = {s.id for s in services}
    problems = []
    running: Counter[tuple[str, str]] = Counter()
    for node, container, labels, name, service in _platform_containers(containers):
        state = container.get("State", "running")
        if service not in live and state not in ENDED:
            problems.append(
                f"node {node} has {name} of app {labels.get('waka.app', '')[:8]} ({state}) "
                f"for service {service[:12] or '(none)'}, which is gone"
            )
        elif service in live and "waka.dyno" in labels and state == "running":
            running[(labels.get("waka.app", ""), name)] += 1
    problems += [f"dyno {key} runs in {n} containers" for key, n in running.items() if n > 1]
    return problems


def leftovers(
    services: list[SimpleNamespace], containers: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Ended containers of gone services. Docker's Swarm agent removes a task's networks
    before its container, and when two tasks on one network are removed at once on a node
    (as after a node comes back), one removal fails with "unknown network" and leaves its
    container (moby/swarmkit#2273, open). They run nothing; README says how to prune them."""
    live = {s.id for s in services}
    return [
        f"{node}: {name} ({container.get('State')}) of service {service[:12]}"
        for node, container, _, name, service in _platform_containers(containers)
        if service not in live and container.get("State", "running") in ENDED
    ]


def _platform_containers(
    containers: dict[str, list[dict[str, Any]]],
) -> Iterator[tuple[str, dict[str, Any], dict[str, str], str, str]]:
    """(node, container, labels, dyno name, service id) of each dyno or one-off container."""
    for node, listed in sorted(containers.items()):
        for container in listed:
            labels = container.get("Labels") or {}
            if "waka.dyno" not in labels and "waka.run" not in labels:
                continue
            name = labels.get("waka.dyno") or labels.get("waka.run", "")
            yield node, container, labels, name, labels.get("com.docker.swarm.service.id", "")


class SwarmDynosSeen:
    """The dynos of one platform on one Swarm (a tests/swarm_cluster.py SwarmCluster)."""

    def __init__(self, cluster: Any, platform_id: str) -> None:
        self.cluster = cluster
        self.platform_id = platform_id
        self._clients: dict[str, Any] = {}

    def _mine(self) -> dict[str, list[str]]:
        return {"label": [f"waka.platform={self.platform_id}"]}

    def services(self) -> list[SimpleNamespace]:
        api = self.cluster.manager().api
        services = api.services(filters=self._mine())
        ids = {s["ID"] for s in services}
        tasks = [t for t in api.tasks() if t.get("ServiceID") in ids]
        return services_seen(services, tasks, api.nodes())

    def node_containers(self) -> dict[str, list[dict[str, Any]]]:
        """node name → the platform's containers on that node's engine (stopped ones too), for
        every node Swarm marks Ready (a lost one cannot be asked)."""
        import docker

        found = {}
        for node in self.cluster.nodes():
            if node.state != "ready":
                continue
            if node.name not in self._clients:
                self._clients[node.name] = docker.DockerClient(
                    base_url=node.docker_url, version="1.41", timeout=NODE_TIMEOUT
                )
            client = self._clients[node.name]
            found[node.name] = client.api.containers(all=True, filters=self._mine())
        return found

    def container_problems(self) -> list[str]:
        return containers_problems(self.services(), self.node_containers())

    def leftovers(self) -> list[str]:
        return leftovers(self.services(), self.node_containers())

    def remove_all(self) -> None:
        """Every service and network of the platform (a test's dynos, when it is done)."""
        api = self.cluster.manager().api
        for service in api.services(filters=self._mine()):
            with contextlib.suppress(Exception):  # already gone
                api.remove_service(service["ID"])
        for network in api.networks(filters=self._mine()):
            with contextlib.suppress(Exception):  # a task still shutting down: the Swarm's
                api.remove_network(network["Id"])
