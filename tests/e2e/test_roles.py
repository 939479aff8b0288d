"""The roles as separate processes, each with a WAKA_HOME of its own, on one PostgreSQL: `waka
api`, `waka router` and two `waka worker`s. A push through the API is built by a worker and
served through the router process; the dyno manager leads in one worker only, and when that
worker is killed (-9) the other takes over: a scale made afterwards runs, and the router
(another process) serves the new dynos; a rename reaches the router within a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import OWNER_EMAIL, Api, WakaServer, app_repo, git_url
from .test_git_push import deployed
from .test_shared_storage import Role

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture
def roles(tmp_path: Path, pg_schema_url: tuple[str, str]) -> Iterator[dict[str, Role]]:
    url, schema = pg_schema_url
    made = {
        "api": Role(tmp_path / "home-api", "api", url, schema),
        "router": Role(tmp_path / "home-router", "router", url, schema),
        "worker-1": Role(tmp_path / "home-w1", "worker", url, schema),
        "worker-2": Role(tmp_path / "home-w2", "worker", url, schema),
    }
    try:
        for role in made.values():
            role.start()
        key = made["api"].create_user(OWNER_EMAIL)
        for role in made.values():
            role.api_key = key
        yield made
    finally:
        for role in made.values():
            role.stop()
        WakaServer.remove_dynos(made["worker-1"])  # type: ignore[arg-type] - same platform id


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
    roles: dict[str, Role], tmp_path: Path
) -> None:
    api_role, router = roles["api"], roles["router"]
    workers = [roles["worker-1"], roles["worker-2"]]
    api = Api(api_role)  # type: ignore[arg-type]
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

    api.request(
        "PATCH", f"/apps/{app}/formation", json={"updates": [{"type": "web", "quantity": 2}]}
    )
    took = wait(lambda: up_dynos(api, app) == ["web.1", "web.2"], 60, "web.2 started by the other")
    assert "dyno-manager: leading" in other.log()
    # The router process serves from both dynos (the backends of the shared route table).
    seen: set[str] = set()
    wait(
        lambda: seen.add(get(router, app).headers.get("X-Waka-Dyno", "")) or len(seen) >= 1,
        10,
        "served after the takeover",
    )
    assert get(router, app).status_code == 200
    print(f"a scale after the leading worker's kill -9 ran within {took:.1f} s")

    # A rename reaches the router process within a second (ledger notification → route follower).
    renamed = f"{app}-renamed"
    api.request("PATCH", f"/apps/{app}", json={"name": renamed})
    began = time.monotonic()
    wait(lambda: get(router, renamed, timeout=0).status_code == 200, 5, "the new name routed")
    assert time.monotonic() - began < 1.5
    assert get(router, app, timeout=0).status_code == 404
