"""Heroku Key-Value Store (Redis) add-ons: one redis-server process of its own per add-on.

Each add-on lives in root/<addon id>/: state.json (port and passwords, chosen once, so the URL
never changes), redis.conf (written from the plan before every start), the pid and log files
and the data (append-only file). The servers daemonize: like a database server they outlive
waka, and `ensure_running` starts one again, on the same port and password, after a reboot or
a kill.

Each server has two users. `default`, whose password is in REDIS_URL, may run every command
but the administrative ones (CONFIG SET, SHUTDOWN, DEBUG, MODULE, REPLICAOF, ACL, ...) and
MIGRATE: an app can neither lift its memory limit nor make the server, which runs as waka's
user, write files elsewhere or connect to other hosts. `waka`, whose password only this
provider knows, checks, inspects and stops the server. ACL rules need Redis 6.2 or later.

With a shared store of provider states (`waka/adapters/addon_states.py`, on PostgreSQL) each
add-on's state is also kept there, with the address other workers reach the server at: the
worker that made it may be dead, or on another host, when another worker checks, changes or
removes it. Such a worker acts on the server where it runs (as `waka`, over TCP), and takes it
over (the same port and passwords, files of its own) only when it is gone and its address is
one of this host's.

Each server also speaks TLS on the next port (a self-signed certificate of its own), as Heroku
Redis did behind stunnel: the CLI's `redis:cli` connects there with TLS for every plan but the
"hobby" ones, so the Data API can report the add-on's real plan. Servers made before this
get one at their next start, if port + 1 is free (else `tls_port` stays null in state.json).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from waka.adapters.addon_states import AddonStates
from waka.addons.catalogue import HEROKU_REDIS, Plan
from waka.addons.provider import ProviderError

log = logging.getLogger("waka.addons.redis")

_ADDON_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a directory name, never ".."
_WILDCARDS = ("0.0.0.0", "::", "*")
# The app's user: everything but administration (and MIGRATE, which dials other hosts); it may
# still read the settings and list its clients, as on Heroku.
_TENANT_RULES = "~* &* +@all -@admin -migrate +config|get +client|list"


@dataclass(frozen=True)
class _Elsewhere:
    """A server another worker runs (it answers as this add-on's `waka` at state.host)."""

    state: _State


@dataclass
class _State:
    port: int
    password: str  # the app's, in REDIS_URL
    admin_password: str  # the provider's own
    tls_port: int | None = None  # port + 1, where the same server speaks TLS
    host: str = "127.0.0.1"  # where the provider reaches it: loopback, where it runs


class RedisProvider:
    service = HEROKU_REDIS

    def __init__(
        self,
        root: Path,
        bind_hosts: tuple[str, ...],
        public_host: str,
        redis_server: str = "redis-server",
        start_timeout: float = 15.0,
        shared: AddonStates | None = None,
    ) -> None:
        self.root = root
        self.shared = shared
        self.bind_hosts = bind_hosts
        self.public_host = public_host
        self.redis_server = redis_server
        self.start_timeout = start_timeout
        self._thread_lock = threading.Lock()

    def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
        _limits(plan)  # a plan without limits fails before anything is made
        with self._lock():
            home = self._home(addon_id)
            state = self._state_here(addon_id, home)
            if isinstance(state, _Elsewhere):
                self._apply_limits(state.state, plan)
                return {"URL": self._url(state.state)}
            if state is None:
                port = self._free_port()
                state = _State(port, secrets.token_hex(24), secrets.token_hex(24), port + 1)
                home.mkdir(mode=0o700, parents=True, exist_ok=True)
                _save_state(home, state)
                self._share(addon_id, state)  # before it starts: a crash leaves no stray server
            self._write_conf(home, state, plan)
            if self._alive(home, state):
                self._wait_ready(home, state)
                self._apply_limits(state, plan)  # a plan change, on the running server
            else:
                self._start(home, state)
        return {"URL": self._url(state)}

    def deprovision(self, addon_id: str) -> None:
        with self._lock():
            home = self._home(addon_id)
            if home.exists():
                self._stop(home, _load_state(home), save=False)
                shutil.rmtree(home)
            elif (shared := self._shared_state(addon_id)) is not None:
                self._stop_elsewhere(shared)  # made by a worker that is gone, or elsewhere
            if self.shared is not None:
                self.shared.delete(addon_id)

    def ensure_running(self, addon_id: str, plan: Plan, config: dict[str, str]) -> None:
        with self._lock():
            home = self._home(addon_id)
            found = self._state_here(addon_id, home)
            if isinstance(found, _Elsewhere):
                self._apply_limits(found.state, plan)
                return
            state = found or self._recover_state(home, config)
            if self._alive(home, state):
                # The plan may have changed: its limits, on the running server and its conf.
                self._write_conf(home, state, plan)
                self._apply_limits(state, plan)
                return
            log.info("starting Redis for add-on %s again on port %s", addon_id, state.port)
            state = self._with_tls_port(home, state)
            self._write_conf(home, state, plan)
            self._start(home, state)

    def tls_port(self, addon_id: str) -> int | None:
        """Where this add-on's server speaks TLS (None: made before servers had a TLS port)."""
        state = _load_state(self._home(addon_id)) or self._shared_state(addon_id)
        return state.tls_port if state is not None else None

    def exists(self, addon_id: str) -> bool:
        return self._home(addon_id).is_dir() or self._shared_state(addon_id) is not None

    def reset(self, addon_id: str) -> None:
        """Every key gone (FLUSHALL), the same server, port and password."""
        with self._lock():
            state = _load_state(self._home(addon_id)) or self._shared_state(addon_id)
            if state is None:
                raise ProviderError(f"add-on {addon_id} has no Redis here", retryable=False)
            try:
                with _admin_session(state) as client:
                    client.command("FLUSHALL")
            except (OSError, _ReplyError) as exc:
                raise ProviderError(f"Redis on port {state.port} did not flush: {exc}") from exc

    def stop_all(self) -> None:
        """Stop every server under root, keeping its data (`ensure_running` brings it back)."""
        if not self.root.is_dir():
            return
        failures = []
        with self._lock():
            for home in sorted(self.root.iterdir()):
                if not (home / "state.json").exists():
                    continue
                try:
                    self._stop(home, _load_state(home), save=True)
                except ProviderError as exc:
                    failures.append(str(exc))
        if failures:
            raise ProviderError("; ".join(failures))

    def info(self, addon_id: str, plan: Plan | None = None) -> list[tuple[str, str]]:
        """A few facts for redis:info; Status "stopped" when the server does not answer."""
        state = _load_state(self._home(addon_id)) or self._shared_state(addon_id)
        if state is None:
            return [("Status", "missing")]
        try:
            with _admin_session(state) as client:
                text = str(client.command("INFO"))
                maxclients = client.command("CONFIG", "GET", "maxclients")
        except (OSError, _ReplyError):
            return [("Status", "stopped")]
        fields = dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#"
        )
        clients = int(fields.get("connected_clients", "1")) - 1  # not counting this one
        limit = maxclients[1] if isinstance(maxclients, list) and len(maxclients) > 1 else "?"
        return [
            ("Status", "available"),
            ("Version", fields.get("redis_version", "?")),
            ("Used memory", fields.get("used_memory_human", "?")),
            (
                "Maxmemory",
                f"{fields.get('maxmemory_human', '?')} ({fields.get('maxmemory_policy', '?')})",
            ),
            ("Clients", f"{clients}/{limit}"),
            ("Persistence", "AOF" if fields.get("aof_enabled") == "1" else "RDB"),
        ]

    # --- the state other workers share ---------------------------------------------------------

    def _share(self, addon_id: str, state: _State) -> None:
        if self.shared is not None:
            self.shared.put(addon_id, asdict(replace(state, host=self.public_host)))

    def _shared_state(self, addon_id: str) -> _State | None:
        if self.shared is None:
            return None
        self._home(addon_id)  # the id is checked as for a directory
        found = self.shared.get(addon_id)
        try:
            return None if found is None else _State(**found)
        except TypeError as exc:
            raise ProviderError(f"add-on {addon_id}'s shared state: {exc}", False) from exc

    def _state_here(self, addon_id: str, home: Path) -> _State | _Elsewhere | None:
        """This worker's state of the add-on; else, from the shared store, the server where
        another worker runs it (_Elsewhere), or that state taken over here (its server is gone
        and its address is this host's); None if there is none anywhere."""
        state = _load_state(home)
        if state is not None:
            return state
        shared = self._shared_state(addon_id)
        if shared is None:
            return None
        if _ping(shared):
            return _Elsewhere(shared)
        if not _is_local_address(shared.host):
            raise ProviderError(
                f"Redis of add-on {addon_id} runs at {shared.host}:{shared.port}, which does "
                "not answer (its worker's host is away?)"
            )
        log.warning("Redis of add-on %s is gone from its worker; starting it here", addon_id)
        state = replace(shared, host="127.0.0.1")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _save_state(home, state)
        return state

    def _stop_elsewhere(self, state: _State) -> None:
        """SHUTDOWN NOSAVE as `waka`, over TCP, of a server another worker started."""
        with contextlib.suppress(OSError, _ReplyError), _admin_session(state) as client:
            client.command("SHUTDOWN", "NOSAVE")
        if not _gone(self.root, state, None, timeout=10):
            raise ProviderError(f"Redis at {state.host}:{state.port} does not stop")

    # --- the server's process ----------------------------------------------------------------

    def _start(self, home: Path, state: _State) -> None:
        try:
            result = subprocess.run(
                [self.redis_server, str(home / "redis.conf")],
                cwd=home,
                stdin=subprocess.DEVNULL,
                capture_output=True,  # errors in the configuration come before it daemonizes
                timeout=30,
                start_new_session=True,  # out of waka's process group: Ctrl-C does not reach it
                check=False,
            )
        except FileNotFoundError as exc:
            raise ProviderError(f"{self.redis_server} is not installed", retryable=False) from exc
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(f"{self.redis_server} did not daemonize within 30 s") from exc
        if result.returncode != 0:
            output = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise ProviderError(
                f"redis-server did not start on port {state.port}: {output or _log_tail(home)}"
            )
        self._wait_ready(home, state)

    def _wait_ready(self, home: Path, state: _State) -> None:
        """Until the server answers PING as `waka`: the password proves it is this add-on's."""
        started = time.monotonic()
        deadline = started + self.start_timeout
        while time.monotonic() < deadline:
            if _ping(state):
                return
            # Gone (port taken, say) rather than still loading its data: no use waiting.
            if time.monotonic() - started > 1 and _pid(home) is None:
                break
            time.sleep(0.05)
        raise ProviderError(
            f"Redis on port {state.port} did not answer within {self.start_timeout:.0f} s: "
            f"{_log_tail(home)}"
        )

    def _alive(self, home: Path, state: _State) -> bool:
        # The pid catches a server still loading its data; PING one whose pidfile is gone.
        return _pid(home) is not None or _ping(state)

    def _stop(self, home: Path, state: _State | None, save: bool) -> None:
        """SHUTDOWN as `waka`, else SIGTERM, else SIGKILL; returns once the server is gone."""
        pid = _pid(home)
        if state is not None:
            # No reply when it works: the server closes the connection as it exits.
            with contextlib.suppress(OSError, _ReplyError), _admin_session(state) as client:
                client.command("SHUTDOWN", "SAVE" if save else "NOSAVE")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if _gone(home, state, pid, timeout=10):
                return
            if pid is not None:
                log.warning("Redis in %s did not stop; sending %s", home, sig.name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if not _gone(home, state, pid, timeout=5):
            raise ProviderError(f"Redis in {home} does not stop")

    def _apply_limits(self, state: _State, plan: Plan) -> None:
        memory_mb, connections = _limits(plan)
        try:
            with _admin_session(state) as client:
                client.command("CONFIG", "SET", "maxmemory", f"{memory_mb}mb")
                client.command("CONFIG", "SET", "maxclients", str(connections))
        except (OSError, _ReplyError) as exc:
            raise ProviderError(
                f"Redis on port {state.port} refused the plan's limits: {exc}"
            ) from exc

    # --- files ---------------------------------------------------------------------------------

    def _home(self, addon_id: str) -> Path:
        if not _ADDON_ID.fullmatch(addon_id):
            raise ProviderError(f"not an add-on id: {addon_id!r}", retryable=False)
        return self.root / addon_id

    def _write_conf(self, home: Path, state: _State, plan: Plan) -> None:
        memory_mb, connections = _limits(plan)

        def path(name: str) -> str:  # a double-quoted string, as redis.conf reads it
            return json.dumps(str(home / name), ensure_ascii=False)

        lines = [
            "# Written by waka before every start of this add-on's server: edits are lost.",
            f"bind {' '.join(self._bind_addresses())}",
            f"port {state.port}",
            "protected-mode yes",
            "daemonize yes",
            f"dir {path('')}",
            f"pidfile {path('redis.pid')}",
            f"logfile {path('redis.log')}",
            "appendonly yes",
            f"maxmemory {memory_mb}mb",
            "maxmemory-policy noeviction",
            f"maxclients {connections}",
            f"user default on >{state.password} {_TENANT_RULES}",
            f"user waka on >{state.admin_password} ~* &* +@all",
        ]
        if state.tls_port is not None:
            _ensure_certificate(home, self.public_host)
            lines += [
                f"tls-port {state.tls_port}",
                f"tls-cert-file {path('tls.crt')}",
                f"tls-key-file {path('tls.key')}",
                "tls-auth-clients no",  # the password authenticates, as on plain TCP
            ]
        _write_private(home / "redis.conf", "\n".join(lines) + "\n")

    def _bind_addresses(self) -> list[str]:
        """The bind hosts this machine has (docker0 may be missing), and always loopback,
        where the provider itself talks to the server."""
        wanted = list(dict.fromkeys(self.bind_hosts))
        if any(host in _WILDCARDS for host in wanted):
            return [host for host in wanted if host in _WILDCARDS]
        addresses = ["127.0.0.1"]
        for host in wanted:
            if host in addresses:
                continue
            if _is_local_address(host):
                addresses.append(host)
            else:
                log.warning("Redis add-ons will not listen on %s: not an address here", host)
        return addresses

    def _with_tls_port(self, home: Path, state: _State) -> _State:
        """A server made before servers had a TLS port gets port + 1 at its next start, if no
        other add-on keeps it and it is free."""
        if state.tls_port is not None or state.port >= 65535:
            return state
        wanted = state.port + 1
        for other in self.root.iterdir():
            with contextlib.suppress(ProviderError):
                theirs = _load_state(other) if other.is_dir() and other != home else None
                if theirs is not None and wanted in (theirs.port, theirs.tls_port):
                    return state
        if not _port_free(wanted):
            return state
        state = replace(state, tls_port=wanted)
        _save_state(home, state)
        self._share(home.name, state)
        return state

    def _free_port(self) -> int:
        """A port, and the next one for TLS, free now and kept by no other add-on (whose
        server may be stopped)."""
        taken = set()
        for home in self.root.iterdir() if self.root.is_dir() else ():
            with contextlib.suppress(ProviderError):  # an unreadable one keeps no port
                state = _load_state(home) if home.is_dir() else None
                if state is not None:
                    taken.update({state.port, state.tls_port})
        while True:
            with socket.socket() as probe:
                probe.bind(("0.0.0.0", 0))
                port = int(probe.getsockname()[1])
            if port < 65535 and not {port, port + 1} & taken and _port_free(port + 1):
                return port

    def _recover_state(self, home: Path, config: dict[str, str]) -> _State:
        """The directory is gone (lost disk, say): a new, empty server behind the same URL."""
        try:
            url = urlsplit(config["URL"])
            port, password = url.port, url.password
        except (KeyError, ValueError) as exc:
            raise ProviderError("the add-on's config has no Redis URL", retryable=False) from exc
        if port is None or not password:
            raise ProviderError("the add-on's Redis URL has no port or password", retryable=False)
        log.warning("Redis add-on in %s had no files; starting it empty", home)
        state = _State(port, password, secrets.token_hex(24))
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _save_state(home, state)
        self._share(home.name, state)
        return state

    def _url(self, state: _State) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"redis://:{state.password}@{host}:{state.port}"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One change at a time under root, across threads and processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.root / ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


def _limits(plan: Plan) -> tuple[int, int]:
    try:
        return int(plan.limits["memory_mb"]), int(plan.limits["connections"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"plan {plan.name} has no memory_mb and connections limits", retryable=False
        ) from exc


def _load_state(home: Path) -> _State | None:
    try:
        return _State(**json.loads((home / "state.json").read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ProviderError(f"{home / 'state.json'} is unreadable: {exc}", retryable=False) from exc


def _save_state(home: Path, state: _State) -> None:
    _write_private(home / "state.json", json.dumps(asdict(state)))


def _write_private(path: Path, text: str) -> None:
    """Readable by waka's user only (it holds passwords); replaced whole, never half-written."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    partial.replace(path)


def _log_tail(home: Path, lines: int = 3) -> str:
    try:
        tail = (home / "redis.log").read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return "no log"
    return " | ".join(tail) or "empty log"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _ensure_certificate(home: Path, host: str) -> None:
    """A self-signed certificate for the server's TLS port, made once. Clients do not verify
    it (the CLI's redis:cli does not); it gives the connection encryption, not identity."""
    if (home / "tls.crt").exists() and (home / "tls.key").exists():
        return
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(home / "tls.key", key_pem.decode())
    _write_private(home / "tls.crt", cert.public_bytes(serialization.Encoding.PEM).decode())


def _is_local_address(host: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


# --- processes -------------------------------------------------------------------------------


def _pid(home: Path) -> int | None:
    """The pid in the pidfile, if that process is alive and a redis-server."""
    try:
        pid = int((home / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_redis(pid) else None


def _is_redis(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to ask: alive is all we know
    # "pid (comm) state ...": a zombie is dead; another command means the pid was reused.
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return comm.startswith("redis") and state != "Z"


def _gone(home: Path, state: _State | None, pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        alive = (pid is not None and _is_redis(pid)) or (
            pid is None and state is not None and _ping(state)
        )
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# --- a tiny RESP2 client: enough for AUTH, PING, INFO, CONFIG and SHUTDOWN ------------------


class _ReplyError(Exception):
    """An error reply (-ERR ..., -WRONGPASS ...) from the server."""


class _Client:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")

    def command(self, *args: str) -> object:
        parts = [arg.encode() for arg in args]
        self._sock.sendall(
            b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        )
        return self._read()

    def _read(self) -> object:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2].decode(errors="replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise _ReplyError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise ConnectionError(f"not a Redis reply: {line[:40]!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


@contextlib.contextmanager
def _admin_session(state: _State) -> Iterator[_Client]:
    client = _Client(state.host, state.port)
    try:
        client.command("AUTH", "waka", state.admin_password)
        yield client
    finally:
        client.close()


def _ping(state: _State) -> bool:
    try:
        with _admin_session(state) as client:
            return client.command("PING") == "PONG"
    except (OSError, _ReplyError):  # refused, closed, or LOADING, or another server's port
        return False
