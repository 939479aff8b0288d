"""One-off dynos (`heroku run`, `heroku run:detached`) as Docker containers of the stack image.

Like a formation dyno (waka/adapters/dynos.py) a one-off is a container with the release's slug
copied to /app, the config vars and `DYNO=run.NNNN` in its environment, the same isolation
and the limits of its size (waka/adapters/dyno_containers.py). It is labelled `waka.run=<name>`
and never `waka.dyno`, so the dyno manager, which converges every `waka.dyno` container towards
the formation, leaves it alone.

An attached one-off is created here but started by the rendezvous server once the user's CLI
has connected, after attaching to its stdio, so that no output is lost. A detached one starts
at once and its output goes to the app's log. Either way the container is removed when its
process ends, and its state changes appear in the log as `heroku[run.NNNN]` lines.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waka.adapters.dyno_containers import R15, container_options, install_slug, oom_killed
from waka.adapters.runtime import labelled_containers

log = logging.getLogger("waka.one_off")

LABEL = "waka.run"  # present on every one-off container; `waka.dyno` never is
PORT = 5000
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# As in the formation dynos: the buildpacks' .profile.d scripts set up PATH and friends. The
# command is not exec'd: `heroku run -x` appends `; echo ... $?`, which bash must run after it.
PROFILE = 'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done\n'

LogFn = Callable[[str, str, str, str], None]  # app_id, source ("app"/"heroku"), dyno, message


@dataclass(frozen=True)
class OneOffSpec:
    app_id: str
    app_name: str
    name: str  # run.1234
    command: str
    env: dict[str, str]  # config vars and the user's -e variables
    memory_mb: int
    size: str
    release: int
    slug_path: Path
    attach: bool
    tty: bool


class OneOff:
    """One one-off container: created with its slug in place, started once."""

    def __init__(self, container: Any, spec: OneOffSpec, log_line: LogFn) -> None:
        self.container = container
        self.spec = spec
        self.log_line = log_line
        self._finished = threading.Event()

    @property
    def id(self) -> str:
        return str(self.container.id)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tty(self) -> bool:
        return self.spec.tty

    def attach(self) -> socket.socket:
        """The container's stdin, stdout and stderr as one plain stream socket (hijacked
        from Docker's attach endpoint). Call it before start() to see all the output."""
        raw = self.container.attach_socket(
            params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        sock = getattr(raw, "_sock", raw)
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            raw.close()
            raise RuntimeError("attaching to one-off dynos needs Docker on a unix or TCP socket")
        # A socket of our own: docker-py's response object may close its copy at any time.
        own = sock.dup()
        raw.close()
        sock.close()
        return own

    def decoder(self) -> Callable[[bytes], bytes]:
        """Turns what attach() yields into the bytes the user sees: Docker frames stdout
        and stderr unless the container has a TTY (then it is one raw stream)."""
        return (lambda data: data) if self.tty else FrameDecoder()

    def start(self) -> None:
        self.container.start()
        self.log_line(self.spec.app_id, "heroku", self.name, "State changed from starting to up")
        if self.tty:
            # The user's terminal size (the CLI sends it when it has one), else the classic
            # 80x24 rather than Docker's 0x0, which full-screen programs cannot draw in.
            env = self.spec.env
            try:
                self.container.resize(
                    height=_positive(env.get("LINES"), 24), width=_positive(env.get("COLUMNS"), 80)
                )
            except Exception as error:
                log.debug("resize %s: %s", self.name, error)

    def kill(self) -> None:
        """The user went away: a one-off ends with its connection, as on Heroku."""
        if self._finished.is_set():
            return
        self.log_line(self.spec.app_id, "heroku", self.name, "Stopping process with SIGKILL")
        try:
            self.container.kill()
        except Exception as error:  # it may have ended by itself in the meantime
            log.debug("kill %s: %s", self.name, error)

    def finish(self) -> int | None:
        """Wait for the process to end, log its status, remove the container."""
        try:
            code = int(self.container.wait(timeout=None).get("StatusCode", -1))
        except Exception as error:
            # waka is stopping, or the engine went away: the container stays for recover().
            log.debug("wait %s: %s", self.name, error)
            return None
        if not self._finished.is_set():
            self._finished.set()
            app_id = self.spec.app_id
            if self._oom_killed():  # the kernel killed a process of it at its memory limit
                self.log_line(app_id, "heroku", self.name, R15)
                if code == 137:  # its main process (`heroku run -x` has a shell outlive it)
                    self.log_line(app_id, "heroku", self.name, "Stopping process with SIGKILL")
            self.log_line(app_id, "heroku", self.name, f"Process exited with status {code}")
            self.log_line(app_id, "heroku", self.name, "State changed from up to complete")
        self.discard()
        return code

    def _oom_killed(self) -> bool:
        try:
            self.container.reload()
        except Exception as error:  # removed meanwhile: it cannot say
            log.debug("inspect %s: %s", self.name, error)
            return False
        return oom_killed(self.container.attrs)

    def discard(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception as error:  # already gone is fine
            log.debug("remove %s: %s", self.name, error)


class OneOffDynos:
    def __init__(
        self, client: Any, image: str, platform_id: str, log_line: LogFn, instance: str = ""
    ) -> None:
        self.client = client
        self.image = image
        self.platform_id = platform_id  # several waka installations may share one engine
        self.instance = instance  # the API process that attaches (and recovers) them
        self.log_line = log_line

    def create(self, spec: OneOffSpec) -> OneOff:
        env = {
            **spec.env,
            "PORT": str(PORT),
            "DYNO": spec.name,
            "PS": spec.name,
            "HOME": "/app",
            "PATH": PATH,
        }
        container = self.client.containers.create(
            self.image,
            ["bash", "-c", PROFILE + spec.command],
            environment=env,
            working_dir="/app",
            **container_options(self.client, spec.size, spec.memory_mb),
            tty=spec.tty,
            # With stdin open docker-py also sets StdinOnce: Docker closes the process's stdin
            # when the attached client half-closes its side (the user's input ended), rather
            # than ending the whole attachment.
            stdin_open=spec.attach,
            labels=one_off_labels(spec, self.platform_id, self.instance),
            init=True,  # reaps zombies and forwards signals, as Heroku's dyno init does
        )
        one_off = OneOff(container, spec, self.log_line)
        try:
            install_slug(container, spec.slug_path)
        except Exception:
            one_off.discard()
            raise
        self.log_line(
            spec.app_id, "heroku", spec.name, f"Starting process with command `{spec.command}`"
        )
        return one_off

    def run_detached(self, spec: OneOffSpec) -> OneOff:
        """Start it now; its output goes to the app's log until it ends (on a thread)."""
        one_off = self.create(spec)
        try:
            one_off.start()
        except Exception:
            one_off.discard()
            raise
        self._follow(one_off)
        return one_off

    def names_in_use(self, app_id: str) -> set[str]:
        return {c.labels.get(LABEL, "") for c in self._mine(app_id)}

    def dynos_of(self, app_id: str) -> list[dict[str, Any]]:
        """The app's one-offs in the shape of DynoManager.dynos_of (for `heroku ps`)."""
        shown = []
        for container in self._mine(app_id):
            labels = container.labels
            shown.append(
                {
                    "name": labels.get(LABEL, ""),
                    "type": "run",
                    "command": labels.get("waka.command", ""),
                    "release": int(labels.get("waka.release") or 0),
                    "size": labels.get("waka.size", ""),
                    "created_at": container.attrs.get("Created", ""),
                    "state": "up" if container.status == "running" else "starting",
                    "container_id": container.id,
                }
            )
        return sorted(shown, key=lambda d: d["name"])

    def recover(self) -> None:
        """After a restart of waka: an attached one-off has lost its user (remove it); a
        detached one still running is followed again, a finished one removed."""
        for container in self._mine():
            labels = container.labels
            if labels.get("waka.instance", "") != self.instance:
                continue  # another API process's (copies of the API share the engine)
            spec = spec_from_labels(labels)
            one_off = OneOff(container, spec, self.log_line)
            if labels.get("waka.attach") == "1" or container.status != "running":
                one_off.discard()
            else:
                self._follow(one_off, since=int(time.time()))

    def _follow(self, one_off: OneOff, since: int | None = None) -> None:
        spec = one_off.spec

        def pump() -> None:
            try:
                partial = b""
                for chunk in one_off.container.logs(
                    stream=True, follow=True, stdout=True, stderr=True, since=since
                ):
                    partial += chunk
                    *lines, partial = partial.split(b"\n")
                    for line in lines:
                        text = line.decode(errors="replace").rstrip("\r")
                        self.log_line(spec.app_id, "app", spec.name, text)
                if partial:
                    self.log_line(spec.app_id, "app", spec.name, partial.decode(errors="replace"))
            except Exception as error:
                log.debug("output of %s ended: %s", spec.name, error)
            one_off.finish()

        threading.Thread(target=pump, name=f"one-off-{spec.name}", daemon=True).start()

    def _mine(self, app_id: str | None = None) -> list[Any]:
        labels = [LABEL, f"waka.platform={self.platform_id}"]
        if app_id is not None:
            labels.append(f"waka.app={app_id}")
        return labelled_containers(self.client, labels)


def _positive(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else default


def one_off_labels(spec: OneOffSpec, platform_id: str, instance: str) -> dict[str, str]:
    """What a one-off's container (or Swarm service) says of it; never `waka.dyno`, so the
    dyno manager leaves it alone. `spec_from_labels` reads them back after a restart."""
    return {
        LABEL: spec.name,
        "waka.platform": platform_id,
        "waka.instance": instance,
        "waka.app": spec.app_id,
        "waka.app_name": spec.app_name,
        "waka.command": spec.command,
        "waka.release": str(spec.release),
        "waka.size": spec.size,
        "waka.attach": "1" if spec.attach else "0",
    }


def spec_from_labels(labels: dict[str, str]) -> OneOffSpec:
    return OneOffSpec(
        app_id=labels.get("waka.app", ""),
        app_name=labels.get("waka.app_name", ""),
        name=labels.get(LABEL, ""),
        command=labels.get("waka.command", ""),
        env={},
        memory_mb=0,
        size=labels.get("waka.size", ""),
        release=int(labels.get("waka.release") or 0),
        slug_path=Path(),
        attach=labels.get("waka.attach") == "1",
        tty=False,
    )


class FrameDecoder:
    """Docker's attach stream without a TTY: frames of an 8-byte header (stream, 0, 0, 0,
    big-endian length) and a payload of stdout or stderr. The user's terminal gets both."""

    def __init__(self) -> None:
        self.buffer = b""

    def __call__(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while len(self.buffer) >= 8:
            (size,) = struct.unpack(">I", self.buffer[4:8])
            if len(self.buffer) < 8 + size:
                break
            out.append(self.buffer[8 : 8 + size])
            self.buffer = self.buffer[8 + size :]
        return b"".join(out)


def docker_one_offs(platform_id: str, log_line: LogFn, instance: str = "") -> OneOffDynos | None:
    """One-off dynos on the local engine, or None without Docker or the stack image."""
    from waka.adapters.runtime import docker_client
    from waka.adapters.stack import STACK_IMAGE, image_exists

    client = docker_client()
    if client is None or not image_exists(client, STACK_IMAGE):
        return None
    return OneOffDynos(client, STACK_IMAGE, platform_id, log_line, instance)
