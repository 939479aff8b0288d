"""The Swarm test cluster (tests/swarm_cluster.py) is a real multi-node Swarm.

One test for the whole sequence: under pytest-xdist the tests of a module may run in several
processes, and each would make a cluster of its own (~1.5 min of start-up each). It shows, on a
manager and two workers: every node Ready; replicas spread over the nodes from the registry's
stack image, on an overlay network in dnsrr mode, reaching each other across nodes; a port
published in host mode answering HTTP from the host at each node's address; a killed worker's
tasks started on the others; the worker back, Ready, and given tasks again. The times it
measures are printed (pytest -s) and in the failure messages. A second test shows `heal`, run
before every test on the Swarm, starting again a node whose engine died of itself.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator

import docker
import pytest
from docker.types import EndpointSpec, RestartPolicy, ServiceMode

from tests.swarm_cluster import (
    LABEL,
    OWNER_LABEL,
    SwarmCluster,
    SwarmClusterError,
    remove_cluster,
    scale_service,
    sweep_abandoned,
    wait_until,
)

PORT = 8000  # python3 -m http.server's, in every task
PUBLISHED = 18080  # on each node, in host mode


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except OSError:
        return 0


def running_tasks(service: docker.models.services.Service) -> list[dict]:
    return [
        task
        for task in service.tasks(filters={"desired-state": "running"})
        if task["Status"]["State"] == "running"
    ]


def describe(service: docker.models.services.Service, names: dict[str, str]) -> str:
    """The service's tasks, one a line: node, desired state, state, error."""
    return "\n".join(
        f"  {names.get(task.get('NodeID', ''), '-')}: {task['DesiredState']} "
        f"{task['Status']['State']} {task['Status'].get('Err', '')}"
        for task in service.tasks()
    )


def wait_for_tasks(
    what: str,
    service: docker.models.services.Service,
    names: dict[str, str],
    check: Callable[[list[dict]], bool],
    timeout: float,
) -> list[dict]:
    """running_tasks(service) once check(them) holds; on a timeout, fails listing every task."""
    try:
        return wait_until(what, lambda: check(t := running_tasks(service)) and t, timeout)
    except SwarmClusterError as exc:
        raise AssertionError(
            f"{exc}; tasks of {service.name}:\n{describe(service, names)}"
        ) from None


def overlay_address(task: dict, network_id: str) -> str:
    for attachment in task.get("NetworksAttachments", []):
        if attachment["Network"]["ID"] == network_id:
            return attachment["Addresses"][0].split("/")[0]
    raise AssertionError(f"task {task['ID']} has no address on network {network_id}")


@pytest.fixture
def manager(swarm_cluster: SwarmCluster) -> Iterator[docker.DockerClient]:
    """The manager's engine; the services and networks a test makes there are removed after."""
    client = swarm_cluster.manager()
    before_services = {service.id for service in client.services.list()}
    before_networks = {network.id for network in client.networks.list()}
    yield client
    for service in client.services.list():
        if service.id not in before_services:
            service.remove()
    for network in client.networks.list():
        if network.id not in before_networks:
            wait_until(f"removal of {network.name}", lambda n=network: _removed(n), timeout=30)


def _removed(network: docker.models.networks.Network) -> bool:
    try:
        network.remove()
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False  # tasks still attached: tried again
    return True


def test_a_real_swarm_spreads_moves_and_reuses_tasks(
    swarm_cluster: SwarmCluster, manager: docker.DockerClient
) -> None:
    cluster = swarm_cluster
    timings: dict[str, float] = dict(getattr(cluster, "timings", {}))
    suffix = os.urandom(3).hex()

    # Every node Ready and active, each with its own engine in the Swarm.
    nodes = cluster.nodes()
    assert [node.role for node in nodes] == ["manager", "worker", "worker"], nodes
    assert all(node.state == "ready" and node.availability == "active" for node in nodes), nodes
    for node in nodes:
        info = cluster.node_client(node.name).info()
        assert info["Swarm"]["NodeID"] == node.node_id, (node, info["Swarm"])
        assert info["Swarm"]["LocalNodeState"] == "active", (node, info["Swarm"])
    node_names = {node.node_id: node.name for node in nodes}

    # Replicas from the registry's stack spread over the nodes, on an overlay, in dnsrr mode.
    network = manager.networks.create(f"t-{suffix}", driver="overlay", attachable=True)
    began = time.monotonic()
    spread = manager.services.create(
        cluster.stack_image,
        ["python3", "-m", "http.server", str(PORT)],
        name=f"spread-{suffix}",
        mode=ServiceMode("replicated", replicas=4),
        endpoint_spec=EndpointSpec(mode="dnsrr"),
        networks=[network.id],
        restart_policy=RestartPolicy(condition="any", delay=0),
        init=True,  # python as PID 1 would ignore SIGTERM: each stop would wait 10 s
    )
    tasks = wait_for_tasks("4 running replicas", spread, node_names, lambda t: len(t) == 4, 90)
    timings["4 replicas running"] = time.monotonic() - began
    hosts = {node_names[task["NodeID"]] for task in tasks}
    assert len(hosts) >= 2, f"the replicas all ran on {hosts}"

    # Tasks on two nodes reach each other over the overlay (VXLAN), by address and by name.
    first = tasks[0]
    other = next(task for task in tasks if task["NodeID"] != first["NodeID"])
    container = cluster.node_client(node_names[first["NodeID"]]).containers.get(
        first["Status"]["ContainerStatus"]["ContainerID"]
    )
    target = overlay_address(other, network.id)
    code, output = container.exec_run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{target}:{PORT}/"]
    )
    assert (code, output.decode()) == (0, "200"), (
        f"{node_names[first['NodeID']]} -> {target} on {node_names[other['NodeID']]}: {output!r}"
    )
    code, output = container.exec_run(["getent", "ahostsv4", spread.name])
    resolved = {line.split()[0] for line in output.decode().splitlines()}
    assert resolved == {overlay_address(task, network.id) for task in tasks}, output

    # A port published in host mode answers HTTP from the host at every node's address.
    web = manager.services.create(
        cluster.stack_image,
        ["python3", "-m", "http.server", str(PORT)],
        name=f"web-{suffix}",
        mode=ServiceMode("global"),
        endpoint_spec=EndpointSpec(mode="dnsrr", ports={PUBLISHED: (PORT, "tcp", "host")}),
        restart_policy=RestartPolicy(condition="any", delay=0),
        init=True,  # python as PID 1 would ignore SIGTERM: each stop would wait 10 s
    )
    for node in nodes:
        wait_until(
            f"HTTP at {node.ip}:{PUBLISHED}",
            lambda ip=node.ip: http_status(f"http://{ip}:{PUBLISHED}/") == 200,
            timeout=60,
        )

    # A worker is lost: its replicas start on the other nodes.
    per_node: dict[str, int] = {}
    for task in tasks:
        per_node[node_names[task["NodeID"]]] = per_node.get(node_names[task["NodeID"]], 0) + 1
    lost = max(cluster.worker_names, key=lambda name: per_node.get(name, 0))
    assert per_node.get(lost), f"no replica on a worker: {per_node}"
    lost_id = cluster.node(lost).node_id
    began = time.monotonic()
    cluster.kill(lost)
    cluster.wait_for_node(lost, "down", timeout=30)
    timings["lost node marked down"] = time.monotonic() - began
    wait_for_tasks(
        f"the replicas of {lost} running elsewhere",
        spread,
        node_names,
        lambda t: len(t) == 4 and all(x["NodeID"] != lost_id for x in t),
        60,
    )
    timings["its replicas running elsewhere"] = time.monotonic() - began
    assert timings["its replicas running elsewhere"] < 30, timings

    # The worker comes back: Ready, and it gets replicas again (the global service's at once,
    # the replicated one's when it is scaled up).
    began = time.monotonic()
    revived = cluster.revive(lost)
    timings["revived node ready"] = time.monotonic() - began
    assert (revived.node_id, revived.availability) == (lost_id, "active"), revived
    wait_until(
        f"HTTP at {revived.ip}:{PUBLISHED} again",
        lambda: http_status(f"http://{revived.ip}:{PUBLISHED}/") == 200,
        timeout=60,
    )
    timings["revived node serving"] = time.monotonic() - began
    scale_service(spread, 6)
    wait_for_tasks(
        f"a new replica on {lost}",
        spread,
        node_names,
        lambda t: len(t) == 6 and any(x["NodeID"] == lost_id for x in t),
        60,
    )
    assert len(running_tasks(web)) == 3

    print("swarm cluster timings (s):", {key: round(value, 1) for key, value in timings.items()})


def test_a_cluster_whose_process_is_gone_is_swept() -> None:
    """What a killed test process left (its network names it) goes; a live one's stays."""
    try:
        host = docker.from_env()
        host.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"Docker is not available ({exc})")
    gone = subprocess.Popen(["true"])
    gone.wait()
    names = {f"waka-swarm-t{os.urandom(3).hex()}": str(pid) for pid in (gone.pid, os.getpid())}
    for name, pid in names.items():
        host.networks.create(f"{name}-net", labels={LABEL: name, OWNER_LABEL: pid})
        host.volumes.create(f"{name}-manager-docker", labels={LABEL: name})
    try:
        sweep_abandoned(host)
        left = {n.attrs["Labels"][LABEL] for n in host.networks.list(filters={"label": LABEL})}
        volumes = {v.name for v in host.volumes.list(filters={"label": LABEL})}
        dead, alive = names
        assert dead not in left and f"{dead}-manager-docker" not in volumes
        assert alive in left and f"{alive}-manager-docker" in volumes
    finally:
        for name in names:
            remove_cluster(host, name)


def test_a_node_whose_engine_died_is_started_again_before_the_next_test(
    swarm_cluster: SwarmCluster,
) -> None:
    """`heal` (what runs before every test on the Swarm): a node container that stopped of
    itself, as when its dockerd panics, runs again, Ready, with its firewall rules back."""
    cluster = swarm_cluster
    assert cluster.heal() == []  # nothing down: nothing revived
    crashed = cluster.worker_names[-1]
    cluster.host.containers.get(crashed).kill()  # not `cluster.kill`: nobody meant it
    cluster.wait_for_node(crashed, "down", timeout=30)
    assert cluster.heal() == [crashed]
    assert all(node.state == "ready" for node in cluster.nodes()), cluster.nodes()
    rules = cluster.host.containers.get(crashed).exec_run(["iptables", "-S", "DOCKER-USER"])
    assert rules.exit_code == 0 and b"-j DROP" in rules.output, rules.output
    assert f"-s {cluster.gateway}/32".encode() in rules.output, rules.output
