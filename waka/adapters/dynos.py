"""Long-running dynos as Docker containers of the stack image.

Each dyno is one container, named and labelled with its app, release, restart generation and
dyno name, so the dyno manager can rebuild its view of the world from the engine after a
restart of waka. The slug is copied into the container's own file system at /app (writable and
thrown away with the container: an ephemeral file system, as on Heroku). Dynos get no mounts:
no Docker socket, nothing of the host. How a dyno is isolated (its network, user, capabilities)
and limited (memory, CPU, processes) is in waka/adapters/dyno_containers.py.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from waka.adapters.dyno_containers import address_of, container_options, install_slug, oom_killed
from waka.adapters.runtime import labelled_containers

log = logging.getLogger("waka.dynos")

PORT = 5000  # every container has its own address, so every dyno may listen on the same port
LABEL = "waka.dyno"  # present on every dyno container


@dataclass(frozen=True)
class DynoSpec:
    app_id: str
    app_name: str
    name: str  # web.1
    process_type: str
    command: str
    release: int
    generation: int  # bumped by a restart: a dyno of an older generation is replaced
    env: dict[str, str]
    memory_mb: int
    size: str
    slug_path: Path


@dataclass(frozen=True)
class ObservedDyno:
    container_id: str
    app_id: str
    name: str
    process_type: str
    command: str
    release: int
    generation: int
    size: str
    running: bool
    exit_code: int | None
    address: tuple[str, int] | None
    created_at: str
    oom_killed: bool = False  # the kernel killed it for going over its memory (R15)
    host: str = ""  # the machine it runs on, where the runtime spreads dynos over several


class Dynos(Protocol):
    """Where dynos run: local containers, a Swarm's services or host processes."""

    kind: str

    def start(self, spec: DynoSpec) -> str: ...
    def list(self) -> list[ObservedDyno]: ...
    def stop(self, container_id: str, timeout: int = 10) -> int | None: ...
    def remove(self, container_id: str) -> None: ...
    def shutdown(self) -> None: ...
    def follow_output(
        self, container_id: str, on_line: Callable[[str], None], *, from_now: bool = False
    ) -> None: ...


def dyno_env(spec: DynoSpec) -> dict[str, str]:
    """A dyno's environment: its config vars and what Heroku sets in every dyno."""
    return {
        **spec.env,
        "PORT": str(PORT),
        "DYNO": spec.name,
        "PS": spec.name,
        "HOME": "/app",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }


def dyno_command(spec: DynoSpec) -> list[str]:
    """`bash -c COMMAND` as on Heroku, after sourcing the buildpacks' .profile.d. Not `exec`:
    that would change what a compound command means (`exec a; b` never runs b)."""
    script = 'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; ' + spec.command
    return ["bash", "-c", script]


def dyno_labels(spec: DynoSpec, platform_id: str) -> dict[str, str]:
    """What the dyno manager rebuilds its view from after a restart, on any runtime."""
    return {
        LABEL: spec.name,
        "waka.platform": platform_id,
        "waka.app": spec.app_id,
        "waka.app_name": spec.app_name,
        "waka.type": spec.process_type,
        "waka.command": spec.command,
        "waka.release": str(spec.release),
        "waka.generation": str(spec.generation),
        "waka.size": spec.size,
    }


def observed_from_labels(labels: dict[str, str], **facts: Any) -> ObservedDyno:
    """An observed dyno: what its labels say, and the runtime's `facts` (id, state, address)."""
    return ObservedDyno(
        app_id=labels.get("waka.app", ""),
        name=labels.get(LABEL, ""),
        process_type=labels.get("waka.type", ""),
        command=labels.get("waka.command", ""),
        release=int(labels.get("waka.release", "0")),
        generation=int(labels.get("waka.generation", "0")),
        size=labels.get("waka.size", ""),
        **facts,
    )


class DockerDynos:
    kind = "Docker containers of the stack image"

    def __init__(self, client: Any, image: str, platform_id: str) -> None:
        self.client = client
        self.image = image
        # Several waka installations may share one engine (tests do): each sees only its own.
        self.platform_id = platform_id

    def start(self, spec: DynoSpec) -> str:
        container = self.client.containers.create(
            self.image,
            dyno_command(spec),
            environment=dyno_env(spec),
            working_dir="/app",
            **container_options(self.client, spec.size, spec.memory_mb),
            labels=dyno_labels(spec, self.platform_id),
            stop_signal="SIGTERM",
            init=True,  # reaps zombies and forwards signals, as Heroku's dyno init does
        )
        try:
            install_slug(container, spec.slug_path)
            container.start()
        except Exception:
            container.remove(force=True)
            raise
        return container.id

    def list(self) -> list[ObservedDyno]:
        found = []
        mine = [LABEL, f"waka.platform={self.platform_id}"]
        for container in labelled_containers(self.client, mine):
            labels = container.labels
            state = container.attrs.get("State", {})
            running = bool(state.get("Running"))
            ip = address_of(container.attrs)
            found.append(
                observed_from_labels(
                    labels,
                    container_id=container.id,
                    running=running,
                    exit_code=None if running else state.get("ExitCode"),
                    address=(ip, PORT) if running and ip else None,
                    created_at=container.attrs.get("Created", ""),
                    oom_killed=not running and oom_killed(container.attrs),
                )
            )
        return found

    def shutdown(self) -> None:
        """When waka stops, its dynos keep running; the next start adopts them."""

    def stop(self, container_id: str, timeout: int = 10) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds, as on Heroku; then remove it."""
        try:
            container = self.client.containers.get(container_id)
            container.stop(timeout=timeout)
            container.reload()
            code = container.attrs.get("State", {}).get("ExitCode")
            container.remove(force=True)
            return code
        except Exception as error:  # already gone is fine: stopping is idempotent
            log.debug("stop %s: %s", container_id, error)
            return None

    def remove(self, container_id: str) -> None:
        try:
            self.client.containers.get(container_id).remove(force=True)
        except Exception as error:
            log.debug("remove %s: %s", container_id, error)

    def follow_output(
        self, container_id: str, on_line: Callable[[str], None], *, from_now: bool = False
    ) -> None:
        """Stream the dyno's stdout and stderr, line by line, from a thread of its own
        (`from_now`: only new output, for a dyno adopted after a restart of waka)."""
        since = int(time.time()) if from_now else None

        def stream() -> Iterable[bytes]:
            container = self.client.containers.get(container_id)
            return container.logs(stream=True, follow=True, stdout=True, stderr=True, since=since)

        follow_lines(container_id, stream, on_line)


def follow_lines(
    dyno_id: str, stream: Callable[[], Iterable[bytes]], on_line: Callable[[str], None]
) -> None:
    """Hand each line of a dyno's output stream to `on_line`, from a thread of its own, until
    the stream ends (the dyno stopped, or the engine went away)."""

    def pump() -> None:
        try:
            partial = b""
            for chunk in stream():
                partial += chunk
                *lines, partial = partial.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace").rstrip("\r"))
            if partial:
                on_line(partial.decode(errors="replace"))
        except Exception as error:
            log.debug("log stream of %s ended: %s", dyno_id, error)

    threading.Thread(target=pump, name=f"dyno-log-{dyno_id[:8]}", daemon=True).start()


def port_open(address: tuple[str, int], timeout: float = 0.05) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False
