"""One waka role (`waka api`, `waka router`, `waka worker`) as an OS process on a WAKA_HOME of its
own, sharing one PostgreSQL schema and cipher key with the others: the harness of the e2e tests
of the split roles (shared storage, roles, Logplex across processes, router copies)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .conftest import REPO, START_TIMEOUT, STOP_TIMEOUT, WakaServer, clean_env, free_port

CIPHER_KEY = "zzeYdnolljazeL+6x1rdoOFBDGOmulkSjNV6TXwMW+I="  # every process of one platform


class Role:
    """One `waka api|worker` process on a home of its own (duck-types the WakaServer fields
    the git and API helpers read: port, api_key; and remove_dynos's home and database)."""

    def __init__(self, home: Path, role: str, database_url: str, schema: str) -> None:
        self.home, self.role = home, role
        self.database_url, self.database_schema = database_url, schema
        self.port = free_port() if role in ("api", "router") else 0
        self.api_key = ""
        self.log_path = home.parent / f"{home.name}-{role}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        return clean_env(
            WAKA_HOME=str(self.home),
            WAKA_DATABASE_URL=self.database_url,
            WAKA_DATABASE_SCHEMA=self.database_schema,
            WAKA_CIPHER_KEY=CIPHER_KEY,
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [self.role]
        if self.role in ("api", "router"):
            args += ["--port", str(self.port), "--tls-port", "0"]
        if self.role == "api":
            args += ["--rendezvous-port", str(free_port())]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "waka", *args],
                cwd=REPO,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.role == "api":
            self._wait_until_up()

    def _wait_until_up(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/account", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # 401: up
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"`waka api` did not answer. Its output:\n{self.log()}")

    def create_user(self, email: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "waka", "users:create", email],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip().splitlines()[-1].strip()

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def crash(self) -> None:
        """kill -9, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def heroku_cli_for(api_role: Role, heroku_cli: Path, cli_home: Path) -> WakaServer:
    """The e2e harness's Heroku CLI runner (`.heroku(...)`), pointed at a `waka api` process."""
    server = WakaServer(
        api_role.home, cli_home, heroku_cli, api_role.database_url, api_role.database_schema
    )
    server.port, server.api_key, server.process = api_role.port, api_role.api_key, api_role.process
    return server
