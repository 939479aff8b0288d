"""waka's roles as processes a fault test kills and restarts: a role is a command line (`waka up
...`, `waka api --port N`, `waka worker`) and an environment. `Deployment` runs a set of roles
on one WAKA_HOME and PostgreSQL, and lends the e2e `WakaServer` its ports, so the real Heroku
CLI and git drive it as they drive `waka up` in tests/e2e."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import OWNER_EMAIL, REPO, WakaServer, free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def waka_has_command(name: str) -> bool:
    """Whether this checkout's `waka` has the subcommand (the split roles came later)."""
    done = subprocess.run(
        [sys.executable, "-m", "waka", name, "--help"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0


@dataclass
class Role:
    """One waka process: `python -m waka ARGS` with an environment, its output in a log."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    http_port: int | None = None  # answers HTTP there once ready (None: running is ready)
    process: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)  # seconds each start took to be ready

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> float:
        """Start it and wait until it is ready; the seconds that took."""
        assert self.process is None, f"{self.name} is already running"
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"--- waka {' '.join(self.args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "waka", *self.args],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(began)
        took = time.monotonic() - began
        self.starts.append(took)
        return took

    def _wait_ready(self, began: float) -> None:
        assert self.process is not None
        while time.monotonic() - began < START_TIMEOUT:
            if self.process.poll() is not None:
                break
            if self.http_port is None:
                if time.monotonic() - began > 1.0:  # it did not die at start
                    return
            elif _answers_http(self.http_port):
                return
            time.sleep(0.05)
        code = self.process.poll()
        self.kill()
        raise AssertionError(
            f"`waka {' '.join(self.args)}` was not ready within {START_TIMEOUT:.0f} s "
            f"(exit code {code}). Its output:\n{self.log()[-6000:]}"
        )

    def kill(self) -> None:
        """kill -9: nothing of it gets to clean up."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> int:
        """SIGINT, as Ctrl-C would send; its exit code."""
        assert self.process is not None, f"{self.name} is not running"
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"`waka {self.name}` did not stop within {STOP_TIMEOUT:.0f} s of SIGINT. "
                f"Its output:\n{self.log()[-6000:]}"
            ) from None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"


def _answers_http(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/account", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 401 without a key: it is up
    except OSError:
        return False


class Deployment:
    """The roles of one waka installation (one WAKA_HOME, one PostgreSQL schema).

    `split=False`: one `waka up`. `split=True`: `waka api`, `waka router` and two copies of
    `waka worker` (leases in PostgreSQL share the work out between them).
    `server` is the e2e WakaServer on the same home and ports: its `heroku(...)`, `waka(...)`
    and `remove_dynos()` work as in tests/e2e."""

    def __init__(
        self,
        tmp: Path,
        heroku_cli: Path,
        database_url: str,
        schema: str = "public",
        env: dict[str, str] | None = None,
        split: bool = False,
        shared_home: bool = False,
    ) -> None:
        self.server = WakaServer(
            home=tmp / "waka-home",
            cli_home=tmp / "cli-home",
            heroku_cli=heroku_cli,
            database_url=database_url,
            database_schema=schema,
        )
        self.server.home.mkdir(parents=True, exist_ok=True)
        self.server.extra_env = dict(env or {})
        server = self.server
        server.port, server.router_port = free_port(), free_port()
        server.rendezvous_port, server.tls_port = free_port(), free_port()
        server.router_tls_port = 0
        self.split = split
        log = tmp / "roles.log"
        self.homes = [server.home]
        if split:
            # Every process a WAKA_HOME of its own (the API's is the server's), as on separate
            # hosts: nothing may depend on another's disk. They share the ledger's key.
            from eventsourcing.cipher import AESCipher

            server.extra_env.setdefault("WAKA_CIPHER_KEY", AESCipher.create_key(num_bytes=32))
        environment = server.waka_env()

        def own_home(role: str) -> dict[str, str]:
            if shared_home:  # several processes of one host, one home
                return environment
            home = tmp / f"home-{role}"
            home.mkdir(exist_ok=True)
            self.homes.append(home)
            return {**environment, "WAKA_HOME": str(home)}

        if split:
            api = ["api", "--port", str(server.port), "--tls-port", str(server.tls_port)]
            api += ["--rendezvous-port", str(server.rendezvous_port)]
            router = ["router", "--port", str(server.router_port), "--tls-port", "0"]
            self.roles = {
                "api": Role("api", api, environment, log, http_port=server.port),
                "router": Role(
                    "router", router, own_home("router"), log, http_port=server.router_port
                ),
                "worker": Role("worker", ["worker"], own_home("worker"), log),
                "worker2": Role("worker2", ["worker"], own_home("worker2"), log),  # a 2nd copy
            }
            self.api_role = "api"
        else:
            up = [
                "up",
                "--api-port",
                str(server.port),
                "--router-port",
                str(server.router_port),
                "--rendezvous-port",
                str(server.rendezvous_port),
                "--api-tls-port",
                str(server.tls_port),
                "--router-tls-port",
                "0",
            ]
            self.roles = {"up": Role("up", up, environment, log, http_port=server.port)}
            self.api_role = "up"
        server.log_path = log

    def start(self) -> None:
        for role in self.roles.values():
            role.start()
        self._lend_process()
        self.server.api_key = self.server.create_user(OWNER_EMAIL)

    def _lend_process(self) -> None:
        # WakaServer.heroku() checks that its server runs: the API's role is that server.
        self.server.process = self.roles[self.api_role].process

    def kill(self, name: str) -> None:
        self.roles[name].kill()
        self._lend_process()

    def restart(self, name: str) -> float:
        """Start a killed role again at once, on the same ports; the seconds until ready."""
        took = self.roles[name].start()
        self._lend_process()
        return took

    def lease_holder(self) -> str:
        """The worker role holding the most leases (leading the managers, or building)."""
        held = lease_holders(self.server.database_url or "")
        workers = [n for n in self.roles if n.startswith("worker")]
        return max(workers, key=lambda n: held.get(self.roles[n].pid or -1, 0))

    def pids(self) -> set[int]:
        return {r.pid for r in self.roles.values() if r.pid is not None}

    def stop(self) -> dict[str, int]:
        """SIGINT to every role (API last); their exit codes."""
        codes = {}
        for name in sorted(self.roles, key=lambda n: n == self.api_role):
            role = self.roles[name]
            if role.process is not None:
                codes[name] = role.stop()
        self.server.process = None
        return codes

    def kill_all(self) -> None:
        for role in self.roles.values():
            with contextlib.suppress(Exception):
                role.kill()
        self.server.process = None

    def log(self) -> str:
        return self.server.log_path.read_text(errors="replace")


def lease_holders(database_url: str) -> dict[int, int]:
    """pid → how many leases (PostgreSQL advisory locks of waka's lease connections) that
    local process holds: the lock's backend's client port, found among /proc's sockets."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.client_port, count(*) FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
            " AND a.application_name = 'waka-leases' GROUP BY a.client_port"
        ).fetchall()
    by_port = {port: count for port, count in rows if port}
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port in by_port:
                    inodes[fields[9]] = by_port[port]
    held: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held[int(proc.name)] = held.get(int(proc.name), 0) + inodes[target[8:-1]]
    return held
