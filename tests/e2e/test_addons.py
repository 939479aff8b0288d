"""Add-ons end to end: the real Heroku CLI, real PostgreSQL and Redis servers, a pushed app in
Docker dynos that writes and reads through its DATABASE_URL and REDIS_URL, reached through the
router; isolation between apps; and nothing left on the servers once the app is destroyed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from .conftest import (
    DEFAULT_TEST_DATABASE_URL,
    Api,
    WakaServer,
    app_repo,
    flat,
    git_url,
    key_values,
    release_rows,
    running_server,
    unique_name,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

ADMIN_URL = os.environ.get("WAKA_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


@pytest.fixture(scope="module")
def server(heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WakaServer]:
    """`waka up` whose Heroku Postgres add-ons live on the test PostgreSQL server."""
    tmp = tmp_path_factory.mktemp("waka-addons")
    env = {"WAKA_ADDONS_POSTGRES_URL": ADMIN_URL}
    try:
        with running_server(tmp, heroku_cli, env) as server:
            yield server
    finally:
        _remove_leftovers(tmp / "waka-home")


def _remove_leftovers(home: Path) -> None:
    """A failed test may leave add-ons behind: remove their databases and Redis servers."""
    from waka.adapters.postgres_addons import PostgresProvider
    from waka.adapters.redis_addons import RedisProvider
    from waka.bootstrap import bootstrap
    from waka.config import Settings

    platform = bootstrap(Settings(home=home))
    try:
        rows = platform.store.query("SELECT id, service FROM waka_addons")
    finally:
        platform.close()
    postgres = PostgresProvider(ADMIN_URL, "127.0.0.1")
    redis = RedisProvider(home / "addons" / "redis", ("127.0.0.1",), "127.0.0.1")
    for row in rows:
        if row["service"] == "heroku-postgresql":
            postgres.deprovision(row["id"])
        else:
            redis.deprovision(row["id"])
    redis.stop_all()


@pytest.fixture(scope="module")
def api(server: WakaServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def router_json(server: WakaServer, app: str, path: str) -> tuple[int, dict]:
    response = httpx.get(
        f"http://127.0.0.1:{server.router_port}{path}",
        headers={"Host": f"{app}.localhost"},
        timeout=30,
    )
    try:
        return response.status_code, response.json()
    except json.JSONDecodeError:
        return response.status_code, {"text": response.text}


def data_cli(server: WakaServer, *args: str, check: bool = True, input: str | None = None):
    """The CLI's pg:*/redis:* commands ask the Data API at HEROKU_DATA_HOST (a host name; the
    port is HEROKU_HOST's): point it at waka."""
    return server.heroku(*args, check=check, env={"HEROKU_DATA_HOST": "localhost"}, input=input)


def config(server: WakaServer, app: str) -> dict[str, str]:
    return json.loads(server.heroku("config", "-a", app, "--json").stdout)


def postgres_objects(url: str) -> tuple[bool, bool]:
    """(the role exists, the database exists) for an add-on's URL, asked as the superuser."""
    parsed = urlparse(url)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (parsed.username,))
        database = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.path.lstrip("/"),)
        )
        return role.fetchone() is not None, database.fetchone() is not None


def redis_maxmemory(url: str) -> int:
    """CONFIG GET maxmemory as the app's user (allowed; CONFIG SET is not)."""
    parsed = urlparse(url)
    done = subprocess.run(
        [
            "redis-cli",
            "-h",
            "127.0.0.1",
            "-p",
            str(parsed.port),
            "--no-auth-warning",
            "-a",
            parsed.password or "",
            "CONFIG",
            "GET",
            "maxmemory",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return int(done.stdout.split()[-1])


def port_open(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(("127.0.0.1", parsed.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def test_addons_with_the_heroku_cli_and_real_servers(server, api, tmp_path):
    app = unique_name("shop")
    server.heroku("apps:create", app)
    repo = app_repo("addons-web", tmp_path / app)
    pushed = repo.push(git_url(server, app))
    assert pushed.returncode == 0, pushed.output
    _, body = wait_for(
        lambda: (r := router_json(server, app, "/db"))[0] == 500 and r, what="the app up"
    )
    assert "DATABASE_URL" in body["error"]  # no database yet

    # --- create: provisioned at once, attached in a new release, dynos restarted with it --
    created = server.heroku("addons:create", "heroku-postgresql:essential-0", "-a", app)
    out = flat(created.stdout + created.stderr)
    assert f"Creating heroku-postgresql:essential-0 on {app}... ~$0.007/hour (max $5/month)" in (
        out
    )
    assert "as DATABASE_URL" in out, out
    db_name = out.split("Created ", 1)[1].split()[0]
    assert db_name.startswith("postgresql-")
    created = server.heroku("addons:create", "heroku-redis", "-a", app, "--name", f"{app}-cache")
    assert f"Created {app}-cache as REDIS_URL" in flat(created.stdout), created.stdout

    _status, body = wait_for(
        lambda: (r := router_json(server, app, "/db?note=hello"))[0] == 200 and r,
        what="the app writing through DATABASE_URL",
    )
    assert body["notes"][-1] == "hello"
    _, body = wait_for(
        lambda: (r := router_json(server, app, "/redis?key=greeting&value=hi"))[0] == 200 and r,
        what="the app writing through REDIS_URL",
    )
    assert body["value"] == "hi", body
    assert router_json(server, app, "/redis?key=greeting")[1]["value"] == "hi"

    # --- what the CLI shows -------------------------------------------------------------
    listed = server.heroku("addons", "-a", app).stdout
    assert f"heroku-postgresql ({db_name})" in listed, listed
    assert f"heroku-redis ({app}-cache)" in listed and "as REDIS" in listed, listed
    assert "as DATABASE" in listed and "essential-0" in listed and "created" in listed
    assert "$5/month" in listed, listed
    vars_now = config(server, app)
    colour = [k for k in vars_now if k.startswith("HEROKU_POSTGRESQL_")]
    assert len(colour) == 1 and vars_now[colour[0]] == vars_now["DATABASE_URL"]
    assert vars_now["DATABASE_URL"].startswith("postgres://")
    assert vars_now["REDIS_URL"].startswith("redis://:")
    descriptions = [d for _, d, _ in release_rows(server.heroku("releases", "-a", app).stdout)]
    assert any(d.startswith("Attach DATABASE") for d in descriptions), descriptions
    assert any(d.startswith("Attach REDIS") for d in descriptions), descriptions
    release_info = server.heroku("releases:info", "-a", app).stdout
    assert "heroku-postgresql:essential-0" in release_info, release_info
    assert "heroku-redis:mini" in release_info, release_info
    renamed = server.heroku("addons:rename", db_name, f"{app}-db").stdout
    assert f"{db_name} successfully renamed to {app}-db." in flat(renamed), renamed
    db_name = f"{app}-db"
    info = server.heroku("addons:info", db_name).stdout
    assert key_values(info.splitlines())["Plan"] == "heroku-postgresql:essential-0", info
    assert "Addons:" in server.heroku("apps:info", "-a", app).stdout

    pg_info = data_cli(server, "pg:info", "-a", app).stdout
    assert "=== DATABASE_URL" in pg_info and "Essential 0" in pg_info, pg_info
    psql = data_cli(server, "pg:psql", "-a", app, "-c", "SELECT body FROM notes").stdout
    assert "hello" in psql, psql
    killed = data_cli(server, "pg:killall", "-a", app)
    assert "Terminating connections for all credentials... done" in flat(killed.stderr), killed
    reset = data_cli(server, "pg:reset", "-a", app, "--confirm", app)
    assert f"Resetting {db_name}... done" in flat(reset.stderr), reset
    _, body = wait_for(
        lambda: (r := router_json(server, app, "/db?note=after-reset"))[0] == 200 and r,
        what="the app using the emptied database",
    )
    assert body["notes"] == ["after-reset"], body  # "hello" is gone; the URL still works
    redis_info = data_cli(server, "redis:info", "-a", app).stdout
    assert f"=== {app}-cache (REDIS_URL)" in redis_info, redis_info
    cli = data_cli(server, "redis:cli", "-a", app, "--confirm", app, input="GET greeting\n")
    assert f"Connecting to {app}-cache (REDIS_URL)" in cli.stdout, cli
    assert "hi" in cli.stdout.splitlines(), cli  # the app's key, from the user's machine

    # --- another app: its own database; its credentials are refused by this one's --------
    other = unique_name("other")
    server.heroku("apps:create", other)
    server.heroku("addons:create", "heroku-postgresql", "-a", other)
    theirs = urlparse(config(server, other)["DATABASE_URL"])
    ours = urlparse(vars_now["DATABASE_URL"])
    assert (theirs.username, theirs.path) != (ours.username, ours.path)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(
            host="127.0.0.1",
            port=ours.port,
            user=theirs.username,
            password=theirs.password,
            dbname=ours.path.lstrip("/"),
            connect_timeout=5,
        ).close()

    # --- attach this database to the other app under its own name -----------------------
    server.heroku("addons:attach", db_name, "-a", other, "--as", "SHOP_DB")
    server.heroku("addons:attach", db_name, "-a", other, "--as", "SPARE")
    assert config(server, other)["SHOP_DB_URL"] == vars_now["DATABASE_URL"]
    assert config(server, other)["SPARE_URL"] == vars_now["DATABASE_URL"]
    detached = server.heroku("addons:detach", "SPARE", "-a", other)
    assert "Unsetting SPARE config vars and restarting" in flat(detached.stderr), detached
    assert "SPARE_URL" not in config(server, other)

    # --- rollback keeps today's add-ons, and says so ------------------------------------
    rolled = server.heroku("releases:rollback", "v2", "-a", app)
    warning = flat(rolled.stderr)
    assert "doesn't add or remove addons" in warning, warning
    assert "add-ons are not rolled back" in warning, warning
    assert config(server, app)["DATABASE_URL"] == vars_now["DATABASE_URL"]

    # --- a plan change: the same server and URL, the new plan's memory limit -------------
    redis_url = vars_now["REDIS_URL"]
    upgraded = server.heroku("addons:upgrade", f"{app}-cache", "premium-0", "-a", app)
    assert "to heroku-redis:premium-0... done, ~$0.021/hour (max $15/month)" in flat(
        upgraded.stderr
    ), upgraded
    wait_for(lambda: redis_maxmemory(redis_url) == 50 * 1024 * 1024, what="maxmemory 50 MB")
    assert config(server, app)["REDIS_URL"] == redis_url
    assert router_json(server, app, "/redis?key=greeting")[1]["value"] == "hi"

    # --- destroy one add-on, then the app: nothing is left on the servers -----------------
    assert port_open(redis_url)
    server.heroku("addons:destroy", f"{app}-cache", "-a", app, "--confirm", app)
    assert "REDIS_URL" not in config(server, app)
    wait_for(lambda: not port_open(redis_url), what="the Redis server stopped")
    instances = server.home / "addons" / "redis"
    assert [p.name for p in instances.iterdir() if not p.name.startswith(".")] == []

    assert postgres_objects(vars_now["DATABASE_URL"]) == (True, True)
    (app_id,) = server.app_ids(app)
    assert (server.home / "repos" / f"{app_id}.git").is_dir()
    assert (server.home / "cache" / app_id).is_dir()
    server.heroku("apps:destroy", app, "--confirm", app)
    wait_for(
        lambda: postgres_objects(vars_now["DATABASE_URL"]) == (False, False),
        what="the database and role dropped",
    )
    assert "SHOP_DB_URL" not in config(server, other)
    wait_for(
        lambda: (
            not (server.home / "repos" / f"{app_id}.git").exists()
            and not (server.home / "cache" / app_id).exists()
        ),
        what="the destroyed app's repository and build cache removed",
    )
    server.heroku("apps:destroy", other, "--confirm", other)
    wait_for(
        lambda: postgres_objects(theirs.geturl()) == (False, False),
        what="the other app's database dropped",
    )
    assert api.get("/addons") == []


def test_a_third_party_add_on_with_the_heroku_cli(heroku_cli, tmp_path_factory):
    """A manifest in WAKA_ADDON_MANIFESTS; its partner API served over HTTP by the test."""
    from tests.test_partner_addons import Partner, manifest_for

    partner = Partner()
    serving = threading.Thread(target=partner.serve_forever, daemon=True)
    serving.start()
    tmp = tmp_path_factory.mktemp("waka-partner")
    (tmp / "manifests").mkdir()
    (tmp / "manifests" / "acme-mail.json").write_text(json.dumps(manifest_for(partner)))
    env = {"WAKA_ADDON_MANIFESTS": str(tmp / "manifests")}
    try:
        with running_server(tmp, heroku_cli, env) as server:
            app = unique_name("mail")
            server.heroku("apps:create", app)
            assert "acme-mail" in server.heroku("addons:services").stdout
            created = server.heroku("addons:create", "acme-mail", "-a", app, "--name", f"{app}-m")
            assert f"Created {app}-m as ACME_MAIL_URL" in flat(created.stdout), created
            assert config(server, app)["ACME_MAIL_URL"].startswith("smtp://res-")
            listed = server.heroku("addons", "-a", app).stdout
            assert f"acme-mail ({app}-m)" in listed and "free" in listed, listed
            server.heroku("addons:destroy", f"{app}-m", "-a", app, "--confirm", app)
            wait_for(lambda: partner.requests[-1][0] == "DELETE", what="the partner's DELETE")
            assert "ACME_MAIL_URL" not in config(server, app)
    finally:
        partner.shutdown()
