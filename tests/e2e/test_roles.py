"""The roles as separate processes, each with a WAKA_HOME of its own, on one PostgreSQL: `waka
api`, `waka router` and two `waka worker`s, driven by real git and the real Heroku CLI. A push
through the API is built by a worker and served through the router process; the dyno manager
leads in one worker only, and when that worker is killed (-9) the other takes over: a
`heroku ps:scale` made afterwards runs, `heroku ps` shows it, and the router (another process)
serves the new dynos; a rename reaches both router processes within a second. An eco app that
sleeps is woken by a request to the router process: the wake goes to whichever worker leads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from tests.redis_servers import RedisServer, logplex_redis  # noqa: F401

from .conftest import OWNER_EMAIL, Api, WakaServer, app_repo, git_url
from .roles import Role, heroku_cli_for
from .test_git_push import deployed

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture
def make_roles(
    tmp_path: Path, pg_schema_url: tuple[str, str]
) -> Iterator[Callable[..., dict[str, Role]]]:
    url, schema = pg_schema_url
    made: dict[str, Role] = {}

    def make(**env: str) -> dict[str, Role]:
        made.update(_roles(tmp_path, url, schema))
        for role in made.values():
            role.extra_env = dict(env)
            role.start()
        key = made["api"].create_user(OWNER_EMAIL)
        for role in made.values():
            role.api_key = key
        return made

    try:
        yield make
    finally:
        for role in made.values():
            role.stop()
        if made:
            WakaServer.remove_dynos(made["worker-1"])  # type: ignore[arg-type] - one platform id


@pytest.fixture
def roles(make_roles: Callable[..., dict[str, Role]]) -> dict[str, Role]:
    return make_roles()


def _roles(tmp_path: Path, url: str, schema: str) -> dict[str, Role]:
    return {
        "api": Role(tmp_path / "home-api", "api", url, schema),
        "router": Role(tmp_path / "home-router", "router", url, schema),
        "router-2": Role(tmp_path / "home-router-2", "router", url, schema),  # its own port
        "worker-1": Role(tmp_path / "home-w1", "worker", url, schema),
        "worker-2": Role(tmp_path / "home-w2", "worker", url, schema),
    }


def get(router: Role, app: str, timeout: float = 60.0) -> httpx.Response:
    """GET / of the app through the router process, until a dyno answers (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{router.port}/", headers={"Host": f"{app}.localhost"}, timeout=5
            )
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def leader(workers: list[Role], reactor: str, timeout: float = 30.0) -> Role:
    """The worker whose log says it leads `reactor`, the other standing by."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leading = [w for w in workers if f"{reactor}: leading" in w.log()]
        if len(leading) == 1:
            return leading[0]
        time.sleep(0.2)
    raise AssertionError("no single leader: " + "\n".join(w.log()[-3000:] for w in workers))


def up_dynos(api: Api, app: str) -> list[str]:
    return sorted(d["name"] for d in api.get(f"/apps/{app}/dynos") if d["state"] == "up")


def wait(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - began


def test_split_roles_deploy_serve_and_survive_the_loss_of_a_worker(
    roles: dict[str, Role], heroku_cli: Path, tmp_path: Path
) -> None:
    api_role, router = roles["api"], roles["router"]
    workers = [roles["worker-1"], roles["worker-2"]]
    api = Api(api_role)  # type: ignore[arg-type]
    heroku = heroku_cli_for(api_role, heroku_cli, tmp_path / "cli-home").heroku
    app = api.create_app("roles")

    pushed = app_repo("shell-app", tmp_path / "app").push(git_url(api_role, app))  # type: ignore[arg-type]
    deployed(pushed, 2)
    assert get(router, app).text.strip() == "Hello from shell-app"
    # `heroku ps` is served by the API process from what the leading dyno manager saw.
    wait(lambda: up_dynos(api, app) == ["web.1"], 30, "web.1 up in GET /dynos")

    first = leader(workers, "dyno-manager")
    other = workers[1] if first is workers[0] else workers[0]
    assert "dyno-manager: leading" not in other.log()
    assert first.process is not None
    first.process.kill()  # kill -9: its leases go with its database connection
    first.process.wait()
    first.process = None

    scaled = heroku("ps:scale", "web=2", "-a", app).stderr
    assert "now running web at 2:" in scaled, scaled
    took = wait(lambda: up_dynos(api, app) == ["web.1", "web.2"], 60, "web.2 started by the other")
    assert "dyno-manager: leading" in other.log()
    listed = heroku("ps", "-a", app).stdout
    assert "web.1: up" in listed and "web.2: up" in listed, listed

    # The shared route table names both dynos (written by the worker that took over), and the
    # router process serves from it.
    def backends() -> int:
        with psycopg.connect(api_role.database_url) as conn:
            conn.execute(f'SET search_path TO "{api_role.database_schema}"')
            row = conn.execute(
                "SELECT route FROM waka_routes r JOIN waka_apps a ON a.id = r.app_id"
                " WHERE a.name = %s",
                (app,),
            ).fetchone()
        return len(orjson.loads(row[0])["backends"]) if row else 0

    wait(lambda: backends() == 2, 10, "both web dynos in the shared route table")
    assert all(get(router, app, timeout=0).status_code == 200 for _ in range(20))
    print(f"a scale after the leading worker's kill -9 ran within {took:.1f} s")

    # A rename reaches every router process within a second (ledger notification → each one's
    # route follower).
    routers = [router, roles["router-2"]]
    assert all(get(r, app).status_code == 200 for r in routers)
    renamed = f"{app}-renamed"
    api.request("PATCH", f"/apps/{app}", json={"name": renamed})
    began = time.monotonic()
    for each in routers:
        wait(lambda r=each: get(r, renamed, timeout=0).status_code == 200, 5, "renamed, routed")
    assert time.monotonic() - began < 1.5
    assert all(get(r, app, timeout=0).status_code == 404 for r in routers)


def test_a_request_to_the_router_process_wakes_a_sleeping_app(
    make_roles: Callable[..., dict[str, Role]],
    heroku_cli: Path,
    tmp_path: Path,
    logplex_redis: RedisServer,  # noqa: F811 - the workers' "Idling" lines reach `heroku logs`
) -> None:
    roles = make_roles(WAKA_SLEEP_AFTER="3", WAKA_REDIS_URL=logplex_redis.url)
    api_role, router = roles["api"], roles["router"]
    api = Api(api_role)  # type: ignore[arg-type]
    heroku = heroku_cli_for(api_role, heroku_cli, tmp_path / "cli-home").heroku
    app = api.create_app("sleepy")
    deployed(app_repo("shell-app", tmp_path / "app").push(git_url(api_role, app)), 2)  # type: ignore[arg-type]
    assert "web at 1:Eco" in heroku("ps:scale", "web=1:eco", "-a", app).stderr
    # The size changes by a new dyno: no dyno at all for a moment, which is not sleep.
    eco_up = [("Eco", "up")]
    wait(
        lambda: [(d["size"], d["state"]) for d in api.get(f"/apps/{app}/dynos")] == eco_up,
        60,
        "an eco dyno",
    )
    wait(
        lambda: "Idling" in heroku("logs", "-n", "100", "-a", app).stdout, 60, "the eco app idling"
    )
    wait(lambda: api.get(f"/apps/{app}/dynos") == [], 60, "the eco app asleep")
    began = time.monotonic()
    woke = get(router, app, timeout=0)  # held by the router process while a worker wakes it
    assert woke.status_code == 200 and woke.text.strip() == "Hello from shell-app"
    assert time.monotonic() - began < 30
    wait(lambda: up_dynos(api, app) == ["web.1"], 10, "web.1 up again")
    wait(lambda: "Unidling" in heroku("logs", "-n", "100", "-a", app).stdout, 10, "woken")
