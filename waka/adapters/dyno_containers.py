"""What every dyno container shares, formation and one-off alike: its isolation and its limits.

- Network: every dyno joins one bridge network, `waka-dynos`, made with inter-container
  communication off (`enable_icc=false`): a dyno cannot open a connection to any other dyno, of
  its own app or another's. The router runs on the host and reaches a dyno at its address on
  that bridge (host-to-container traffic is not inter-container); dynos reach the host (the
  router's public ports, the add-on servers) and the outside world through the bridge's
  gateway. Docker keeps one bridge's containers off every other bridge (builds, other stacks).
- User: uid/gid 1000 (`dyno`), as Heroku's dynos run unprivileged, with no capabilities at all
  (a web app binds $PORT > 1024 and needs none), no new privileges (setuid binaries do nothing),
  no mounts of the host and no Docker socket.
- Limits of the size: memory (no swap on top where the host has none), CPU weight, processes.

The slug is copied into the container's own file system with every entry owned by the dyno
user, so /app is writable (and thrown away with the container), as on Heroku; /tmp is the
image's, world-writable and sticky. A `dyno` line is added to the container's /etc/passwd and
/etc/group (the stack image has none), so `whoami`, `id` and getpwuid() work.
"""

from __future__ import annotations

import io
import logging
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from waka.domain import rules

log = logging.getLogger("waka.dynos")

NETWORK = "waka-dynos"
NETWORK_LABEL = "waka.role"  # = dyno-network: `docker network prune --filter label=...` sweeps it
NETWORK_ROLE = "dyno-network"
NO_ICC = "com.docker.network.bridge.enable_icc"
UID = GID = 1000
USER_NAME = "dyno"
# Heroku's words for a dyno the kernel killed at its memory limit (a formation or one-off dyno).
R15 = "Error R15 (Memory quota vastly exceeded)"
_FLUSH_AT = 1 << 20  # bytes of tar buffered before they are handed to Docker


class DynoNetworkError(RuntimeError):
    """The dyno network exists but lets containers talk to each other: dynos are not started."""


_network_lock = threading.Lock()


def dyno_network(client: Any) -> str:
    """The id of the `waka-dynos` network, made here if the engine has none (a CI machine
    starts with no Docker state). Idempotent, and safe when two waka processes race."""
    with _network_lock:
        found = _find_network(client)
        if found is None:
            import docker.errors

            try:
                client.networks.create(
                    NETWORK,
                    driver="bridge",
                    check_duplicate=True,
                    options={NO_ICC: "false"},
                    labels={NETWORK_LABEL: NETWORK_ROLE},
                )
            except docker.errors.APIError as error:  # made by someone else meanwhile?
                found = _find_network(client)
                if found is None:
                    raise DynoNetworkError(
                        f"could not make the Docker network {NETWORK}: {error}"
                    ) from error
            found = found or _find_network(client)
            if found is None:
                raise DynoNetworkError(f"the Docker network {NETWORK} vanished once made")
        options = found.attrs.get("Options") or {}
        if options.get(NO_ICC) != "false":
            raise DynoNetworkError(
                f"the Docker network {NETWORK} lets containers talk to each other: remove it "
                f"(docker network rm {NETWORK}); waka makes it again with {NO_ICC}=false"
            )
        return str(found.id)


def _find_network(client: Any) -> Any | None:
    # The name filter matches substrings; of duplicates (a race on an old engine) the oldest.
    exact = [n for n in client.networks.list(names=[NETWORK]) if n.name == NETWORK]
    exact.sort(key=lambda n: (n.attrs.get("Created", ""), n.id))
    return exact[0] if exact else None


def container_options(client: Any, size: str, memory_mb: int) -> dict[str, Any]:
    """containers.create() arguments that isolate a dyno of `size` and set its limits."""
    return {
        "user": f"{UID}:{GID}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network": dyno_network(client),
        "mem_limit": f"{memory_mb}m",
        "cpu_shares": rules.SIZE_CPU_SHARES.get(size, 1024),
        "pids_limit": rules.SIZE_PROCESSES.get(size, 256),
    }


def address_of(attrs: dict[str, Any]) -> str | None:
    """A container's IPv4 address: on `waka-dynos` (dynos started by an older waka: the
    default bridge, where Docker reports it at the top level)."""
    settings = attrs.get("NetworkSettings") or {}
    networks = settings.get("Networks") or {}
    mine = networks.get(NETWORK) or {}
    if mine.get("IPAddress"):
        return str(mine["IPAddress"])
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    return next((str(n["IPAddress"]) for n in networks.values() if n.get("IPAddress")), None)


def oom_killed(attrs: dict[str, Any]) -> bool:
    """Whether the kernel killed the container's process for going over its memory limit."""
    return bool((attrs.get("State") or {}).get("OOMKilled"))


def install_slug(container: Any, slug_path: Path) -> None:
    """Copy the slug into the created container, owned by the dyno user, and add the user."""
    passwd = _read_file(container, "/etc/passwd")
    group = _read_file(container, "/etc/group")
    extra = {
        "etc/passwd": _with_line(passwd, f"{USER_NAME}:x:{UID}:{GID}::/app:/bin/bash"),
        "etc/group": _with_line(group, f"{USER_NAME}:x:{GID}:"),
    }
    container.put_archive("/", slug_archive(slug_path, extra))


def slug_archive(slug_path: Path, extra: dict[str, bytes] | None = None) -> Iterator[bytes]:
    """The slug (a gzip tarball of app/...) as an uncompressed tar stream whose every entry
    belongs to the dyno user, after /app itself and the `extra` files (owned by root, 0644)."""
    sink = _Sink()
    with (
        slug_path.open("rb") as raw,
        tarfile.open(fileobj=raw, mode="r|*") as source,
        tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out,  # type: ignore[call-overload]
    ):
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
        app = tarfile.TarInfo("app")
        app.type, app.mode = tarfile.DIRTYPE, 0o755
        _own(app)
        out.addfile(app)
        for member in source:
            _own(member)
            out.addfile(member, source.extractfile(member) if member.isreg() else None)
            if sink.size >= _FLUSH_AT:
                yield sink.take()
    yield sink.take()


def _own(info: tarfile.TarInfo) -> None:
    info.uid, info.gid = UID, GID
    info.uname = info.gname = USER_NAME


def _with_line(text: bytes, line: str) -> bytes:
    name = line.split(":", 1)[0].encode()
    if any(row.split(b":", 1)[0] == name for row in text.splitlines()):
        return text
    return text + (b"" if not text or text.endswith(b"\n") else b"\n") + line.encode() + b"\n"


def _read_file(container: Any, path: str) -> bytes:
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.next()
            handle = archive.extractfile(member) if member is not None else None
            return handle.read() if handle is not None else b""
    except Exception as error:  # an image without the file: the dyno user's line alone
        log.debug("reading %s of the stack image: %s", path, error)
        return b""


class _Sink:
    """A write-only file that keeps what is written until it is taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data
