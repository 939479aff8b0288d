"""One-off dynos (`heroku run`, `heroku run:detached`) as Swarm services (WAKA_RUNTIME=swarm).

A one-off is a service of one replica, restart condition `none`, from the release's image
(waka/adapters/release_images.py), with the limits, user and app network of a formation dyno
(waka/adapters/swarm_dynos.py). It is labelled `waka.run=<name>` and never `waka.dyno`, so the
dyno manager leaves it alone; `waka.instance` names the API process that owns it.

Detached: the service runs the command (`bash -c`, after the .profile.d scripts); its output
reaches the app's log through the manager's service logs; when its task ends its status is
logged and the service removed.

Attached: the manager cannot attach to a container on another node, so, as on Heroku, the dyno
connects back. The service runs a small relay (the stack's python3, stdlib only) that opens a
TCP connection to this API process's callback listener (on the host's address towards the
Swarm), sends a one-time token, waits for a go byte, then runs the command: without a TTY with
the connection as its stdin, stdout and stderr (a half-close of the connection is the end of
its input), with a TTY under a pseudo-terminal of the user's size, relaying until the process
exits, then exits with its status. The rendezvous server bridges the user's CLI to that
connection exactly as to a local container's attach stream.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waka.adapters.dynos import DynoSpec, dyno_command, dyno_env
from waka.adapters.one_off import LABEL, LogFn, OneOffSpec, one_off_labels, spec_from_labels
from waka.adapters.swarm_dynos import ALIVE, SwarmDynos

if TYPE_CHECKING:
    import docker

log = logging.getLogger("waka.one_off")

CONNECT_TIMEOUT = 120.0  # seconds an attached one-off may take to be placed, pulled and call back
TOKEN_TIMEOUT = 10.0  # seconds a connection to the listener may take to say its token
FINISH_WAIT = 30.0  # seconds a task may take to end once its output has
GO = b"\x01"
RELAY_ENV = "WAKA_RELAY"  # host:port of the callback listener
TOKEN_ENV = "WAKA_RELAY_TOKEN"

# The relay, run as `python3 -c RELAY pipe|tty COMMAND...`. It takes its address and token out
# of the environment before the command runs, so the command never sees them.
RELAY = r"""
import os, select, signal, socket, sys, time
address, token = os.environ.pop("WAKA_RELAY"), os.environ.pop("WAKA_RELAY_TOKEN")
host, port = address.rsplit(":", 1)
for attempt in range(20):
    try:
        conn = socket.create_connection((host, int(port)), timeout=10)
        break
    except OSError as error:
        failure = error
        time.sleep(0.5)
else:
    sys.exit("waka relay: cannot reach waka at %s: %s" % (address, failure))
conn.settimeout(None)
conn.sendall(token.encode() + b"\n")
del token
if conn.recv(1) != b"\x01":
    sys.exit(1)  # waka discarded it: nobody attached
mode, command = sys.argv[1], sys.argv[2:]

def status(raw):
    code = os.waitstatus_to_exitcode(raw)
    return code if code >= 0 else 128 - code

def hang_up():
    try:
        conn.shutdown(socket.SHUT_RDWR)  # the output ends here, whoever else holds it
    except OSError:
        pass

if mode == "pipe":
    fd = conn.fileno()
    pid = os.fork()
    if pid == 0:
        for target in (0, 1, 2):
            os.dup2(fd, target)
        conn.close()
        os.execvp(command[0], command)
    _, raw = os.waitpid(pid, 0)
    hang_up()
    sys.exit(status(raw))

import fcntl, pty, struct, termios
pid, master = pty.fork()
if pid == 0:
    conn.close()
    def size(name, default):
        value = os.environ.get(name, "")
        return int(value) if value.isdigit() and int(value) > 0 else default
    winsize = struct.pack("HHHH", size("LINES", 24), size("COLUMNS", 80), 0, 0)
    fcntl.ioctl(0, termios.TIOCSWINSZ, winsize)
    os.execvp(command[0], command)
user = True
raw = None
while True:
    if raw is None:
        done, raw_status = os.waitpid(pid, os.WNOHANG)
        if done:
            raw = raw_status
    watched = [master] + ([conn] if user else [])
    readable = select.select(watched, [], [], 0 if raw is not None else 0.5)[0]
    if master in readable:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""  # EIO: every end of the terminal is closed
        if not data:
            break
        if user:
            try:
                conn.sendall(data)
            except OSError:
                user = False
                os.kill(pid, signal.SIGHUP)
    elif raw is not None:
        break  # the process has ended and its output is all read
    if user and conn in readable:
        data = conn.recv(65536)
        if data:
            try:
                os.write(master, data)
            except OSError:
                pass
        else:
            user = False  # the user went away: hang up, as a terminal does
            os.kill(pid, signal.SIGHUP)
if raw is None:
    _, raw = os.waitpid(pid, 0)
hang_up()
sys.exit(status(raw))
"""


class CallbackListener:
    """Where the relays of attached one-offs connect back to this API process: a TCP port on
    the host's address towards the Swarm. A connection must first say a token it was given
    (one time each); anything else is closed."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.sock = socket.create_server((host, port), family=family, backlog=64)
        except OSError as error:
            if error.errno != errno.EADDRNOTAVAIL:
                raise
            # The nodes reach this host at an address it does not have (NAT): every one.
            any_address = "::" if family == socket.AF_INET6 else "0.0.0.0"
            self.sock = socket.create_server((any_address, port), family=family, backlog=64)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self._expected: dict[bytes, Arrival] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="one-off-callbacks", daemon=True).start()

    def expect(self) -> tuple[str, Arrival]:
        """A new token and where its connection will arrive."""
        token = secrets.token_urlsafe(32)
        arrival = Arrival()
        with self._lock:
            self._expected[_digest(token)] = arrival
        arrival.forget = lambda: self._forget(token)
        return token, arrival

    def _forget(self, token: str) -> None:
        with self._lock:
            self._expected.pop(_digest(token), None)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._greet, args=(conn,), daemon=True).start()

    def _greet(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(TOKEN_TIMEOUT)
            line = b""
            while not line.endswith(b"\n") and len(line) < 128:
                chunk = conn.recv(128 - len(line))
                if not chunk:
                    break
                line += chunk
            with self._lock:
                arrival = self._expected.pop(_digest(line.strip().decode("ascii", "replace")), None)
            if arrival is None or not line.endswith(b"\n"):
                conn.close()
                return
            conn.settimeout(None)
            arrival.arrived(conn)
        except OSError:
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.sock.close()


@dataclass
class Arrival:
    """The connection of one relay, once it has called back."""

    sock: socket.socket | None = None
    event: threading.Event = field(default_factory=threading.Event)
    forget: Callable[[], None] = lambda: None

    def arrived(self, conn: socket.socket) -> None:
        self.sock = conn
        self.event.set()


def _digest(token: str) -> bytes:
    # Looked up by digest, so the lookup's timing tells nothing about the tokens held.
    return hashlib.sha256(token.encode()).digest()


class SwarmOneOff:
    """One one-off service; for an attached one, what the rendezvous server drives."""

    def __init__(
        self,
        owner: SwarmOneOffDynos,
        service_id: str,
        spec: OneOffSpec,
        arrival: Arrival | None = None,
    ) -> None:
        self.owner = owner
        self.service_id = service_id
        self.spec = spec
        self.arrival = arrival
        self._ended = False
        self._code: int | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tty(self) -> bool:
        return self.spec.tty

    def attach(self) -> socket.socket:
        """The relay's connection once it has called back (it then runs the command)."""
        assert self.arrival is not None, "a detached one-off has nothing to attach to"
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            while not self.arrival.event.wait(1.0):
                state, error = self.owner.task_state(self.service_id)
                if state not in ALIVE:
                    raise RuntimeError(
                        f"{self.name} ended before it could start ({_said(state, error)})"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not call back within {CONNECT_TIMEOUT:.0f} s (its "
                        f"task is {_said(state, error)}; can the Swarm's nodes reach "
                        f"{self.owner.callback_address}?)"
                    )
        finally:
            self.arrival.forget()
        sock = self.arrival.sock
        assert sock is not None
        sock.sendall(GO)
        return sock

    def decoder(self) -> Callable[[bytes], bytes]:
        return lambda data: data  # the relay's connection carries the bytes as they are

    def start(self) -> None:
        self.owner.log_line(
            self.spec.app_id, "heroku", self.name, "State changed from starting to up"
        )

    def kill(self) -> None:
        """The user went away: the process ends with its connection, as on Heroku."""
        with self._lock:
            if self._ended:
                return
        self.owner.log_line(self.spec.app_id, "heroku", self.name, "Stopping process with SIGKILL")
        self._end()

    def finish(self) -> int | None:
        """Wait for the task to end, log its status, remove the service."""
        deadline = time.monotonic() + FINISH_WAIT
        while time.monotonic() < deadline and not self._ended:
            state, _ = self.owner.task_state(self.service_id)
            if state not in ALIVE:
                break
            time.sleep(0.2)
        return self._end()

    def _end(self) -> int | None:
        """Stop the task if it still runs (its stop signal: SIGKILL for an attached one),
        log how it ended, remove the service: once."""
        with self._lock:
            if not self._ended:
                self._ended = True
                self._code = self.owner.dynos.stop(self.service_id, timeout=0)
                if self._code is not None:
                    app_id, log_line = self.spec.app_id, self.owner.log_line
                    log_line(
                        app_id, "heroku", self.name, f"Process exited with status {self._code}"
                    )
                    log_line(app_id, "heroku", self.name, "State changed from up to complete")
                # Its connection is the rendezvous server's once attached: closed there.
            return self._code

    def discard(self) -> None:
        """Remove it unrun (nobody attached, or it could not start)."""
        if self.arrival is not None:
            self.arrival.forget()
            if self.arrival.sock is not None:
                self.arrival.sock.close()
        self.owner.dynos.remove(self.service_id)


class SwarmOneOffDynos:
    """The interface of OneOffDynos (waka/adapters/one_off.py), on a Swarm."""

    def __init__(
        self,
        dynos: SwarmDynos,
        callback_host: str,
        platform_id: str,
        log_line: LogFn,
        instance: str = "",
        callback_port: int = 0,
        lister: docker.DockerClient | None = None,
    ) -> None:
        self.dynos = dynos  # the formation's runtime: its manager client, images and networks
        self.client = dynos.client
        # `heroku ps` asks the manager for one-offs through a client of its own with a short
        # timeout: a manager lost (connecting fails only once ARP gives up) or swamped must not
        # hold the answer for the main client's 60 s; ps then shows the formation's dynos.
        self.lister = lister or dynos.client
        self.callback_host = callback_host  # this host's address towards the Swarm's nodes
        self.callback_port = callback_port
        self.platform_id = platform_id
        self.instance = instance
        self.log_line = log_line
        self._listener: CallbackListener | None = None
        self._lock = threading.Lock()

    @property
    def listener(self) -> CallbackListener:
        with self._lock:
            if self._listener is None:
                self._listener = CallbackListener(self.callback_host, self.callback_port)
            return self._listener

    @property
    def callback_address(self) -> str:
        return self.listener.address

    # --- starting -----------------------------------------------------------------------------

    def create(self, spec: OneOffSpec) -> SwarmOneOff:
        """An attached one-off: its service starts now and calls back; the command runs once
        the rendezvous server attaches (so no output is lost)."""
        token, arrival = self.listener.expect()
        command = [
            "python3",
            "-c",
            RELAY,
            "tty" if spec.tty else "pipe",
            *dyno_command(_as_dyno(spec)),
        ]
        env = {RELAY_ENV: self.listener.address, TOKEN_ENV: token}
        try:
            service_id = self._service(spec, command, env, stop_signal="SIGKILL")
        except Exception:
            arrival.forget()
            raise
        return SwarmOneOff(self, service_id, spec, arrival)

    def run_detached(self, spec: OneOffSpec) -> SwarmOneOff:
        """Start it now; its output goes to the app's log until it ends."""
        one_off = SwarmOneOff(
            self, self._service(spec, dyno_command(_as_dyno(spec)), {}, stop_signal="SIGTERM"), spec
        )
        self.log_line(spec.app_id, "heroku", spec.name, "State changed from starting to up")
        self._follow(one_off)
        return one_off

    def _service(
        self, spec: OneOffSpec, command: list[str], extra_env: dict[str, str], stop_signal: str
    ) -> str:
        service_id = self.dynos.create_service(
            spec.app_id,
            spec.name,
            self.dynos.images.of(spec.slug_path),
            command,
            {**dyno_env(_as_dyno(spec)), **extra_env},
            one_off_labels(spec, self.platform_id, self.instance),
            spec.size,
            spec.memory_mb,
            stop_signal=stop_signal,
            publish=False,
        )
        self.log_line(
            spec.app_id, "heroku", spec.name, f"Starting process with command `{spec.command}`"
        )
        return service_id

    # --- observing ----------------------------------------------------------------------------

    def task_state(self, service_id: str) -> tuple[str, str]:
        """The state of the service's newest task and what Swarm says of it ("gone" once the
        service is)."""
        try:
            tasks = self.client.api.tasks(filters={"service": service_id})
        except Exception as error:
            log.debug("tasks of %s: %s", service_id, error)
            return "gone", str(error)
        if not tasks:
            try:
                self.client.api.inspect_service(service_id)
            except Exception:
                return "gone", ""
            return "new", ""
        status = _newest(tasks).get("Status") or {}
        return str(status.get("State", "new")), str(
            status.get("Err") or status.get("Message") or ""
        )

    def names_in_use(self, app_id: str) -> set[str]:
        return {(s["Spec"].get("Labels") or {}).get(LABEL, "") for s in self._mine(app_id)}

    def dynos_of(self, app_id: str) -> list[dict[str, Any]]:
        """The app's one-offs in the shape of DynoManager.dynos_of (for `heroku ps`), with the
        node each runs on."""
        try:
            return self._shown(app_id)
        except Exception as error:  # the manager is unreachable: `heroku ps` shows the rest
            log.warning("one-offs of %s not listed: %s", app_id, error)
            return []

    def _shown(self, app_id: str) -> list[dict[str, Any]]:
        services = self._mine(app_id, self.lister)
        if not services:
            return []
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in self.lister.api.tasks(filters={"service": [s["ID"] for s in services]}):
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        newest = {service_id: _newest(tasks) for service_id, tasks in by_service.items()}
        nodes = {n["ID"]: n for n in self.lister.api.nodes()}
        shown = []
        for service in services:
            labels = service["Spec"].get("Labels") or {}
            task = newest.get(service["ID"]) or {}
            node = nodes.get(task.get("NodeID", "")) or {}
            state = (task.get("Status") or {}).get("State", "new")
            shown.append(
                {
                    "name": labels.get(LABEL, ""),
                    "type": "run",
                    "command": labels.get("waka.command", ""),
                    "release": int(labels.get("waka.release") or 0),
                    "size": labels.get("waka.size", ""),
                    "created_at": service.get("CreatedAt", ""),
                    "state": "up" if state == "running" else "starting",
                    "container_id": service["ID"],
                    "host": str((node.get("Description") or {}).get("Hostname", "")),
                    "address": None,
                }
            )
        return sorted(shown, key=lambda d: d["name"])

    def recover(self) -> None:
        """After a restart of waka: an attached one-off has lost its user (remove it); a
        detached one still running is followed again, a finished one removed."""
        for service in self._mine():
            labels = service["Spec"].get("Labels") or {}
            if labels.get("waka.instance", "") != self.instance:
                continue  # another API process's
            one_off = SwarmOneOff(self, service["ID"], spec_from_labels(labels))
            state, _ = self.task_state(service["ID"])
            if labels.get("waka.attach") == "1" or state not in ALIVE:
                one_off.discard()
            else:
                self._follow(one_off, from_now=True)

    # --- detached -----------------------------------------------------------------------------

    def _follow(self, one_off: SwarmOneOff, from_now: bool = False) -> None:
        """Its output to the app's log; once its task has ended and its last lines are in,
        its status, and the service removed."""
        spec = one_off.spec
        last_line = [time.monotonic()]

        def on_line(line: str) -> None:
            last_line[0] = time.monotonic()
            self.log_line(spec.app_id, "app", spec.name, line)

        self.dynos.follow_output(one_off.service_id, on_line, from_now=from_now)

        def watch() -> None:
            while True:
                state, _ = self.task_state(one_off.service_id)
                if state not in ALIVE:
                    break
                time.sleep(1.0)
            # Service logs come through the manager a moment after the task ends.
            ended = time.monotonic()
            while time.monotonic() - last_line[0] < 1.0 and time.monotonic() - ended < 5.0:
                time.sleep(0.2)
            time.sleep(1.0)
            one_off._end()

        threading.Thread(target=watch, name=f"one-off-{spec.name}", daemon=True).start()

    def _mine(
        self, app_id: str | None = None, client: docker.DockerClient | None = None
    ) -> list[dict[str, Any]]:
        labels = [LABEL, f"waka.platform={self.platform_id}"]
        if app_id is not None:
            labels.append(f"waka.app={app_id}")
        return list((client or self.client).api.services(filters={"label": labels}))


def _newest(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return max(
        tasks, key=lambda t: (t.get("CreatedAt", ""), int((t.get("Version") or {}).get("Index", 0)))
    )


def _said(state: str, error: str) -> str:
    return f"{state}: {error}" if error else state


def _as_dyno(spec: OneOffSpec) -> DynoSpec:
    """The one-off as a dyno, for the environment and command every dyno gets."""
    return DynoSpec(
        app_id=spec.app_id,
        app_name=spec.app_name,
        name=spec.name,
        process_type="run",
        command=spec.command,
        release=spec.release,
        generation=0,
        env=spec.env,
        memory_mb=spec.memory_mb,
        size=spec.size,
        slug_path=spec.slug_path,
    )
