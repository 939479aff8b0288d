"""Runtimes run one command to completion (a build, a release phase) and stream its output.

`DockerRuntime` runs it in a container of the stack image; `ProcessRuntime` runs it on the host,
without isolation, for machines with no container engine. Both take the same container-side
view (mounts, workdir and env name paths as the container sees them), so callers need not care.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("waka.runtime")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Mount:
    host: Path
    container: str
    read_only: bool = False


class RunTimedOut(TimeoutError):
    """The command ran past its timeout and was killed (its output so far was streamed)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:g} seconds; the command was killed")
        self.timeout = timeout


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run anything (no engine, no stack image)."""


class Runtime(Protocol):
    name: str  # "docker" or "process"

    def run(
        self,
        command: list[str],
        *,
        mounts: Sequence[Mount],
        env: Mapping[str, str],
        workdir: str,
        memory_mb: int,
        output: Callable[[bytes], None],
        timeout: float | None = None,
        network: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        """Run `command` to completion; its exit status (128 + N: killed by signal N).

        stdout and stderr reach `output` together, in chunks, as they are written. Raises
        RunTimedOut once the command has been killed for running past `timeout` seconds.
        `labels` tag the container (Docker) so leftovers can be found; other runtimes ignore them.
        """
        ...

    def sweep(self, busy: Callable[[Mapping[str, str]], bool] = lambda labels: False) -> int:
        """Remove what earlier runs left behind (a crash mid-run), except what `busy` says
        another process is still running (by its labels); how many were removed."""
        ...


class LabelledRuntime:
    """A runtime whose every run carries `labels` as well: the builder marks each container
    with the app and build it belongs to."""

    def __init__(self, runtime: Runtime, labels: Mapping[str, str]) -> None:
        self.runtime = runtime
        self.labels = dict(labels)
        self.name = runtime.name

    def run(
        self, command: list[str], *, labels: Mapping[str, str] | None = None, **options: Any
    ) -> int:
        return self.runtime.run(command, labels={**self.labels, **(labels or {})}, **options)

    def sweep(self, busy: Callable[[Mapping[str, str]], bool] = lambda labels: False) -> int:
        return self.runtime.sweep(busy)


class DockerRuntime:
    """One container per command, always removed afterwards. Runs as root inside (files written
    to mounts are root-owned, as waka runs as root); no privileges, no Docker socket."""

    name = "docker"

    def __init__(self, client: Any, image: str, labels: Mapping[str, str] | None = None) -> None:
        self.client = client  # a docker.DockerClient
        self.image = image
        self.labels = dict(labels or {})  # on every container, e.g. which platform made it

    def run(
        self,
        command: list[str],
        *,
        mounts: Sequence[Mount],
        env: Mapping[str, str],
        workdir: str,
        memory_mb: int,
        output: Callable[[bytes], None],
        timeout: float | None = None,
        network: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        import docker.errors
        import docker.types

        try:
            # create + start, not containers.run: run() would try to pull a missing image.
            container = self.client.containers.create(
                self.image,
                # One pipe for both streams, as Docker's two would lose their relative order.
                ["/bin/sh", "-c", 'exec "$@" 2>&1', "sh", *command],
                environment={"PATH": DEFAULT_PATH, **env},
                working_dir=workdir,
                user="0:0",
                mem_limit=f"{memory_mb}m",
                memswap_limit=f"{memory_mb}m",  # no swap on top, where the kernel accounts it
                # Bind mounts (not `volumes`, keyed by host path): one host directory may be
                # mounted twice, and a missing one is an error, not created empty.
                mounts=[
                    docker.types.Mount(m.container, str(m.host), type="bind", read_only=m.read_only)
                    for m in mounts
                ],
                network_mode=None if network else "none",
                labels={"waka.role": "run", **self.labels, **(labels or {})},
                detach=True,
            )
        except docker.errors.ImageNotFound as error:
            raise RuntimeUnavailable(
                f"image {self.image} is not on this Docker engine (run `waka stack build`)"
            ) from error
        timer = None
        killed = threading.Event()
        try:
            container.start()
            if timeout is not None:
                timer = threading.Timer(timeout, self._kill, (container, killed))
                timer.daemon = True
                timer.start()
            # The log stream ends when the container stops (also when the timer kills it).
            for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
                output(chunk)
            status = container.wait()["StatusCode"]
            if killed.is_set():
                raise RunTimedOut(timeout or 0)
            return status
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)  # kills it first if it still runs

    def sweep(self, busy: Callable[[Mapping[str, str]], bool] = lambda labels: False) -> int:
        """Remove every container this runtime's labels mark that is left from before (a
        crash mid-build leaves its container), but those `busy` says are still at work."""
        if not self.labels:
            return 0  # no labels to tell ours from anyone else's
        wanted = ["waka.role=run", *(f"{k}={v}" for k, v in self.labels.items())]
        removed = 0
        for container in labelled_containers(self.client, wanted):
            if busy(container.labels):
                continue
            with contextlib.suppress(Exception):  # already gone
                container.remove(force=True)
                removed += 1
        return removed

    @staticmethod
    def _kill(container: Any, killed: threading.Event) -> None:
        killed.set()
        with contextlib.suppress(Exception):  # it may have stopped meanwhile
            container.kill()


class ProcessRuntime:
    """Runs on the host with no isolation. Mounts are not bind-mounted: every argument, the
    workdir and every env value (each `:`-separated part, for PATH-like values) that names a path
    under a mount's container path is rewritten to the mount's host path. Paths inside longer
    strings (`sh -c "cd /app && ..."`) are not rewritten; read-only mounts are not enforced.

    Memory: RLIMIT_DATA (writable private memory) of 2 x memory_mb, a rough stand-in for a
    cgroup. Not RLIMIT_AS: Node.js reserves ~10 GiB of address space for each WebAssembly memory,
    so under any sane RLIMIT_AS its built-in fetch (undici runs on WebAssembly) fails with "Out of
    memory"; reserved but unwritable space does not count for RLIMIT_DATA. The environment is only
    `env`, plus the host's PATH and HOME when `env` has none (the host is the stack here).
    When the command exits, whatever it left running in its process group is killed, as a
    container's processes die with it.
    """

    name = "process"
    memory_factor = 2

    def sweep(self, busy: Callable[[Mapping[str, str]], bool] = lambda labels: False) -> int:
        return 0  # a run's process group is killed when it ends; nothing outlives it here

    def run(
        self,
        command: list[str],
        *,
        mounts: Sequence[Mount],
        env: Mapping[str, str],
        workdir: str,
        memory_mb: int,
        output: Callable[[bytes], None],
        timeout: float | None = None,
        network: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        rewrite = _Rewriter(mounts)
        environment = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOME": os.environ.get("HOME", "/root"),
        }
        environment.update({key: rewrite.path_list(value) for key, value in env.items()})
        limit = memory_mb * self.memory_factor * 1024 * 1024

        def limit_memory() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

        process = subprocess.Popen(
            [rewrite.path(arg) for arg in command],
            cwd=rewrite.path(workdir),
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group, so a timeout kills what it started too
            preexec_fn=limit_memory,
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            timed_out = _pump(process, output, deadline)
            if not timed_out:  # the output ended: the command is exiting (or closed it)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    process.wait(left)
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            _kill_group(process.pid)
            process.stdout.close()
            status = process.wait()
        if timed_out:
            raise RunTimedOut(timeout or 0)
        return 128 - status if status < 0 else status  # a signal, as shells and Docker say it


def _pump(
    process: subprocess.Popen, output: Callable[[bytes], None], deadline: float | None
) -> bool:
    """Stream the process's output until it ends; True if it was killed for the timeout."""
    fd = process.stdout.fileno()
    exited_at = None
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            _kill_group(process.pid)
            _drain(fd, output)
            return True
        # Wake now and then to notice the command exiting while a child still holds the pipe.
        wait = 0.2 if deadline is None else min(0.2, deadline - now)
        ready, _, _ = select.select([fd], [], [], wait)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            output(chunk)
        elif process.poll() is not None:
            exited_at = exited_at or now
            if now - exited_at > 0.5:  # its leftovers still write: end them, keep what they wrote
                _kill_group(process.pid)
                _drain(fd, output)
                return False


def _drain(fd: int, output: Callable[[bytes], None]) -> None:
    """What is left in the pipe, waiting at most a second for writers that escaped the group."""
    end = time.monotonic() + 1.0
    while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        output(chunk)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Rewriter:
    """Container paths to host paths, for ProcessRuntime; the longest mount path wins."""

    def __init__(self, mounts: Sequence[Mount]) -> None:
        self.mounts = sorted(
            ((m.container.rstrip("/") or "/", str(m.host)) for m in mounts),
            key=lambda pair: len(pair[0]),
            reverse=True,
        )

    def path(self, value: str) -> str:
        for container, host in self.mounts:
            if value == container:
                return host
            if value.startswith(container.rstrip("/") + "/"):
                return host.rstrip("/") + "/" + value[len(container) :].lstrip("/")
        return value

    def path_list(self, value: str) -> str:
        return ":".join(self.path(part) for part in value.split(":"))


def docker_available() -> bool:
    """Whether a Docker engine answers within a few seconds."""
    return docker_client() is not None


def default_runtime(image: str, labels: Mapping[str, str] | None = None) -> Runtime:
    """Docker when the engine answers and has `image`; else the host, saying why in the log.
    `labels` mark every container it makes (so leftovers can be swept)."""
    client = docker_client()
    if client is None:
        log.warning("no Docker engine answers: builds run on this host, without isolation")
        return ProcessRuntime()
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        log.warning(
            "the Docker engine has no image %s (make it with `waka stack build`): "
            "builds run on this host, without isolation",
            image,
        )
        return ProcessRuntime()
    return DockerRuntime(client, image, labels)


def docker_client() -> Any | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:  # no SDK, no socket, no answer: all mean "no Docker here"
        return None


def labelled_containers(client: Any, labels: Sequence[str]) -> list[Any]:
    """Every container (stopped too) with these labels, each inspected. The SDK's own
    `containers.list` fails outright with 404 when one is removed between its list and its
    inspect (a dyno replaced, a one-off ending, another worker sweeping): skip that one."""
    import docker.errors

    found = []
    for sparse in client.containers.list(all=True, filters={"label": list(labels)}, sparse=True):
        with contextlib.suppress(docker.errors.NotFound):
            found.append(client.containers.get(sparse.id))
    return found


def address_towards(docker_url: str | None) -> str | None:
    """This host's address on the way to the Docker engine at `docker_url` (a Swarm manager):
    where that engine's nodes reach this host. None for a local engine."""
    from urllib.parse import urlparse

    if not docker_url or docker_url.startswith(("unix:", "npipe:")):
        return None
    host = urlparse(docker_url).hostname
    if not host:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        return str(probe.getsockname()[0])


def bridge_gateway(client: Any) -> str | None:
    """The host's address on Docker's default bridge: where containers reach host services.

    A freshly started engine may report the bridge's subnet without a gateway, so this asks,
    in turn: the network's IPAM gateway, the address of the bridge's interface on this host
    (docker0 unless the engine names another), and the subnet's first host (Docker's default)."""
    try:
        attrs = client.networks.get("bridge").attrs
    except Exception:  # no bridge network: the engine runs with another default
        return None
    configs = (attrs.get("IPAM") or {}).get("Config") or []
    gateway = next((c["Gateway"] for c in configs if c.get("Gateway")), None)
    if gateway:
        return gateway
    interface = (attrs.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    address = interface_address(interface)
    if address:
        return address
    for config in configs:
        try:
            subnet = ipaddress.ip_network(config.get("Subnet", ""), strict=False)
        except ValueError:
            continue
        if subnet.version == 4 and subnet.num_addresses > 2:
            return str(next(subnet.hosts()))
    return None


def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface `name` on this host, or None."""
    import fcntl
    import struct

    siocgifaddr = 0x8915
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            packed = struct.pack("256s", name.encode()[:15])
            answer = fcntl.ioctl(probe.fileno(), siocgifaddr, packed)
    except OSError:  # no such interface, or it has no IPv4 address
        return None
    return socket.inet_ntoa(answer[20:24])
