"""End-to-end fixtures: a real `waka up` subprocess, driven by the official Heroku CLI.

- `heroku_cli`: the Heroku CLI binary ($WAKA_HEROKU_CLI, /opt/heroku-cli, or the per-user
  cache). Missing, it skips the tests, except under CI (env CI set), where it fails them.
- `server` (one per test module): `python -m waka up --api-port <free port>` on its own
  temporary WAKA_HOME, with one user whose API key the CLI uses. At the end of the module it
  is stopped with SIGINT, and must exit 0 within 10 s (Ctrl-C stops it cleanly).
- `make_waka`: start more servers (a restart, PostgreSQL); each is stopped the same way.

A `WakaServer` runs the CLI (`heroku(...)`), `waka audit`, `waka users:create`, and opens the
ledger in-process on the same stores (`ledger_app(...)`) for direct checks.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
OWNER_EMAIL = "owner@example.com"
CLI_TIMEOUT = 60
START_TIMEOUT = 20
STOP_TIMEOUT = 10
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def skip_or_fail(message: str) -> NoReturn:
    """Locally a missing service skips; under CI it fails (CI must never pass by skipping)."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- the Heroku CLI -------------------------------------------------------------------------


def find_heroku_cli() -> tuple[Path | None, list[Path]]:
    """The CLI binary to use, and every place that was looked at."""
    if os.environ.get("WAKA_HEROKU_CLI"):
        candidates = [Path(os.environ["WAKA_HEROKU_CLI"]).expanduser()]
    else:
        candidates = [
            Path("/opt/heroku-cli/node_modules/.bin/heroku"),
            Path.home() / ".cache" / "waka-heroku-cli" / "node_modules" / ".bin" / "heroku",
        ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path, candidates
    return None, candidates


@pytest.fixture(scope="session")
def heroku_cli() -> Path:
    path, looked = find_heroku_cli()
    if path is None:
        skip_or_fail(
            "The Heroku CLI was not found (looked at "
            + ", ".join(str(p) for p in looked)
            + "). Install it with `npm install --prefix ~/.cache/waka-heroku-cli heroku@11` "
            "or set WAKA_HEROKU_CLI to its binary."
        )
    assert path is not None
    return path


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def flat(text: str) -> str:
    """CLI messages without the gutter (U+203A) and the ~80-column word wrapping."""
    return " ".join(text.replace("\u203a", " ").split())


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def unique_name(prefix: str) -> str:
    """A valid app name that no other test uses (3-30 characters)."""
    return f"{prefix[:21]}-{secrets.token_hex(4)}"


# --- output parsing -------------------------------------------------------------------------


def section(stdout: str, header: str) -> list[str]:
    """The non-empty lines under `=== header`, up to the next `===` header."""
    lines = stdout.splitlines()
    wanted = f"=== {header}"
    for i, line in enumerate(lines):
        if line.rstrip() == wanted:
            body = []
            for rest in lines[i + 1 :]:
                if rest.startswith("=== "):
                    break
                if rest.strip():
                    body.append(rest)
            return body
    raise AssertionError(f"no {wanted!r} header in:\n{stdout}")


def key_values(lines: list[str]) -> dict[str, str]:
    """`KEY: value` lines (styledObject / config output) as a dict."""
    found = {}
    for line in lines:
        match = re.match(r"^([^:\s][^:]*):\s*(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2).rstrip()
    return found


RELEASE_ROW = re.compile(r"^\s*v(\d+)\s{2,}(.+?)\s{2,}(\S+@\S+)\s{2,}\S")


def release_rows(stdout: str) -> list[tuple[int, str, str]]:
    """`heroku releases` table rows as (version, description, user email), in printed order."""
    rows = []
    for line in stdout.splitlines():
        match = RELEASE_ROW.match(line)
        if match:
            rows.append((int(match.group(1)), match.group(2).strip(), match.group(3)))
    return rows


class AuditLine(NamedTuple):
    at: str
    actor: str
    app: str
    action: str


def parse_audit(stdout: str) -> list[AuditLine]:
    entries = []
    for line in stdout.splitlines():
        if line.strip():
            parts = line.split(None, 3)
            assert len(parts) == 4, f"unexpected audit line: {line!r}"
            entries.append(AuditLine(*parts))
    return entries


# --- the server -----------------------------------------------------------------------------


_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)


def _port_is_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((host, port))
        except OSError as error:
            if family == socket.AF_INET6 and error.errno in _NO_IPV6:
                continue  # no IPv6 loopback here: `waka up` binds 127.0.0.1 only
            return False
    return True


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=64)


def free_port() -> int:
    """A port free on both loopback families (`waka up` binds 127.0.0.1 and ::1), and not
    one of the last handed out here: the kernel may give a port just probed again, and one
    server's API and router on one port made `waka up` fail while the router answered."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT and _port_is_free(port):
            _HANDED_OUT.append(port)
            return port
    raise RuntimeError("could not find a free port on loopback")


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a listening TCP socket on `port` (Linux's /proc): what
    answers on a port just probed free may be another test's server that took it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without settings that would steer waka or the CLI."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WAKA_", "HEROKU_")) and k not in ("FORCE_COLOR", "NO_COLOR")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


class WakaServer:
    """One `waka up` process on a WAKA_HOME (and optionally a PostgreSQL schema)."""

    def __init__(
        self,
        home: Path,
        cli_home: Path,
        heroku_cli: Path,
        database_url: str | None = None,
        database_schema: str | None = None,
    ) -> None:
        self.home = home
        self.cli_home = cli_home
        self.heroku_cli = heroku_cli
        self.database_url = database_url
        self.database_schema = database_schema
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.router_port = 0
        self.rendezvous_port = 0
        self.tls_port = 0  # the API and git over HTTPS
        self.router_tls_port = 0  # apps over HTTPS
        self.extra_env: dict[str, str] = {}
        self.log_path = home.parent / f"{home.name}-up.log"
        self.api_key = ""
        self.email = OWNER_EMAIL
        self._users: dict[str, str] = {}
        (cli_home / ".cache" / "heroku").mkdir(parents=True, exist_ok=True)
        (cli_home / ".cache" / "heroku" / "terms-of-service").touch()

    # --- process ------------------------------------------------------------------------

    def waka_env(self) -> dict[str, str]:
        extra = {"WAKA_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **self.extra_env}
        if self.database_url:
            extra["WAKA_DATABASE_URL"] = self.database_url
            extra["WAKA_DATABASE_SCHEMA"] = self.database_schema or "public"
        return clean_env(**extra)

    def start(self, same_ports: bool = False) -> None:
        """Start `waka up` on free ports (or, `same_ports`, on the ones it had: a restart
        after a crash) and wait until the API answers HTTP."""
        assert self.process is None, "already running"
        for attempt in range(3):  # another process may take the port between probe and bind
            if not same_ports:
                self.port = free_port()
                self.router_port = free_port()
                self.rendezvous_port = free_port()  # parallel servers must not race for 5001
                self.tls_port = free_port()  # nor for 5443
                self.router_tls_port = free_port()  # nor for 8443
            log = self.log_path.open("ab")
            started_at = log.tell()
            log.write(f"--- waka up --api-port {self.port}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "waka",
                    "up",
                    "--api-port",
                    str(self.port),
                    "--router-port",
                    str(self.router_port),
                    "--rendezvous-port",
                    str(self.rendezvous_port),
                    "--api-tls-port",
                    str(self.tls_port),
                    "--router-tls-port",
                    str(self.router_tls_port),
                ],
                cwd=REPO,
                env=self.waka_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C on the test run does not reach it directly
            )
            log.close()
            if self._wait_until_up():
                return
            code = self.process.poll()
            self._kill()
            if (
                code is None
                or attempt == 2
                or same_ports
                or "already in use" not in self.log().lower()
            ):
                raise AssertionError(
                    f"`waka up --api-port {self.port}` did not answer within {START_TIMEOUT} s "
                    f"(exit code {code}). Its output:\n{self.log()}"
                )
            with self.log_path.open("r+b") as log:  # a port taken meanwhile: not waka's fault
                log.truncate(started_at)

    def _wait_until_up(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/account", timeout=2):
                    pass
            except urllib.error.HTTPError:
                pass  # 401 without a key: the API is up
            except OSError:
                time.sleep(0.1)
                continue
            if listens(self.process.pid, self.port):
                return True
            time.sleep(0.1)  # another process answered: this one exits, or takes it later
        return False

    def stop(self) -> int:
        """SIGINT, as Ctrl-C would send; returns the exit code (None-safe: fails on a hang)."""
        assert self.process is not None, "not running"
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"`waka up` did not stop within {STOP_TIMEOUT} s of SIGINT. Its output:\n"
                + self.log()
            ) from None

    def stop_cleanly(self) -> None:
        code = self.stop()
        assert code == 0, f"`waka up` exited with {code} on SIGINT. Its output:\n{self.log()}"
        last_run = self.log().rpartition("--- waka up --api-port")[2]
        assert "waka: stopped" in last_run, self.log()

    def crash(self) -> None:
        """kill -9 `waka up`, as a crash would: nothing of it gets to clean up."""
        self._kill()

    def _kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def remove_dynos(self) -> None:
        """Docker dynos outlive `waka up` (the next start adopts them): a test's are removed
        when it is done with the server, so they don't pile up on the engine."""
        from waka.adapters.runtime import docker_client
        from waka.config import Settings

        client = docker_client()
        if client is None:
            return
        platform_id = Settings(
            home=self.home,
            database_url=self.database_url,
            database_schema=self.database_schema or "public",
        ).platform_id
        mine = {"label": [f"waka.platform={platform_id}"]}
        for container in client.containers.list(all=True, filters=mine, sparse=True):
            with contextlib.suppress(Exception):  # already gone
                container.remove(force=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"

    # --- the operator CLI ---------------------------------------------------------------

    def waka(self, *args: str, check: bool = True) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "waka", *args],
            cwd=REPO,
            env=self.waka_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        result = CliResult(done.returncode, done.stdout, done.stderr)
        if check:
            assert result.returncode == 0, f"waka {' '.join(args)} failed: {result}"
        return result

    def create_user(self, email: str) -> str:
        """`waka users:create EMAIL`; the API key is the last line of its output."""
        if email not in self._users:
            out = self.waka("users:create", email).stdout
            lines = out.strip().splitlines()
            assert lines, f"users:create printed nothing: {out!r}"
            key = lines[-1].strip()
            assert key and " " not in key, f"last line is not an API key: {out!r}"
            self._users[email] = key
        return self._users[email]

    def audit(self, *args: str) -> list[AuditLine]:
        return parse_audit(self.waka("audit", *args).stdout)

    # --- the Heroku CLI -----------------------------------------------------------------

    def heroku_env(self, api_key: str | None = None) -> dict[str, str]:
        url = f"http://localhost:{self.port}"
        # `heroku run` attaches over TLS with waka's own CA (made by `waka up`): trust it.
        ca = self.home / "tls" / "ca.pem"
        trust = {"NODE_EXTRA_CA_CERTS": str(ca)} if ca.is_file() else {}
        return clean_env(
            **trust,
            HOME=str(self.cli_home),
            HEROKU_HOST=url,
            HEROKU_API_KEY=api_key if api_key is not None else self.api_key,
            HEROKU_PARTICLEBOARD_URL=url,
            DISABLE_TELEMETRY="true",
            HEROKU_SKIP_NEW_VERSION_CHECK="true",
            HEROKU_DISABLE_AUTOUPDATE="true",
            TZ="UTC",
        )

    def heroku(
        self,
        *args: str,
        check: bool = True,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> CliResult:
        """Run the Heroku CLI against this server; (returncode, stdout, stderr). `input` is
        fed to its standard input (else it reads nothing)."""
        assert self.process is not None, "the server is not running"
        try:
            done = subprocess.run(
                [str(self.heroku_cli), *args],
                cwd=self.cli_home,  # not a git checkout: apps:create adds no remote
                env={**self.heroku_env(api_key), **(env or {})},
                stdin=subprocess.DEVNULL if input is None else None,
                input=input,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                f"heroku {' '.join(args)} took over {CLI_TIMEOUT} s; "
                f"output: {error.stdout!r} {error.stderr!r}"
            ) from None
        result = CliResult(done.returncode, done.stdout, done.stderr)
        if check:
            assert result.returncode == 0, (
                f"heroku {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    # --- direct ledger checks -----------------------------------------------------------

    @contextlib.contextmanager
    def platform(self) -> Iterator[Any]:
        """The platform bootstrapped in-process on the same stores (a second reader)."""
        from waka.bootstrap import bootstrap
        from waka.config import Settings

        settings = Settings(
            home=self.home,
            database_url=self.database_url,
            database_schema=self.database_schema or "public",
        )
        platform = bootstrap(settings)
        try:
            yield platform
        finally:
            platform.close()

    def app_ids(self, name: str) -> list[str]:
        """Ids of every app that has ever had this name, oldest first (from `waka audit`)."""
        with self.platform() as platform:
            from waka import audit

            ids: list[str] = []
            for entry in audit.query(platform.ledger, app=name):
                if entry.app_id and entry.app_id not in ids:
                    ids.append(entry.app_id)
            return ids

    def ledger_app(self, name: str, index: int = -1) -> Any:
        """The App aggregate, read from the ledger, of the (latest) app named `name`."""
        ids = self.app_ids(name)
        assert ids, f"no app named {name} in the ledger"
        with self.platform() as platform:
            return platform.ledger.get_app(uuid.UUID(ids[index]))


def start_server(
    tmp: Path,
    heroku_cli: Path,
    database_url: str | None = None,
    schema: str | None = None,
    env: dict[str, str] | None = None,
) -> WakaServer:
    server = WakaServer(
        home=tmp / "waka-home",
        cli_home=tmp / "cli-home",
        heroku_cli=heroku_cli,
        database_url=database_url,
        database_schema=schema,
    )
    server.home.mkdir(parents=True, exist_ok=True)
    server.extra_env = dict(env or {})
    STARTED.append(server)
    server.start()
    try:
        server.api_key = server.create_user(OWNER_EMAIL)
    except BaseException:
        server._kill()
        raise
    return server


STARTED: list[WakaServer] = []  # every server this test process started


@pytest.fixture(scope="session", autouse=True)
def _remove_every_dyno_at_the_end() -> Iterator[None]:
    """Also the dynos of servers a test started and stopped by itself."""
    yield
    for server in STARTED:
        if server.process is None:
            server.remove_dynos()


@contextlib.contextmanager
def running_server(
    tmp: Path, heroku_cli: Path, env: dict[str, str] | None = None
) -> Iterator[WakaServer]:
    """`waka up` until the block ends; then stopped with SIGINT and its dynos removed."""
    server = start_server(tmp, heroku_cli, env=env)
    try:
        yield server
    finally:
        try:
            if server.process is not None:
                server.stop_cleanly()
        finally:
            server.remove_dynos()


@pytest.fixture(scope="module")
def server(heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WakaServer]:
    """A running `waka up` shared by the tests of one module; stopped with SIGINT at the end."""
    with running_server(tmp_path_factory.mktemp("waka"), heroku_cli) as server:
        yield server


@pytest.fixture
def make_waka(
    heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WakaServer]]:
    """Start servers of a test's own; any still running at the end is stopped with SIGINT."""
    started: list[WakaServer] = []

    def make(database_url: str | None = None, schema: str | None = None) -> WakaServer:
        server = start_server(tmp_path_factory.mktemp("waka"), heroku_cli, database_url, schema)
        started.append(server)
        return server

    yield make
    try:
        for server in reversed(started):
            if server.process is not None:
                server.stop_cleanly()
    finally:
        for server in started:
            server.remove_dynos()


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture
def pg_schema_url() -> Iterator[tuple[str, str]]:
    """(URL, a fresh schema) on the test PostgreSQL server; the schema is dropped afterwards."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError as error:  # pragma: no cover - psycopg is a dependency
        skip_or_fail(f"psycopg is not installed ({error})")
    url = os.environ.get("WAKA_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    schema = f"e2e_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.Error as error:
        skip_or_fail(
            f"PostgreSQL is not reachable at WAKA_TEST_DATABASE_URL={url!r} ({error}). "
            "Start it (see .ci/run) or point WAKA_TEST_DATABASE_URL at a server."
        )
    try:
        yield url, schema
    finally:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# --- builds: the stack image, git and the HTTP API ------------------------------------------
#
# For the build tests (test_git_push.py, test_builds_api.py): `stack_image` checks that Docker
# and the stack image are there (missing: skip, or fail under CI), `app_repo` makes a git
# repository of a fixture app, `push` runs the real git client against a server, and `Api`
# speaks the Platform API over HTTP.

STACK_IMAGE = "waka/stack:bookworm"
FIXTURE_APPS = REPO / "tests" / "fixtures" / "apps"
GIT_TIMEOUT = 300
GIT_IDENTITY = ("-c", "user.email=dev@example.com", "-c", "user.name=Dev")


@pytest.fixture(scope="session")
def stack_image() -> str:
    """The stack image builds run in; without Docker or the image, skip (fail under CI)."""
    docker = shutil.which("docker")
    if docker is None:
        skip_or_fail(f"The docker client is not installed, so {STACK_IMAGE} can't be checked.")
    try:
        done = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", STACK_IMAGE],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        skip_or_fail("`docker image inspect` did not answer within 60 s: is the engine running?")
    if done.returncode != 0:
        skip_or_fail(
            f"No Docker engine with the stack image {STACK_IMAGE} "
            f"({done.stderr.strip() or done.stdout.strip()}); build it with `waka stack build`."
        )
    return STACK_IMAGE


def git_env(home: Path) -> dict[str, str]:
    """git never prompts and reads no user or system configuration (no credential helper)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("GIT_", "SSH_ASKPASS"))}
    env.update(
        HOME=str(home),
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        LC_ALL="C",
    )
    return env


class GitResult(NamedTuple):
    returncode: int
    output: str  # stdout and stderr together, as the user sees them

    def remote(self) -> list[str]:
        """The `remote:` lines (what the server said), without the prefix and git's padding."""
        return [
            line[len("remote:") :].strip()
            for line in self.output.splitlines()
            if line.startswith("remote:")
        ]


class GitRepo:
    """A work tree driven by the real git client."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.home = path.parent / f".{path.name}-home"
        self.home.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str, check: bool = True, cwd: Path | None = None) -> GitResult:
        try:
            done = subprocess.run(
                ["git", *GIT_IDENTITY, *args],
                cwd=cwd or self.path,
                env=git_env(self.home),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=GIT_TIMEOUT,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                f"git {' '.join(args)} took over {GIT_TIMEOUT} s; output: {error.stdout!r}"
            ) from None
        result = GitResult(done.returncode, done.stdout)
        if check:
            assert result.returncode == 0, f"git {' '.join(args)} failed:\n{result.output}"
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start a git command (e.g. a push) without waiting; output on stdout, merged."""
        return subprocess.Popen(
            ["git", *GIT_IDENTITY, *args],
            cwd=self.path,
            env=git_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def commit_all(self, message: str) -> str:
        self.run("add", "--all")
        self.run("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.run("rev-parse", "HEAD").output.strip()

    def replace_with(self, fixture: str) -> None:
        """Make the work tree the fixture app's files (the .git directory stays)."""
        for entry in self.path.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.copytree(FIXTURE_APPS / fixture, self.path, dirs_exist_ok=True)

    def push(self, url: str, *args: str) -> GitResult:
        """`git push URL ARGS` (default: main); the result, never an assertion."""
        return self.run("push", url, *(args or ("main",)), check=False)


def app_repo(fixture: str, dest: Path, branch: str = "main") -> GitRepo:
    """A new git repository at `dest` holding the fixture app `fixture`, committed once."""
    shutil.copytree(FIXTURE_APPS / fixture, dest)
    repo = GitRepo(dest)
    repo.run("init", "--quiet", f"--initial-branch={branch}")
    repo.commit_all(f"{fixture}: first commit")
    return repo


def git_url(server: WakaServer, app: str, api_key: str | None = None) -> str:
    """The app's git URL with an API key as the password (`api_key=""`: no credentials)."""
    key = server.api_key if api_key is None else api_key
    auth = f"x:{key}@" if key else ""
    return f"http://{auth}localhost:{server.port}/{app}.git"


class Api:
    """The Platform API over HTTP (httpx) with a user's key; JSON in, JSON out."""

    def __init__(self, server: WakaServer, api_key: str | None = None) -> None:
        import httpx

        self.server = server
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}",
            headers={
                "Accept": "application/vnd.heroku+json; version=3",
                "Authorization": f"Bearer {api_key or server.api_key}",
            },
            timeout=60,
        )

    def request(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        wanted = expect or (201 if method == "POST" else 200)
        assert response.status_code == wanted, (
            f"{method} {path}: expected {wanted}, got {response.status_code}: {response.text}"
        )
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def create_app(self, prefix: str) -> str:
        name = unique_name(prefix)
        assert self.request("POST", "/apps", json={"name": name})["name"] == name
        return name

    def releases(self, app: str) -> list[dict[str, Any]]:
        """The app's releases, oldest first."""
        return sorted(self.get(f"/apps/{app}/releases"), key=lambda r: r["version"])

    def current_release(self, app: str) -> dict[str, Any]:
        current = [r for r in self.releases(app) if r["current"]]
        assert len(current) == 1, f"not one current release: {self.releases(app)}"
        return current[0]

    def builds(self, app: str) -> list[dict[str, Any]]:
        """The app's builds, oldest first."""
        return sorted(self.get(f"/apps/{app}/builds"), key=lambda b: b["created_at"])

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def api(server: WakaServer) -> Iterator[Api]:
    """The module server's Platform API, as its owner."""
    client = Api(server)
    try:
        yield client
    finally:
        client.close()
