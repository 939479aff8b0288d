"""Logplex across the split roles: two `waka api` processes, a `waka router` and a `waka
worker`, each with a home of its own, on one PostgreSQL and one Redis (WAKA_REDIS_URL). An app
pushed and configured through API copy A: `heroku logs --tail` served by API copy B shows the
worker's `app[api]` lines, the router process's line for a request and the dyno's own output
(pumped by the worker), the router's and another OS process's within a second; after kill -9
of B, its restart still shows every line."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import OWNER_EMAIL, Api, WakaServer, app_repo, git_url, wait_for
from tests.e2e.roles import Role, heroku_cli_for
from tests.e2e.test_git_push import deployed
from tests.e2e.test_logplex_redis import Emitter
from tests.e2e.test_roles import get
from tests.redis_servers import RedisServer, logplex_redis  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


class LoggingRole(Role):
    """A role whose Logplex is the test's Redis."""

    def __init__(self, redis_url: str, home: Path, role: str, database_url: str, schema: str):
        super().__init__(home, role, database_url, schema)
        self.redis_url = redis_url

    def env(self) -> dict[str, str]:
        return {**super().env(), "WAKA_REDIS_URL": self.redis_url}


@pytest.fixture
def roles(
    tmp_path: Path,
    pg_schema_url: tuple[str, str],
    logplex_redis: RedisServer,  # noqa: F811
) -> Iterator[tuple[Role, Role, Role, Role]]:
    url, schema = pg_schema_url
    made = tuple(
        LoggingRole(logplex_redis.url, tmp_path / f"home-{name}", role, url, schema)
        for name, role in (("a", "api"), ("b", "api"), ("r", "router"), ("w", "worker"))
    )
    try:
        for role in made:
            role.start()
        key = made[0].create_user(OWNER_EMAIL)
        for role in made:
            role.api_key = key
        yield made
    finally:
        for role in made:
            role.stop()
        WakaServer.remove_dynos(made[3])  # type: ignore[arg-type] - the worker's dynos


def test_a_line_reaches_the_tail_served_by_another_api_copy(
    roles: tuple[Role, Role, Role, Role],
    logplex_redis: RedisServer,  # noqa: F811
    heroku_cli: Path,
    tmp_path: Path,
) -> None:
    a, b, router, worker = roles
    via_a = heroku_cli_for(a, heroku_cli, tmp_path / "cli-a")
    via_b = heroku_cli_for(b, heroku_cli, tmp_path / "cli-b")
    api = Api(via_a)
    app = api.create_app("roles-logs")
    app_id = api.get(f"/apps/{app}")["id"]
    api.close()
    deployed(app_repo("shell-app", tmp_path / "app").push(git_url(via_a, app)), 2)

    tail = subprocess.Popen(
        [str(heroku_cli), "logs", "--tail", "-a", app],
        env=via_b.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[tuple[float, str]] = []

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            seen.append((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    emitter = Emitter(logplex_redis.url, app_id)
    try:
        via_a.heroku("config:set", "GREETING=hello", "-a", app)  # through A; logged by the worker
        wait_for(
            lambda: any("app[api]: Release v3 created by owner@example.com" in x for _, x in seen),
            timeout=30,
            what=f"the worker's app[api] line in B's tail (worker log: {worker.log()[-2000:]})",
        )
        assert any("app[api]: Set GREETING config vars by" in x for _, x in seen)

        path = f"/from-the-router-{time.monotonic_ns()}"
        assert get(router, app).status_code == 200  # routed (a dyno is up)
        missing = httpx.get(
            f"http://127.0.0.1:{router.port}{path}", headers={"Host": f"{app}.localhost"}
        )
        assert missing.status_code == 404  # http.server: no such file
        sent = time.monotonic()
        arrived = wait_for(
            lambda: next(
                (at for at, x in seen if "heroku[router]: at=info" in x and path in x), None
            ),
            timeout=10,
            what="the router process's line in B's tail",
        )
        assert arrived - sent < 1.0, f"{arrived - sent:.2f} s"
        wait_for(  # the dyno's own output, pumped into Logplex by the worker
            lambda: any("app[web.1]:" in x and f"GET {path}" in x for _, x in seen),
            timeout=10,
            what="the dyno's line in B's tail",
        )

        marker = f"from-another-process-{time.monotonic_ns()}"
        sent = time.monotonic()
        emitter.emit(marker)
        arrived = wait_for(
            lambda: next((at for at, x in seen if marker in x), None), timeout=10, what="marker"
        )
        assert arrived - sent < 1.0, f"{arrived - sent:.2f} s"
    finally:
        tail.terminate()
        tail.wait(timeout=10)
        emitter.close()

    assert b.process is not None
    b.process.send_signal(signal.SIGKILL)  # B crashes; its replacement reads the same buffer
    b.process.wait(10)
    b.process = None
    b.start()
    via_b.process = b.process
    shown = via_b.heroku("logs", "-n", "1500", "-a", app).stdout
    assert f"app[web.1]: {marker}" in shown
    assert "app[api]: Release v3 created by owner@example.com" in shown
    assert any("heroku[router]: at=info" in x and path in x for x in shown.splitlines())
    assert marker in via_a.heroku("logs", "-a", app).stdout  # and A serves the same


def test_the_api_log_logs_what_was_saved_while_no_worker_led_it(
    roles: tuple[Role, Role, Role, Role], heroku_cli: Path, tmp_path: Path
) -> None:
    """The worker leading the API log is killed (-9); a config change is made before a worker
    leads it again: the new leader logs it (its position is in the store, not the dead one's
    memory), and nothing it logged before twice."""
    a, _, _, worker = roles
    via_a = heroku_cli_for(a, heroku_cli, tmp_path / "cli-a")
    app = Api(via_a).create_app("api-log-lead")
    via_a.heroku("config:set", "BEFORE=1", "-a", app)
    wait_for(
        lambda: "Set BEFORE config vars" in via_a.heroku("logs", "-a", app).stdout,
        timeout=30,
        what="the first change logged",
    )
    worker.crash()
    via_a.heroku("config:set", "WHILE_NO_WORKER=1", "-a", app)
    worker.start()  # a worker again: it takes the API log's lead

    def logged() -> str | None:
        out = via_a.heroku("logs", "-a", app).stdout
        return out if "Set WHILE_NO_WORKER config vars" in out else None

    shown = wait_for(
        logged,
        timeout=30,
        what=f"the change made while no worker led the API log (worker: {worker.log()[-2000:]})",
    )
    assert "app[api]: Release v3 created by owner@example.com" in shown, shown
    assert shown.count("Set BEFORE config vars") == 1, shown
