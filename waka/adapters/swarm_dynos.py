"""Long-running dynos as Docker Swarm services, spread over the Swarm's nodes (WAKA_RUNTIME=swarm).

The same interface as DockerDynos, so the dyno manager reconciles the same way (formation,
releases, preboot, restarts, crash back-off, sleeping apps) and only placement changes: each
dyno is a service of one replica, labelled like a local dyno container, which Swarm schedules
on a node of its choosing (spread: the node running fewest tasks). The dyno manager, not Swarm,
decides restarts (restart condition `none`), so a crash shows in the app's log and backs off as
with local dynos; a dyno whose node is lost is seen as crashed and started again, on a node
that is up.

- Image: the stack with the slug installed, from the registry every node pulls from
  (waka/adapters/release_images.py): nodes need no disk shared with waka.
- Network: an overlay network per app (`waka-app-<platform>-<app>`): an app's dynos share one,
  and no app's dyno is on another app's. Endpoint mode `dnsrr`: no virtual IP, for which Swarm
  needs the kernel's IPVS (absent on some hosts).
- Reaching a dyno: its port 5000 is published in `host` mode, on a port of PUBLISHED_PORTS
  that waka picks (free among this platform's services; Swarm's scheduler puts no two tasks
  publishing one port on a node); the router and the dyno manager reach it at the node's
  address and that port, read from the service's spec. Not from the task's status: a manager
  that restarted reports the tasks that ran on meanwhile without their ports. (Swarm's ingress
  routing mesh would hide which dyno answers, and needs IPVS too.)
- Limits of the size: memory and processes, as for local dynos; user 1000 with no
  capabilities. Not available to Swarm services through the Docker API used here: CPU shares
  (Swarm has only hard CPU limits) and `no-new-privileges`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from waka.adapters.dyno_containers import GID, UID
from waka.adapters.dynos import (
    LABEL,
    PORT,
    DynoSpec,
    ObservedDyno,
    dyno_command,
    dyno_env,
    dyno_labels,
    follow_lines,
    observed_from_labels,
)
from waka.adapters.release_images import ReleaseImages
from waka.domain import rules

log = logging.getLogger("waka.dynos")

STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL, as on Heroku
# Where dynos publish their port on their node: below Linux's ephemeral ports (32768-60999),
# so no outgoing connection of the node holds one.
PUBLISHED_PORTS = range(20000, 30000)
NETWORK_ROLE = "app-network"
# Task states in which a dyno is on its way up or up; any other is an end (exited, failed,
# rejected by the node, shut down, orphaned with its node).
ALIVE = {
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
}


class SwarmUnavailable(RuntimeError):
    """The engine waka was pointed at is not a Swarm manager."""


class SwarmDynos:
    kind = "Docker Swarm services"

    def __init__(self, client: Any, images: ReleaseImages, platform_id: str) -> None:
        self.client = client  # a Swarm manager's engine
        self.images = images
        self.platform_id = platform_id
        self._networks: dict[str, str] = {}  # app id -> overlay network id
        self._pruned = 0.0
        try:
            swarm = client.info().get("Swarm") or {}
        except Exception as error:  # no engine there, refused, or not Docker
            raise SwarmUnavailable(
                f"WAKA_RUNTIME=swarm, but the Docker engine at WAKA_SWARM_MANAGER does not "
                f"answer: {error}"
            ) from error
        self.advertised = str(swarm.get("NodeAddr") or "127.0.0.1")  # the manager's, to nodes
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise SwarmUnavailable(
                "WAKA_RUNTIME=swarm, but the Docker engine at WAKA_SWARM_MANAGER is not a Swarm "
                "manager (run `docker swarm init` there, or point WAKA_SWARM_MANAGER at one)"
            )

    # --- starting -----------------------------------------------------------------------------

    def start(self, spec: DynoSpec) -> str:
        return self.create_service(
            spec.app_id,
            spec.name,
            self.images.of(spec.slug_path),
            dyno_command(spec),
            dyno_env(spec),
            dyno_labels(spec, self.platform_id),
            spec.size,
            spec.memory_mb,
        )

    def create_service(
        self,
        app_id: str,
        dyno: str,
        image: str,
        command: list[str],
        env: dict[str, str],
        labels: dict[str, str],
        size: str,
        memory_mb: int,
        *,
        stop_signal: str = "SIGTERM",
        publish: bool = True,
    ) -> str:
        """A dyno as a one-replica service on the app's overlay network, with the isolation
        and limits of its size (formation and one-off dynos alike); `publish`: its $PORT on
        its node, for the router."""
        import docker.errors
        from docker.types import (
            ContainerSpec,
            EndpointSpec,
            NetworkAttachmentConfig,
            Resources,
            RestartPolicy,
            ServiceMode,
            TaskTemplate,
        )

        container = ContainerSpec(
            image,
            command,
            env=env,
            workdir="/app",
            user=f"{UID}:{GID}",
            labels=labels,
            stop_signal=stop_signal,
            stop_grace_period=STOP_GRACE * 10**9,
            init=True,  # reaps zombies and forwards signals, as Heroku's dyno init does
            cap_drop=["ALL"],
        )
        resources = Resources(mem_limit=memory_mb * 2**20)
        resources["Limits"]["Pids"] = rules.SIZE_PROCESSES.get(size, 256)
        for attempt in (1, 2):
            ports: list[dict[str, Any]] | None = None
            if publish:
                port = {"Protocol": "tcp", "TargetPort": PORT, "PublishMode": "host"}
                ports = [{**port, "PublishedPort": self._free_port()}]
            template = TaskTemplate(
                container,
                resources=resources,
                restart_policy=RestartPolicy(condition="none"),
                networks=[NetworkAttachmentConfig(self._network(app_id))],
            )
            try:
                service = self.client.api.create_service(
                    template,
                    name=f"waka-{app_id[:8]}-{dyno.replace('.', '-')}-{time.time_ns():x}"[:63],
                    labels=labels,
                    mode=ServiceMode("replicated", replicas=1),
                    endpoint_spec=EndpointSpec(mode="dnsrr", ports=ports),
                )
                return str(service["ID"])
            except docker.errors.APIError as error:
                # The app's network went meanwhile (pruned by the dyno manager, maybe in
                # another process, once the app had no dyno left): made again, once.
                self._networks.pop(app_id, None)
                if attempt == 2 or "network" not in str(error) or "not found" not in str(error):
                    raise
        raise AssertionError("unreachable")

    def _free_port(self) -> int:
        """A port of PUBLISHED_PORTS no service of this platform publishes. At random: two
        dyno managers (one leading, one that just lost the lead) rarely pick the same, and a
        port some other process holds on a node fails that dyno's start once, not every time."""
        mine = {"label": [f"waka.platform={self.platform_id}"]}
        taken = {
            port
            for service in self.client.api.services(filters=mine)
            for port in _spec_ports(service)
        }
        free = [p for p in PUBLISHED_PORTS if p not in taken]
        if not free:
            first, last = PUBLISHED_PORTS.start, PUBLISHED_PORTS.stop - 1
            raise RuntimeError(f"every port of {first}-{last} is published by a dyno")
        return random.choice(free)

    def _network(self, app_id: str) -> str:
        """The app's overlay network, made if need be."""
        found = self._networks.get(app_id)
        if found:
            return found
        name = f"waka-app-{self.platform_id}-{app_id}"
        existing = [n for n in self.client.networks.list(names=[name]) if n.name == name]
        if existing:
            network = existing[0]
        else:
            network = self.client.networks.create(
                name,
                driver="overlay",
                check_duplicate=True,
                labels={
                    "waka.role": NETWORK_ROLE,
                    "waka.platform": self.platform_id,
                    "waka.app": app_id,
                },
            )
        self._networks[app_id] = str(network.id)
        return str(network.id)

    # --- observing ----------------------------------------------------------------------------

    def list(self) -> list[ObservedDyno]:
        mine = {"label": [LABEL, f"waka.platform={self.platform_id}"]}
        services = self.client.api.services(filters=mine)
        if not services:
            self._prune_networks(set())
            return []
        nodes = {n["ID"]: n for n in self.client.api.nodes()}
        wanted = {s["ID"] for s in services}
        newest: dict[str, dict[str, Any]] = {}
        for task in self.client.api.tasks():
            service_id = task.get("ServiceID")
            if service_id not in wanted:
                continue
            if service_id not in newest or _version(task) > _version(newest[service_id]):
                newest[service_id] = task
        found = []
        for service in services:
            labels = service["Spec"].get("Labels") or {}
            task = newest.get(service["ID"])
            node = nodes.get(task.get("NodeID", "")) if task else None
            state = (task or {}).get("Status", {}).get("State", "new")
            # Lost: Swarm marked the node down (missed heartbeats). Not "unknown", which every
            # node is for a moment after the manager restarts.
            node_up = node is None or (node.get("Status") or {}).get("State") != "down"
            running = state in ALIVE and node_up
            ip = _node_address(node) if node else None
            port = _port(service, task) if task and state == "running" else None
            status = (task or {}).get("Status") or {}
            if not running and not node_up:
                log.info("dyno %s was on lost node %s", labels.get(LABEL), _hostname(node))
            found.append(
                observed_from_labels(
                    labels,
                    container_id=service["ID"],
                    running=running,
                    exit_code=None
                    if running
                    else (status.get("ContainerStatus") or {}).get("ExitCode"),
                    address=(ip, port) if running and ip and port else None,
                    created_at=service.get("CreatedAt", ""),
                    host=_hostname(node) if node else "",
                )
            )
        self._prune_networks({labels_app(s) for s in services})
        return found

    def _prune_networks(self, apps_with_dynos: set[str]) -> None:
        """Remove the overlay networks of apps that have no dyno left (every 30 s at most)."""
        if time.monotonic() - self._pruned < 30:
            return
        self._pruned = time.monotonic()
        mine = {"label": [f"waka.role={NETWORK_ROLE}", f"waka.platform={self.platform_id}"]}
        for network in self.client.networks.list(filters=mine):
            app_id = (network.attrs.get("Labels") or {}).get("waka.app", "")
            if app_id not in apps_with_dynos:
                try:
                    network.remove()
                    self._networks.pop(app_id, None)
                except Exception as error:  # still in use (a task shutting down): next time
                    log.debug("network %s not removed: %s", network.name, error)

    # --- stopping -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """When waka stops, its dynos keep running; the next start adopts them."""

    def stop(self, service_id: str, timeout: int = STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL after the grace period (scaled to 0 replicas), then removed;
        the exit code is the task's."""
        from docker.types import ServiceMode

        try:
            service = self.client.api.inspect_service(service_id)
            self.client.api.update_service(
                service_id,
                version=service["Version"]["Index"],
                mode=ServiceMode("replicated", replicas=0),
                fetch_current_spec=True,
            )
            code = None
            deadline = time.monotonic() + timeout + 5
            while time.monotonic() < deadline:
                tasks = self.client.api.tasks(filters={"service": service_id})
                if all(t["Status"]["State"] not in ALIVE for t in tasks):
                    codes = [
                        (t["Status"].get("ContainerStatus") or {}).get("ExitCode")
                        for t in sorted(tasks, key=_version)
                    ]
                    code = codes[-1] if codes else None
                    break
                time.sleep(0.2)
            self.client.api.remove_service(service_id)
            return code
        except Exception as error:  # already gone is fine: stopping is idempotent
            log.debug("stop %s: %s", service_id, error)
            return None

    def remove(self, service_id: str) -> None:
        try:
            self.client.api.remove_service(service_id)
        except Exception as error:
            log.debug("remove %s: %s", service_id, error)

    # --- output -------------------------------------------------------------------------------

    def follow_output(
        self, service_id: str, on_line: Callable[[str], None], *, from_now: bool = False
    ) -> None:
        """Stream the dyno's stdout and stderr through the manager, from whichever node."""
        since = int(time.time()) if from_now else 0

        def stream() -> Iterable[bytes]:
            return self.client.api.service_logs(
                service_id, follow=True, stdout=True, stderr=True, since=since
            )

        follow_lines(service_id, stream, on_line)


def labels_app(service: dict[str, Any]) -> str:
    return str((service["Spec"].get("Labels") or {}).get("waka.app", ""))


def _version(task: dict[str, Any]) -> tuple[str, int]:
    return (task.get("CreatedAt", ""), int((task.get("Version") or {}).get("Index", 0)))


def _port(service: dict[str, Any], task: dict[str, Any]) -> int | None:
    """The node port of the dyno: the service's own; for a service an older waka made (the
    node picked its port), what the task's status says."""
    spec = _spec_ports(service)
    if spec:
        return spec[0]
    ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
    return next((int(p["PublishedPort"]) for p in ports if p.get("TargetPort") == PORT), None)


def _spec_ports(service: dict[str, Any]) -> list[int]:
    """The node ports a service publishes its dyno's $PORT on (one, or none: a one-off)."""
    ports = ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    return [
        int(p["PublishedPort"])
        for p in ports
        if p.get("TargetPort") == PORT and p.get("PublishedPort")
    ]


def _node_address(node: dict[str, Any]) -> str | None:
    """Where the node is reached. A manager may report 0.0.0.0 as its address; its manager
    address then says it."""
    address = (node.get("Status") or {}).get("Addr")
    if address and address != "0.0.0.0":
        return str(address)
    manager = (node.get("ManagerStatus") or {}).get("Addr", "")
    return manager.rsplit(":", 1)[0] or None


def _hostname(node: dict[str, Any] | None) -> str:
    return str(((node or {}).get("Description") or {}).get("Hostname", ""))
