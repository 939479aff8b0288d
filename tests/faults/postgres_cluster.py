"""A PostgreSQL cluster of the fault suite's own: initdb into a temporary directory, on a free
port, so a test may restart it (fast or immediate) without touching the machine's server that
other tests share."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT = 30


def pg_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or the PATH's."""
    if PG_ROOT.is_dir():
        versions = sorted(
            (p for p in PG_ROOT.iterdir() if (p / "bin" / "initdb").is_file()),
            key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()],
        )
        if versions:
            return versions[-1] / "bin"
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """initdb, start, restart, stop; as the `postgres` user when run as root (the server
    refuses to run as root)."""

    def __init__(self, port: int) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's initdb is not installed")
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="waka-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed: {done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self._check(done, "initdb")
        # Fast and still crash-safe for a server process's death: fsync off only risks what an
        # OS crash would lose; synchronous_commit stays on, so an acknowledged commit is in the
        # WAL (the OS's page cache) when `pg_ctl -m immediate` kills the server.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        self._check(self._ctl("start"), "pg_ctl start")

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m fast|immediate`: every connection is cut."""
        self._check(self._ctl("restart", "-m", mode), f"pg_ctl restart -m {mode}")

    def stop(self, mode: str = "fast") -> None:
        self._check(self._ctl("stop", "-m", mode), f"pg_ctl stop -m {mode}")

    def _ctl(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(
            "pg_ctl",
            action,
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(START_TIMEOUT),
            *args,
            timeout=START_TIMEOUT + 30,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port))
            if done.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL on port {self.port} not ready within {timeout} s")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
