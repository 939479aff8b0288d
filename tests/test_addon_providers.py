"""The add-on providers against real servers: PostgreSQL at $WAKA_TEST_DATABASE_URL, and
redis-server processes of their own under a temporary root.

Add-on ids are fresh uuid4s, so tests running in parallel on the same PostgreSQL server never
meet; every fixture deprovisions (or stops) what its test made. Clients are independent of the
providers: psycopg for PostgreSQL, redis-cli for Redis.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from waka.adapters.addon_states import AddonStates
from waka.adapters.postgres_addons import PostgresProvider
from waka.adapters.redis_addons import RedisProvider
from waka.addons.catalogue import HEROKU_POSTGRESQL, HEROKU_REDIS, Plan
from waka.addons.provider import Provider, ProviderError

PG_PLAN = HEROKU_POSTGRESQL.default_plan  # essential-0: 20 connections
REDIS_PLAN = HEROKU_REDIS.default_plan  # mini: 25 MB, 20 connections


def in_ci() -> bool:  # as tests/conftest.py decides it
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def new_id() -> str:
    return str(uuid.uuid4())


# --- PostgreSQL ------------------------------------------------------------------------------


class RecordingPostgresProvider(PostgresProvider):
    """Remembers what it provisioned, so the fixture can remove all of it."""

    def __init__(self, admin_url: str, public_host: str) -> None:
        super().__init__(admin_url, public_host)
        self.provisioned: list[str] = []

    def provision(self, addon_id: str, plan: Plan = PG_PLAN) -> dict[str, str]:
        self.provisioned.append(addon_id)
        return super().provision(addon_id, plan)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[RecordingPostgresProvider]:
    host = conninfo_to_dict(postgres_url).get("host") or "127.0.0.1"
    provider = RecordingPostgresProvider(postgres_url, public_host=str(host))
    yield provider
    for addon_id in provider.provisioned:
        provider.deprovision(addon_id)
        assert not provider.exists(addon_id)


def role_and_database(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return str(parts.username), parts.path.lstrip("/")


def admin_query(postgres_url: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        return conn.execute(query, params or None).fetchall()


def test_postgres_provider_fills_the_protocol(pg: RecordingPostgresProvider) -> None:
    provider: Provider = pg
    assert provider.service is HEROKU_POSTGRESQL


def test_provision_gives_a_database_the_app_can_use(pg: RecordingPostgresProvider) -> None:
    config = pg.provision(new_id())

    url = urlsplit(config["URL"])
    assert url.scheme == "postgres"  # as Heroku writes DATABASE_URL
    assert (url.hostname, url.port) == (pg.public_host, pg.port)
    with psycopg.connect(config["URL"]) as conn:
        conn.execute("CREATE TABLE widgets (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO widgets (name) VALUES (%s)", ("sprocket",))
        conn.commit()
    with psycopg.connect(config["URL"]) as conn:
        assert conn.execute("SELECT name FROM widgets").fetchall() == [("sprocket",)]


def test_one_addons_credentials_are_refused_by_anothers_database(
    pg: RecordingPostgresProvider,
) -> None:
    first = pg.provision(new_id())["URL"]
    second = pg.provision(new_id())["URL"]
    _, first_database = role_and_database(first)
    second_on_first = urlsplit(second)._replace(path=f"/{first_database}").geturl()

    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(second_on_first, connect_timeout=5)


def test_the_role_is_limited_to_the_plans_connections_and_nothing_more(
    pg: RecordingPostgresProvider, postgres_url: str
) -> None:
    addon_id = new_id()
    role, _ = role_and_database(pg.provision(addon_id)["URL"])

    rows = admin_query(
        postgres_url,
        "SELECT rolconnlimit, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
        " WHERE rolname = %s",
        role,
    )
    assert rows == [(PG_PLAN.limits["connections"], False, False, False)]

    bigger = HEROKU_POSTGRESQL.find_plan("standard-0")
    assert bigger is not None
    pg.provision(addon_id, bigger)  # a plan change converges on the new limit
    rows = admin_query(postgres_url, "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", role)
    assert rows == [(bigger.limits["connections"],)]


def test_provision_again_returns_a_working_url_and_makes_nothing_twice(
    pg: RecordingPostgresProvider, postgres_url: str
) -> None:
    addon_id = new_id()
    first = pg.provision(addon_id)["URL"]
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    again = pg.provision(addon_id)["URL"]

    assert role_and_database(again) == role_and_database(first)
    with psycopg.connect(again) as conn:  # the same database, data intact
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
    role, database = role_and_database(again)
    assert admin_query(postgres_url, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role) == [
        (1,)
    ]
    assert admin_query(
        postgres_url, "SELECT count(*) FROM pg_database WHERE datname = %s", database
    ) == [(1,)]


def test_provision_converges_after_a_crash_between_role_and_database(
    pg: RecordingPostgresProvider, postgres_url: str
) -> None:
    addon_id = new_id()
    _, database = role_and_database(pg.provision(addon_id)["URL"])
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as if it had crashed there
        conn.execute(f'DROP DATABASE "{database}"')

    url = pg.provision(addon_id)["URL"]

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database,)


def test_deprovision_removes_role_and_database_even_with_open_sessions(
    pg: RecordingPostgresProvider, postgres_url: str
) -> None:
    addon_id = new_id()
    url = pg.provision(addon_id)["URL"]
    role, database = role_and_database(url)
    session = psycopg.connect(url, autocommit=True)  # a dyno still connected
    assert pg.exists(addon_id)

    pg.deprovision(addon_id)

    assert not pg.exists(addon_id)
    assert admin_query(postgres_url, "SELECT 1 FROM pg_roles WHERE rolname = %s", role) == []
    assert admin_query(postgres_url, "SELECT 1 FROM pg_database WHERE datname = %s", database) == []
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    pg.deprovision(addon_id)  # again: nothing to do, no error
    pg.deprovision(new_id())  # never provisioned: the same


def test_info_reports_the_databases_facts(pg: RecordingPostgresProvider) -> None:
    addon_id = new_id()
    url = pg.provision(addon_id)["URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE a (x int)")
        conn.execute("CREATE TABLE b (x int)")
        conn.commit()
        facts = dict(pg.info(addon_id, PG_PLAN))

    assert facts["Plan"] == "Essential 0"
    assert facts["Status"] == "Available"
    assert facts["Connections"] == "1/20"
    assert facts["Tables"] == "2"
    assert facts["PG Version"][0].isdigit()
    assert re.fullmatch(r"[\d.]+ (bytes|kB|MB) / 1 GB \([\d.]+%\)", facts["Data Size"])
    assert dict(pg.info(new_id(), PG_PLAN))["Status"] == "Unavailable"


def test_an_unreachable_server_is_a_retryable_provider_error() -> None:
    provider = PostgresProvider("postgresql://postgres:postgres@127.0.0.1:1/postgres", "x")
    with pytest.raises(ProviderError, match=r"127\.0\.0\.1:1 is not available") as raised:
        provider.provision(new_id(), PG_PLAN)
    assert raised.value.retryable


def test_a_refused_login_is_a_provider_error_without_the_password(postgres_url: str) -> None:
    url = urlsplit(postgres_url)
    wrong = url._replace(netloc=f"{url.username}:not-the-password@{url.hostname}:{url.port}")
    provider = PostgresProvider(wrong.geturl(), "x")
    with pytest.raises(ProviderError, match="authentication failed") as raised:
        provider.exists(new_id())
    assert "not-the-password" not in str(raised.value)


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> str:
    found = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if found is None or cli is None:
        message = "redis-server and redis-cli are not installed (scripts/test-deps installs them)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def make_redis(redis_server: str, tmp_path: Path) -> Iterator[Callable[..., RedisProvider]]:
    """Providers under temporary roots; afterwards no redis-server of theirs is left running."""
    made: list[RedisProvider] = []

    def make(
        bind_hosts: tuple[str, ...] = ("127.0.0.1",),
        binary: str = redis_server,
        shared: AddonStates | None = None,
    ) -> RedisProvider:
        provider = RedisProvider(
            tmp_path / f"redis-{len(made)}",
            bind_hosts,
            "127.0.0.1",
            redis_server=binary,
            shared=shared,
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.stop_all()
        for home in provider.root.glob("*/"):
            assert not process_alive(home), f"a redis-server is still running in {home}"


@pytest.fixture
def redis(make_redis: Callable[..., RedisProvider]) -> RedisProvider:
    return make_redis()


def redis_cli(url: str, *command: str, password: bool = True) -> subprocess.CompletedProcess[str]:
    """redis-cli with the URL's host, port and password (its -u sends an empty user name)."""
    parts = urlsplit(url)
    args = ["redis-cli", "--no-auth-warning", "-h", str(parts.hostname), "-p", str(parts.port)]
    if password:
        args += ["-a", str(parts.password)]
    return subprocess.run([*args, *command], capture_output=True, text=True, timeout=10)


def pid_of(provider: RedisProvider, addon_id: str) -> int:
    return int((provider.root / addon_id / "redis.pid").read_text())


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited


def process_alive(home: Path) -> bool:
    try:
        return pid_alive(int((home / "redis.pid").read_text()))
    except (OSError, ValueError):
        return False


def test_redis_provider_fills_the_protocol(redis: RedisProvider) -> None:
    provider: Provider = redis
    assert provider.service is HEROKU_REDIS


def test_provision_gives_a_redis_that_needs_its_password(redis: RedisProvider) -> None:
    url = redis.provision(new_id(), REDIS_PLAN)["URL"]

    parts = urlsplit(url)
    assert parts.scheme == "redis" and parts.username == "" and parts.password
    assert redis_cli(url, "SET", "greeting", "hello").stdout.strip() == "OK"
    assert redis_cli(url, "GET", "greeting").stdout.strip() == "hello"
    assert "NOAUTH" in redis_cli(url, "GET", "greeting", password=False).stdout
    wrong = parts._replace(netloc=f":wrong@{parts.hostname}:{parts.port}").geturl()
    refused = redis_cli(wrong, "GET", "greeting")
    assert "WRONGPASS" in refused.stdout + refused.stderr


def test_the_plans_limits_are_set_and_the_app_cannot_lift_them(redis: RedisProvider) -> None:
    url = redis.provision(new_id(), REDIS_PLAN)["URL"]

    def setting(name: str) -> str:
        return redis_cli(url, "CONFIG", "GET", name).stdout.split()[1]

    assert setting("maxmemory") == str(REDIS_PLAN.limits["memory_mb"] * 1024 * 1024)
    assert setting("maxmemory-policy") == "noeviction"
    assert setting("maxclients") == str(REDIS_PLAN.limits["connections"])
    assert setting("appendonly") == "yes"
    assert "NOPERM" in redis_cli(url, "CONFIG", "SET", "maxmemory", "0").stdout
    assert "NOPERM" in redis_cli(url, "SHUTDOWN", "NOSAVE").stdout
    assert redis_cli(url, "PING").stdout.strip() == "PONG"


def test_two_addons_are_two_servers(redis: RedisProvider) -> None:
    first_id, second_id = new_id(), new_id()
    first = urlsplit(redis.provision(first_id, REDIS_PLAN)["URL"])
    second = urlsplit(redis.provision(second_id, REDIS_PLAN)["URL"])

    assert first.port != second.port
    assert first.password != second.password
    assert pid_of(redis, first_id) != pid_of(redis, second_id)
    redis_cli(first.geturl(), "SET", "owner", "first")
    assert redis_cli(second.geturl(), "GET", "owner").stdout.strip() == ""


def test_provision_again_keeps_the_url_and_the_server(redis: RedisProvider) -> None:
    addon_id = new_id()
    url = redis.provision(addon_id, REDIS_PLAN)["URL"]
    pid = pid_of(redis, addon_id)

    premium = HEROKU_REDIS.find_plan("premium-0")
    assert premium is not None
    assert redis.provision(addon_id, premium)["URL"] == url
    assert pid_of(redis, addon_id) == pid  # not restarted: the new limit is set live
    maxmemory = redis_cli(url, "CONFIG", "GET", "maxmemory").stdout.split()[1]
    assert maxmemory == str(premium.limits["memory_mb"] * 1024 * 1024)


def test_ensure_running_starts_a_killed_server_again(redis: RedisProvider) -> None:
    addon_id = new_id()
    config = redis.provision(addon_id, REDIS_PLAN)
    redis.ensure_running(addon_id, REDIS_PLAN, config)  # running: nothing to do
    pid = pid_of(redis, addon_id)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))
    assert redis_cli(config["URL"], "PING").returncode != 0

    redis.ensure_running(addon_id, REDIS_PLAN, config)

    assert pid_of(redis, addon_id) != pid
    assert redis_cli(config["URL"], "PING").stdout.strip() == "PONG"


def test_stop_all_keeps_the_data_for_the_next_start(redis: RedisProvider) -> None:
    addon_id = new_id()
    config = redis.provision(addon_id, REDIS_PLAN)
    redis_cli(config["URL"], "SET", "kept", "yes")

    redis.stop_all()

    assert not process_alive(redis.root / addon_id)
    assert redis.exists(addon_id)
    redis.ensure_running(addon_id, REDIS_PLAN, config)
    assert redis_cli(config["URL"], "GET", "kept").stdout.strip() == "yes"


def test_ensure_running_brings_back_an_addon_whose_files_are_gone(redis: RedisProvider) -> None:
    addon_id = new_id()
    config = redis.provision(addon_id, REDIS_PLAN)
    redis.stop_all()
    shutil.rmtree(redis.root / addon_id)

    redis.ensure_running(addon_id, REDIS_PLAN, config)

    assert redis_cli(config["URL"], "PING").stdout.strip() == "PONG"  # the same URL works


def test_deprovision_stops_the_server_and_removes_its_files(redis: RedisProvider) -> None:
    addon_id = new_id()
    url = redis.provision(addon_id, REDIS_PLAN)["URL"]
    pid = pid_of(redis, addon_id)
    assert redis.exists(addon_id)

    redis.deprovision(addon_id)

    assert not pid_alive(pid)
    assert not (redis.root / addon_id).exists()
    assert not redis.exists(addon_id)
    assert redis_cli(url, "PING").returncode != 0
    redis.deprovision(addon_id)  # again: nothing to do
    redis.deprovision(new_id())


def test_bind_hosts_this_machine_lacks_are_left_out(
    make_redis: Callable[..., RedisProvider],
) -> None:
    # 198.51.100.7 is a documentation address: no machine has it.
    redis = make_redis(bind_hosts=("198.51.100.7", "127.0.0.1"))
    url = redis.provision(new_id(), REDIS_PLAN)["URL"]
    assert redis_cli(url, "PING").stdout.strip() == "PONG"


def test_info_reports_the_servers_facts(redis: RedisProvider) -> None:
    addon_id = new_id()
    redis.provision(addon_id, REDIS_PLAN)

    facts = dict(redis.info(addon_id))

    assert facts["Status"] == "available"
    assert facts["Maxmemory"] == "25.00M (noeviction)"
    assert facts["Clients"] == "0/20"
    assert facts["Persistence"] == "AOF"
    redis.stop_all()
    assert dict(redis.info(addon_id))["Status"] == "stopped"


def test_a_missing_binary_is_a_provider_error(
    make_redis: Callable[..., RedisProvider], tmp_path: Path
) -> None:
    redis = make_redis(binary=str(tmp_path / "no-such-redis-server"))
    with pytest.raises(ProviderError, match="not installed") as raised:
        redis.provision(new_id(), REDIS_PLAN)
    assert not raised.value.retryable


def test_an_addon_id_cannot_name_a_path_outside_root(redis: RedisProvider) -> None:
    with pytest.raises(ProviderError, match="not an add-on id"):
        redis.provision("../escape", REDIS_PLAN)


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ensure_running_applies_a_changed_plans_connection_limit(
    pg: RecordingPostgresProvider, postgres_url: str
) -> None:
    addon_id = new_id()
    url = pg.provision(addon_id)["URL"]
    bigger = HEROKU_POSTGRESQL.find_plan("standard-0")
    assert bigger is not None
    pg.ensure_running(addon_id, bigger, {"URL": url})
    role, _ = role_and_database(url)
    limit = admin_query(postgres_url, "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", role)
    assert limit == [(bigger.limits["connections"],)]
    with psycopg.connect(url, connect_timeout=5) as conn:  # the same URL still logs in
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ensure_running_applies_a_changed_plans_memory_limit(redis: RedisProvider) -> None:
    addon_id = new_id()
    url = redis.provision(addon_id, HEROKU_REDIS.default_plan)["URL"]
    bigger = HEROKU_REDIS.find_plan("premium-2")
    assert bigger is not None
    redis.ensure_running(addon_id, bigger, {"URL": url})
    maxmemory = redis_cli(url, "CONFIG", "GET", "maxmemory").stdout.split()
    assert maxmemory[-1] == str(bigger.limits["memory_mb"] * 1024 * 1024)
    assert (
        f"maxmemory {bigger.limits['memory_mb']}mb"
        in (redis.root / addon_id / "redis.conf").read_text()
    )


def test_reset_empties_the_database_and_keeps_the_url(pg: RecordingPostgresProvider) -> None:
    addon_id = new_id()
    url = pg.provision(addon_id)["URL"]
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('x')")
        idle = psycopg.connect(url, connect_timeout=5)  # a session reset must end
        pg.reset(addon_id)
        pg.reset(addon_id)  # again: still empty, no error
    idle.close()
    with psycopg.connect(url, connect_timeout=5) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)


def test_kill_connections_ends_the_sessions(pg: RecordingPostgresProvider) -> None:
    addon_id = new_id()
    url = pg.provision(addon_id)["URL"]
    sessions = [psycopg.connect(url, connect_timeout=5) for _ in range(2)]
    assert pg.kill_connections(addon_id) == 2
    for session in sessions:
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        session.close()


def test_redis_reset_flushes_every_key(redis: RedisProvider) -> None:
    addon_id = new_id()
    url = redis.provision(addon_id, HEROKU_REDIS.default_plan)["URL"]
    redis_cli(url, "SET", "k", "v")
    redis.reset(addon_id)
    assert redis_cli(url, "GET", "k").stdout.strip() == ""
