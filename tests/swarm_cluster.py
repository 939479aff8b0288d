"""A real multi-node Docker Swarm on this one machine, for tests: nodes are containers.

`SwarmCluster.start(workers=2)` makes, on the host's Docker engine:

- a bridge network of its own (a /24 picked from 10.199.0.0/16, so every node keeps its address
  when it is killed and started again: the manager is .2, worker i is .2+i);
- a NODE IMAGE (`waka/swarm-node:bookworm`), built once from the stack image with Debian's
  `docker.io` installed from the apt sources this machine is configured with; rebuilt when the
  stack image or the recipe changed (labels);
- one node container per Swarm node, each running its own `dockerd` (Docker in Docker) with its
  API on `tcp://<node ip>:2375` (test-only, on the private bridge), storage driver overlay2 on a
  volume (so it nests: the volume is no overlay mount), and its state in that volume: a node that
  is killed and started again (`revive`) comes back as the same Swarm node;
- the MANAGER is a node container too (the host engine never enters swarm mode), initialised with
  a dispatcher heartbeat of 1 s so a lost node is marked down within ~3 s; WORKERS join it;
- a REGISTRY: Debian's `docker-registry` (a real registry, installed by scripts/test-deps) run as
  a process of this test session, storage in a temp dir, listening on the network's gateway
  address (which every node reaches; every node's dockerd trusts it as an insecure registry).
  The stack image is pushed into it so every node pulls `<registry>/waka/stack:bookworm`.

`close()` removes all of it (also at exit, and on a failed start); it never touches other
containers. Everything it makes carries the label `waka.swarm-cluster=<cluster name>`, and its
network names the test process: a cluster whose process was killed before it could close it is
removed by the next `start()` (`sweep_abandoned`); the registry dies with its process.

Usage::

    with SwarmCluster.start(workers=2) as cluster:
        manager = docker.DockerClient(base_url=cluster.docker_url)
        manager.services.create(cluster.stack_image, ["sleep", "infinity"], ...)
        cluster.kill("<name>-worker1")      # a lost host
        cluster.revive("<name>-worker1")    # back, Ready again

or the session-scoped pytest fixture `swarm_cluster` (tests/conftest.py registers it). It makes
one cluster per process: under pytest-xdist, tests/conftest.py puts every test that uses it in
one `xdist_group` and `--dist loadgroup` runs them in one worker, so they share one; collection
fails if xdist placed such a test outside that group, and the fixture fails in a process that
has a Swarm already (two Swarms at once overload the machine).
`cluster.push(image, repository, tag)` puts another image of the host engine in the registry.
`scale_service(service, n)` scales without replacing tasks (docker-py's Service.scale does not).

Measured here (2 cores shared with other test runs): the Swarm of 3 nodes is Ready 4-15 s after
the node image exists (built once, ~10 s); the stack goes into the registry in 10-60 s and every
node pulls it in parallel in 40-90 s (unpacking 1 GB three times is most of the start-up). A
killed worker is marked down in ~3 s, its replicas run elsewhere ~1 s later (restart delay 0); a
revived one is Ready in 3-16 s.

What differs from a cluster of real hosts, and why:

- Nodes are NOT `--privileged`: this machine's Docker engine lacks CAP_SYS_RESOURCE in its
  bounding set, and Docker 20.10 asks runc for every capability under `--privileged`, which
  fails ("unable to apply caps"). A node gets every capability the engine has, no seccomp or
  AppArmor profile, unmasked /proc (`systempaths=unconfined`) and a private cgroup namespace; its
  entrypoint remounts /sys and its cgroups read-write, which is what `--privileged` would give.
- No IPVS in this kernel: Swarm's ingress routing mesh and service VIPs cannot work. Services
  must use `endpoint_mode=dnsrr` and publish ports in `mode=host` (reached from the host at
  `<node ip>:<published port>`). The `ingress` network is removed at init, so a service asking
  for an ingress-mode port fails at once ("service needs ingress network, but no ingress network
  is present") instead of never answering.
  Overlay networks (VXLAN) work across nodes.
- A task of a lost node is started elsewhere once the node is marked down (~3 s) and the
  service's restart delay has passed (Swarm's default 5 s; `RestartPolicy.Delay` 0 starts it
  at once).
- Node engines keep their networks out of the host's way: `--bip 192.168.250.1/24`, local
  networks from 192.168.192.0/19 and Swarm's overlays from 10.64.0.0/10.
- The stack image is pushed by this module straight over the registry API (uncompressed
  layers, as `docker save` gives them): a `docker push` would gzip the ~1 GB layer (~55 s here),
  and the host engine would only push to a registry on 127.0.0.1 without a daemon config change.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import hashlib
import http.client
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest

from tests.conftest import in_ci
from waka.adapters.stack import STACK_IMAGE

NODE_IMAGE = "waka/swarm-node:bookworm"
LABEL = "waka.swarm-cluster"
OWNER_LABEL = "waka.swarm-cluster.pid"  # on its network: the process that made the cluster
STACK_LABEL = "waka.stack-image"  # on the node image: the id of the stack image it was made from
RECIPE_LABEL = "waka.swarm-node-recipe"  # on the node image: a hash of what made it
NODE_API_PORT = 2375
NODE_API = "1.41"  # Debian bookworm's docker.io (20.10) in the nodes
SUBNETS = "10.199.{}.0/24"  # the cluster's bridge: one of these /24s that no network uses yet
NODE_DOCKERD_ARGS = (
    "--tls=false",  # else dockerd 20.10 waits 15 s to warn about a TCP socket without TLS
    "--storage-driver=overlay2",
    "--bip=192.168.250.1/24",
    "--default-address-pool=base=192.168.192.0/19,size=24",
    # What README's "Keeping apps apart" asks of a Swarm host: with Docker's userland proxy,
    # a dyno reached another app's dyno on its own node through the proxy's port.
    "--userland-proxy=false",
)
OVERLAY_POOL = "10.64.0.0/10"
HEARTBEAT_NS = 1_000_000_000

# Sets /sys and the cgroup file systems read-write (what --privileged would give), then runs
# dockerd. On cgroup v2 it first moves itself out of the namespace's root cgroup so dockerd may
# enable the controllers there (as moby's own dind script does).
ENTRYPOINT = """#!/bin/sh
set -e
mount -o remount,rw /sys
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mount -o remount,bind,rw /sys/fs/cgroup
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs || :
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \\
    >/sys/fs/cgroup/cgroup.subtree_control
else
  for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d"; done
fi
exec dockerd "$@"
"""

# The host's apt sources (when it has any) replace the stack's: the node image installs from the
# mirror this machine uses. Its sources are copied under apt/ in the build context.
DOCKERFILE = f"""FROM {STACK_IMAGE}
COPY apt/ /tmp/host-apt/
RUN if [ -n "$(ls -A /tmp/host-apt/etc/apt/sources.list.d /tmp/host-apt/etc/apt/sources.list \\
      2>/dev/null)" ]; then rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*; fi \\
 && cp -a /tmp/host-apt/. / \\
 && apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io iptables \\
 && rm -rf /var/lib/apt/lists/* /tmp/host-apt
COPY entrypoint /usr/local/bin/swarm-node
ENTRYPOINT ["/usr/local/bin/swarm-node"]
"""
RECIPE = hashlib.sha256((DOCKERFILE + ENTRYPOINT).encode()).hexdigest()[:16]

T = TypeVar("T")


class SwarmClusterError(RuntimeError):
    """The test cluster could not be made or did not reach the state asked for."""


@dataclass(frozen=True)
class SwarmNode:
    name: str  # the node container's name = its hostname = the Swarm node's hostname
    ip: str  # on the cluster's bridge; the host reaches published host-mode ports there
    role: str  # "manager" or "worker"
    state: str  # Swarm's view: "ready", "down", "unknown" (not joined yet)...
    availability: str  # "active", "pause", "drain"
    node_id: str  # the Swarm node id ("" before it joined)
    docker_url: str  # that node's own engine: tcp://<ip>:2375


def wait_until(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    """check()'s first truthy result within timeout seconds, else SwarmClusterError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (docker.errors.DockerException, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise SwarmClusterError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(every)


# --- the node image ---------------------------------------------------------------------------


def host_apt_files() -> dict[str, bytes]:
    """The host's apt sources, the keyrings they name and its Acquire:: settings, by path."""
    apt = Path("/etc/apt")
    sources = [apt / "sources.list"] if (apt / "sources.list").is_file() else []
    sources += sorted(apt.glob("sources.list.d/*.list")) + sorted(
        apt.glob("sources.list.d/*.sources")
    )
    files = {str(path): path.read_bytes() for path in sources if path.read_text().strip()}
    # The keyrings they name (Signed-By: /path, [signed-by=/path]).
    for content in list(files.values()):
        for word in re.split(r"[\s=\[\]]+", content.decode(errors="replace")):
            if word.startswith("/") and Path(word).is_file():
                files.setdefault(word, Path(word).read_bytes())
    # Settings such as Acquire::Check-Valid-Until "false" (a snapshot mirror needs it); files
    # with hooks (APT::Update::Post-Invoke...) would call programs the image lacks.
    for conf in sorted(apt.glob("apt.conf.d/*")):
        lines = [
            line.strip()
            for line in conf.read_text(errors="replace").splitlines()
            if line.strip() and not line.strip().startswith(("//", "#"))
        ]
        if lines and all(line.startswith("Acquire::") for line in lines):
            files[str(conf)] = conf.read_bytes()
    if not any(path.startswith("/etc/apt/sources.list") for path in files):
        return {}  # none: the stack keeps the sources `waka stack build` wrote
    return files


def ensure_node_image(client: docker.DockerClient) -> str:
    """The node image's id: the one there is if it was made from this stack and recipe."""
    try:
        stack = client.images.get(STACK_IMAGE)
    except docker.errors.ImageNotFound:
        raise SwarmClusterError(
            f"{STACK_IMAGE} is missing: run scripts/test-deps (it builds the stack image)"
        ) from None
    old = None
    with contextlib.suppress(docker.errors.ImageNotFound):
        old = client.images.get(NODE_IMAGE)
        labels = old.labels or {}
        if labels.get(STACK_LABEL) == stack.id and labels.get(RECIPE_LABEL) == RECIPE:
            return old.id
    with tempfile.TemporaryDirectory(prefix="waka-swarm-node-") as context:
        root = Path(context)
        (root / "Dockerfile").write_text(DOCKERFILE)
        (root / "entrypoint").write_text(ENTRYPOINT)
        (root / "entrypoint").chmod(0o755)
        (root / "apt").mkdir()
        for path, content in host_apt_files().items():
            target = root / "apt" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        try:
            image, _ = client.images.build(
                path=context,
                tag=NODE_IMAGE,
                labels={STACK_LABEL: stack.id, RECIPE_LABEL: RECIPE},
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            log = "".join(str(part.get("stream", part.get("error", ""))) for part in exc.build_log)
            raise SwarmClusterError(f"building {NODE_IMAGE} failed: {exc}\n{log[-3000:]}") from None
    if old is not None and old.id != image.id:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(old.id)  # the image it replaced, unless a container uses it
    return image.id


# --- capabilities ------------------------------------------------------------------------------

# Linux capability numbers (capability.h), for the names Docker takes.
CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)


def missing_capabilities() -> list[str]:
    """Capabilities outside this process's bounding set (the engine's, on this machine)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
            return [name for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]
    return []


# --- the registry --------------------------------------------------------------------------------


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # The registry ends with this test process, even when it is killed (Linux PR_SET_PDEATHSIG).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class Registry:
    """Debian's docker-registry serving a temp dir on address:port, for this session only."""

    def __init__(self, address: str, directory: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise SwarmClusterError(
                "docker-registry is missing: run scripts/test-deps (it installs Debian's "
                "docker-registry package)"
            )
        self.address = address
        self.port = free_port(address)
        self.netloc = f"{address}:{self.port}"
        (directory / "data").mkdir(parents=True)
        config = directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.netloc}\n"
        )
        self.log = directory / "registry.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        wait_until(f"the registry at {self.netloc}", self._answers, timeout=20)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise SwarmClusterError(
                f"docker-registry exited ({self.process.returncode}): "
                f"{self.log.read_text()[-2000:]}"
            )
        status, _, _ = self.request("GET", "/v2/")
        return status == 200

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=120)
        try:
            conn.request(
                method,
                path,
                body=body,
                headers=headers or {},
                encode_chunked=callable(getattr(body, "__next__", None)),
            )
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def upload_blob(self, repository: str, chunks: Iterator[bytes]) -> tuple[str, int]:
        """Streams chunks into one blob of repository; its digest and size."""
        digest = hashlib.sha256()
        size = 0

        def hashed() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        status, headers, body = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        if status != 202:
            raise SwarmClusterError(f"registry upload start: {status} {body[:300]!r}")
        location = urllib.parse.urlsplit(headers["Location"])
        stream = hashed()
        status, headers, body = self.request(
            "PATCH",
            f"{location.path}?{location.query}",
            body=stream,
            headers={"Content-Type": "application/octet-stream"},
        )
        if status != 202:
            raise SwarmClusterError(f"registry upload: {status} {body[:300]!r}")
        location = urllib.parse.urlsplit(headers["Location"])
        query = [
            *urllib.parse.parse_qsl(location.query),
            ("digest", f"sha256:{digest.hexdigest()}"),
        ]
        status, _, body = self.request(
            "PUT", f"{location.path}?{urllib.parse.urlencode(query)}", body=b""
        )
        if status != 201:
            raise SwarmClusterError(f"registry upload end: {status} {body[:300]!r}")
        return f"sha256:{digest.hexdigest()}", size

    def push(self, client: docker.DockerClient, image: str, repository: str, tag: str) -> str:
        """Pushes a local image of the host engine as repository:tag; its manifest digest.

        Its layers go up uncompressed, as `docker save` streams them (a layer's digest is then
        its diff id): no gzip of a 1 GB layer, and pulling nodes unpack no gzip either.
        """
        saved = io.BufferedReader(_ChunkReader(client.images.get(image).save(chunk_size=1 << 20)))
        config: dict[str, Any] = {}
        layers: dict[str, dict[str, Any]] = {}
        manifest: list[dict[str, Any]] = []
        with tarfile.open(fileobj=saved, mode="r|") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                content = archive.extractfile(member)
                assert content is not None
                if member.name.endswith("/layer.tar"):
                    digest, size = self.upload_blob(
                        repository, iter(functools.partial(content.read, 1 << 20), b"")
                    )
                    layers[member.name] = {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                        "size": size,
                        "digest": digest,
                    }
                elif member.name == "manifest.json":
                    manifest = json.loads(content.read())
                elif member.name.endswith(".json") and "/" not in member.name:
                    data = content.read()
                    digest, size = self.upload_blob(repository, iter([data]))
                    config[member.name] = {
                        "mediaType": "application/vnd.docker.container.image.v1+json",
                        "size": size,
                        "digest": digest,
                    }
        if len(manifest) != 1:
            raise SwarmClusterError(f"docker save of {image} gave {len(manifest)} images")
        document = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": config[manifest[0]["Config"]],
                "layers": [layers[name] for name in manifest[0]["Layers"]],
            }
        ).encode()
        status, headers, body = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            body=document,
            headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        if status != 201:
            raise SwarmClusterError(f"registry manifest: {status} {body[:300]!r}")
        return headers.get("Docker-Content-Digest", "")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of bytes (the Docker SDK streams `docker save` that way)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


# --- clean up ------------------------------------------------------------------------------------


def remove_cluster(host: docker.DockerClient, name: str) -> None:
    """Removes the containers, volumes and network labelled as cluster `name`'s, nothing else."""
    errors: list[str] = []
    mine = {"label": f"{LABEL}={name}"}
    for kind, items in (
        ("container", lambda: host.containers.list(all=True, filters=mine)),
        ("volume", lambda: host.volumes.list(filters=mine)),
        ("network", lambda: host.networks.list(filters=mine)),
    ):
        try:
            for item in items():
                with contextlib.suppress(docker.errors.NotFound):
                    if kind == "container":
                        item.remove(force=True, v=True)
                    else:
                        item.remove()
        except docker.errors.DockerException as exc:
            errors.append(f"{kind}: {exc}")
    if errors:
        raise SwarmClusterError(f"cleaning up {name}: {'; '.join(errors)}")


def sweep_abandoned(host: docker.DockerClient) -> None:
    """Removes the clusters of test processes that are gone (killed before they could close
    theirs): their networks name the process."""
    for network in host.networks.list(filters={"label": LABEL}):
        labels = network.attrs.get("Labels") or {}
        owner = labels.get(OWNER_LABEL, "")
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        remove_cluster(host, labels[LABEL])
        for directory in Path(tempfile.gettempdir()).glob(f"{labels[LABEL]}-*"):
            shutil.rmtree(directory, ignore_errors=True)


# --- the cluster ---------------------------------------------------------------------------------


class SwarmCluster:
    """A manager and workers, each a container running dockerd, joined in one Swarm."""

    def __init__(self, host: docker.DockerClient, name: str) -> None:
        self.host = host
        self.name = name
        self.network_name = f"{name}-net"
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.registry_process: Registry | None = None
        self.subnet_prefix = ""  # "10.199.N." once the network is made
        self.gateway = ""
        self.manager_name = f"{name}-manager"
        self.worker_names: list[str] = []
        self._manager: docker.DockerClient | None = None
        self._closed = False
        self._lock = threading.Lock()
        atexit.register(self.close)

    # -- start ----------------------------------------------------------------------------------

    @classmethod
    def start(
        cls, workers: int = 2, *, pull_stack: bool = True, host: docker.DockerClient | None = None
    ) -> SwarmCluster:
        """A Swarm of a manager and `workers` workers, every node Ready, the stack in the registry
        (and, with pull_stack, pulled by every node already)."""
        client = host or docker.from_env(timeout=300)
        cluster = cls(client, f"waka-swarm-{os.urandom(3).hex()}")
        try:
            cluster._start(workers, pull_stack)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _start(self, workers: int, pull_stack: bool) -> None:
        timings: dict[str, float] = {}
        began = time.monotonic()
        sweep_abandoned(self.host)
        ensure_node_image(self.host)
        timings["node image"] = time.monotonic() - began
        self._create_network()
        self.registry_process = Registry(self.gateway, self.directory / "registry")
        timings["registry"] = time.monotonic() - began
        self.worker_names = [f"{self.name}-worker{i}" for i in range(1, workers + 1)]
        for name in [self.manager_name, *self.worker_names]:
            self._create_node(name)
        timings["nodes created"] = time.monotonic() - began
        clients = {name: self.node_client(name) for name in self.all_names()}
        for name, client in clients.items():
            wait_until(f"dockerd on {name}", client.ping, timeout=120)
            self._keep_apps_apart(name)
        timings["engines"] = time.monotonic() - began
        manager = clients[self.manager_name]
        manager.swarm.init(
            advertise_addr=self.ip(self.manager_name),
            listen_addr="0.0.0.0:2377",
            default_addr_pool=[OVERLAY_POOL],
            subnet_size=24,
            dispatcher_heartbeat_period=HEARTBEAT_NS,
        )
        # No IPVS here: the routing mesh cannot work; without an ingress network a service that
        # asks for it fails at once instead of never answering.
        with contextlib.suppress(docker.errors.NotFound):
            manager.networks.get("ingress").remove()
        manager.swarm.reload()
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for name in self.worker_names:
            clients[name].swarm.join(
                remote_addrs=[f"{self.ip(self.manager_name)}:2377"],
                join_token=token,
                advertise_addr=self.ip(name),
                listen_addr="0.0.0.0:2377",
            )
        for name in self.all_names():
            self.wait_for_node(name, "ready", timeout=60)
        timings["swarm"] = time.monotonic() - began
        self._push_stack()
        timings["stack pushed"] = time.monotonic() - began
        if pull_stack:
            self._run_on_nodes(
                lambda name: self.node_client(name).images.pull(self.stack_image),
                self.all_names(),
            )
            timings["stack pulled"] = time.monotonic() - began
        self.timings = timings

    def _create_network(self) -> None:
        for third in random.sample(range(256), 256):
            subnet = SUBNETS.format(third)
            gateway = subnet.replace(".0/24", ".1")
            try:
                self.host.networks.create(
                    self.network_name,
                    driver="bridge",
                    ipam=docker.types.IPAMConfig(
                        pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)]
                    ),
                    labels={LABEL: self.name, OWNER_LABEL: str(os.getpid())},
                )
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():
                    continue  # another network has that subnet (another cluster, say)
                raise
            self.subnet_prefix = subnet.removesuffix("0/24")
            self.gateway = gateway
            return
        raise SwarmClusterError(f"no free /24 in {SUBNETS.format('*')} for the cluster network")

    def _create_node(self, name: str) -> None:
        api = self.host.api
        assert self.registry_process is not None
        volume = f"{name}-docker"
        self.host.volumes.create(volume, labels={LABEL: self.name})
        host_config = api.create_host_config(
            cap_add=["ALL"],
            cap_drop=missing_capabilities(),
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            cgroupns="private",
            tmpfs={"/run": ""},  # dockerd's pid files: a revived node starts clean
            binds={volume: {"bind": "/var/lib/docker", "mode": "rw"}},
        )
        # `--security-opt systempaths=unconfined`: all of /proc and /sys visible, none read-only.
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
        networking = api.create_networking_config(
            {self.network_name: api.create_endpoint_config(ipv4_address=self.ip(name))}
        )
        container = api.create_container(
            NODE_IMAGE,
            command=[
                f"-H=tcp://0.0.0.0:{NODE_API_PORT}",
                "-H=unix:///var/run/docker.sock",
                *NODE_DOCKERD_ARGS,
                f"--insecure-registry={self.registry}",
            ],
            name=name,
            hostname=name,
            labels={LABEL: self.name},
            host_config=host_config,
            networking_config=networking,
        )
        api.start(container["Id"])

    def _push_stack(self) -> None:
        assert self.registry_process is not None
        self.registry_process.push(self.host, STACK_IMAGE, *self._stack_repository())

    def _stack_repository(self) -> tuple[str, str]:
        repository, _, tag = STACK_IMAGE.partition(":")
        return repository, tag or "latest"

    def _run_on_nodes(self, work: Callable[[str], object], names: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            for future in [pool.submit(work, name) for name in names]:
                future.result()

    # -- what tests use --------------------------------------------------------------------------

    @property
    def docker_url(self) -> str:
        """The manager's Docker API (Swarm services, nodes, networks are made there)."""
        return self.node_url(self.manager_name)

    @property
    def registry(self) -> str:
        """host:port of the registry every node pulls from (and trusts without TLS)."""
        assert self.registry_process is not None
        return self.registry_process.netloc

    def waka_env(self) -> dict[str, str]:
        """The settings that run waka's dynos on this Swarm."""
        return {
            "WAKA_RUNTIME": "swarm",
            "WAKA_SWARM_MANAGER": self.docker_url,
            "WAKA_SWARM_REGISTRY": self.registry,
        }

    @property
    def stack_image(self) -> str:
        """The stack image's name in the registry: every node can pull it."""
        repository, tag = self._stack_repository()
        return f"{self.registry}/{repository}:{tag}"

    def all_names(self) -> list[str]:
        return [self.manager_name, *self.worker_names]

    def ip(self, name: str) -> str:
        return f"{self.subnet_prefix}{2 + self.all_names().index(name)}"

    def node_url(self, name: str) -> str:
        return f"tcp://{self.ip(name)}:{NODE_API_PORT}"

    def node_client(self, name: str) -> docker.DockerClient:
        # The API version named: "auto" would ask the engine at once, before it may answer.
        return docker.DockerClient(base_url=self.node_url(name), version=NODE_API, timeout=120)

    def manager(self) -> docker.DockerClient:
        """A client of the manager's engine (made once)."""
        if self._manager is None:
            self._manager = self.node_client(self.manager_name)
        return self._manager

    def nodes(self) -> list[SwarmNode]:
        """Every node, in start order, as Swarm sees it now."""
        seen: dict[str, dict[str, Any]] = {}
        for node in self.manager().nodes.list():
            hostname = node.attrs["Description"]["Hostname"]
            # A node that rejoined fresh would appear twice: the latest one is the node.
            if hostname not in seen or node.attrs["CreatedAt"] > seen[hostname]["CreatedAt"]:
                seen[hostname] = node.attrs
        result = []
        for name in self.all_names():
            attrs = seen.get(name, {})
            result.append(
                SwarmNode(
                    name=name,
                    ip=self.ip(name),
                    role=attrs.get("Spec", {}).get(
                        "Role", "manager" if name == self.manager_name else "worker"
                    ),
                    state=attrs.get("Status", {}).get("State", "unknown"),
                    availability=attrs.get("Spec", {}).get("Availability", "unknown"),
                    node_id=attrs.get("ID", ""),
                    docker_url=self.node_url(name),
                )
            )
        return result

    def node(self, name: str) -> SwarmNode:
        for node in self.nodes():
            if node.name == name:
                return node
        raise KeyError(name)

    def wait_for_node(self, name: str, state: str, timeout: float = 60) -> SwarmNode:
        """The node once Swarm marks it `state` ("ready", "down")."""
        return wait_until(
            f"Swarm to mark {name} {state}",
            lambda: (node := self.node(name)).state == state and node,
            timeout=timeout,
        )

    def kill(self, name: str, *, wait: bool = False) -> None:
        """The node's host is lost: its container is killed (SIGKILL), no goodbye to Swarm.
        With wait, returns once the manager marks it down (~3 s with the 1 s heartbeat)."""
        if name == self.manager_name:
            self._manager = None
        self.host.containers.get(name).kill()
        if wait and name != self.manager_name:
            self.wait_for_node(name, "down", timeout=30)

    def revive(self, name: str, timeout: float = 60) -> SwarmNode:
        """Starts a killed node again; it rejoins as the same Swarm node (its engine's state is
        kept in its volume, its address is fixed). Returns it once Swarm marks it Ready."""
        self._start_node(name, timeout)
        return self.wait_for_node(name, "ready", timeout=timeout)

    def _start_node(self, name: str, timeout: float) -> None:
        if name == self.manager_name:
            self._manager = None  # a client of the engine before: its connections are dead
        self.host.containers.get(name).start()
        wait_until(f"dockerd on {name}", self.node_client(name).ping, timeout=timeout)
        self._keep_apps_apart(name)  # a new network namespace: its rules are gone

    def heal(self, timeout: float = 120) -> list[str]:
        """Every node's container running and every node Ready, as a test expects to find them.

        A node whose dockerd died of itself is started again, as systemd restarts a host's
        dockerd (Debian's 20.10 swarmkit can panic on a manager just back from a loss, seen once
        in CI), and gets its firewall rules back (`revive`). Returns the names it revived, so
        the caller can say so: one crashed engine must not fail every later test on the Swarm.
        """
        revived: list[str] = []

        def up() -> bool:
            for name in self.all_names():
                if self.host.containers.get(name).status != "running":
                    self._start_node(name, timeout)
                    revived.append(name)
            # A manager that restarted marks the workers down until each reports again; Swarm
            # places tasks on Ready nodes only and never moves them back afterwards.
            return all(node.state == "ready" for node in self.nodes())

        wait_until("every Swarm node running and Ready", up, timeout=timeout)
        return revived

    def _keep_apps_apart(self, name: str) -> None:
        """README's "Keeping apps apart" rules on the node: a port a dyno publishes answers
        the routers only (they run on this host: the cluster network's gateway)."""
        published = ["DOCKER-USER", "-o", "docker_gwbridge", "-m", "conntrack", "--ctstate", "DNAT"]
        node = self.host.containers.get(name)
        # -I puts each rule first: the routers' ACCEPT, made last, comes before the DROP.
        for rule in ([*published, "-j", "DROP"], [*published, "-s", self.gateway, "-j", "ACCEPT"]):

            def applied(rule: list[str] = rule) -> bool:
                if node.exec_run(["iptables", "-C", *rule]).exit_code == 0:
                    return True
                node.exec_run(["iptables", "-I", *rule])  # DOCKER-USER is dockerd's to make
                return False

            wait_until(f"the firewall rules on {name}", applied, timeout=30)

    def containers_report(self, log_lines: int = 20) -> str:
        """Each node container's state as the host engine sees it, with the last lines of
        dockerd's log for any that is not running: what a failed test shows, so a node that
        died (or a manager that stopped answering) says why."""
        lines = []
        for name in self.all_names():
            try:
                container = self.host.containers.get(name)
            except docker.errors.DockerException as exc:
                lines.append(f"{name}: {exc}")
                continue
            state = container.attrs["State"]
            lines.append(
                f"{name}: {state['Status']} (exit {state['ExitCode']}, "
                f"OOM-killed {state['OOMKilled']}, started {state['StartedAt']}, "
                f"finished {state['FinishedAt']})"
            )
            if state["Status"] != "running" or name == self.manager_name:
                with contextlib.suppress(docker.errors.DockerException):
                    log = container.logs(tail=log_lines).decode(errors="replace")
                    lines += [f"  | {line[:300]}" for line in log.splitlines()]
        return "\n".join(lines)

    # -- end -------------------------------------------------------------------------------------

    def push(self, image: str, repository: str, tag: str = "latest") -> str:
        """Pushes an image of the host engine into the registry; the name nodes pull it by."""
        assert self.registry_process is not None
        self.registry_process.push(self.host, image, repository, tag)
        return f"{self.registry}/{repository}:{tag}"

    def close(self) -> None:
        """Removes every container, volume and the network it made, the registry and temp dir."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        try:
            remove_cluster(self.host, self.name)
        finally:
            if self.registry_process is not None:
                self.registry_process.stop()
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SwarmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scale_service(service: Any, replicas: int) -> None:
    """`docker service scale`: the service's stored spec with another replica count.

    Not docker-py's Service.scale: it sends the spec as read with defaults filled in
    (StopGracePeriod, DNSConfig...), which differs from the stored one, so Swarm replaces every
    running task, one at a time, on top of scaling.
    """
    service.reload()
    spec = service.attrs["Spec"]
    service.client.api.update_service(
        service.id,
        service.version,
        name=spec["Name"],
        labels=spec.get("Labels"),
        mode=docker.types.ServiceMode("replicated", replicas),
        task_template=spec["TaskTemplate"],
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test on the test Swarm reports its node containers' state and logs."""
    outcome = yield
    report = outcome.get_result()
    cluster = getattr(item, "funcargs", {}).get("swarm_cluster")
    if report.failed and isinstance(cluster, SwarmCluster):
        try:
            report.sections.append(("swarm nodes", cluster.containers_report()))
        except Exception as exc:  # the report must not hide the failure
            report.sections.append(("swarm nodes", f"no report: {exc!r}"))


@pytest.fixture(autouse=True)
def _swarm_nodes_up(request: pytest.FixtureRequest) -> None:
    """Before each test on the test Swarm: its nodes up and Ready (`SwarmCluster.heal`). A node
    that had to be revived is said in the test's output and as a warning, never hidden."""
    if "swarm_cluster" not in request.fixturenames:
        return
    cluster: SwarmCluster = request.getfixturevalue("swarm_cluster")
    if revived := cluster.heal():
        message = f"the Swarm nodes {revived} had stopped of themselves: started again"
        print(message)
        warnings.warn(message, stacklevel=1)


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    """A Swarm of a manager and 2 workers for the test session (one per xdist worker process).

    Skipped only when there is no Docker engine (under CI that fails too: CI must never pass by
    skipping); any other failure to make the cluster fails the test.
    """
    try:
        host = docker.from_env(timeout=300)
        host.ping()
    except docker.errors.DockerException as exc:
        message = f"Docker is not available ({exc}): the Swarm tests need a Docker engine"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    mine = {"label": f"{OWNER_LABEL}={os.getpid()}"}
    if made := [n.name for n in host.networks.list(filters=mine)]:
        # A fixture imported into a test module is another fixture: a second Swarm at once.
        pytest.fail(f"this process has a Swarm already ({made}): one per session", pytrace=False)
    cluster = SwarmCluster.start(workers=2, host=host)
    try:
        yield cluster
    finally:
        cluster.close()
