"""kill -9 of each of waka's separate roles, `waka api`, `waka router` and `waka worker` (on one
PostgreSQL), at a random point of the operations that role takes part in: the API records
pushes, scales, config changes and add-ons; the worker builds, releases, runs dynos and
provisions add-ons; the router serves the app. The role starts again at once on its port;
then the same convergence as for `waka up` (tests/faults/test_kill_up.py), and the app
answers through the router."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .operations import AddonCreate, ConfigSet, Push, Scale, Target
from .postgres_cluster import PostgresCluster
from .roles import waka_has_command
from .test_kill_up import Platform, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture(scope="module")
def platform(
    heroku_cli: Path, own_postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    if not waka_has_command("worker"):
        pytest.skip("this waka has no separate roles (`waka api`, `waka router`, `waka worker`)")
    tmp = tmp_path_factory.mktemp("faults-roles")
    with running_platform(tmp, heroku_cli, own_postgres, split=True) as platform:
        yield platform


def app_answers(target: Target) -> list[str]:
    """With web dynos in the formation, the app answers through the router."""
    formation = {f["type"]: f["quantity"] for f in target.get(f"/apps/{target.app}/formation")}
    if not formation.get("web"):
        return []
    try:
        response = httpx.get(
            f"http://127.0.0.1:{target.server.router_port}/",
            headers={"Host": f"{target.app}.localhost"},
            timeout=10,
        )
    except httpx.HTTPError as error:
        return [f"the router did not answer: {error!r}"]
    if response.status_code != 200 or "Hello from shell-app" not in response.text:
        return [f"the app answered {response.status_code}: {response.text[:200]}"]
    return []


def fault(platform: Platform, operation, role: str, rng: random.Random, restart: bool) -> None:
    platform.fault(operation, role, rng, restart)
    from .convergence import settle

    settle([lambda: app_answers(platform.target)], timeout=60, what=f"{role} killed: the app")


OPERATIONS = {
    "push": lambda target, rng: Push(target),
    "scale": lambda target, rng: Scale(target, rng),
    "config": lambda target, rng: ConfigSet(target, rng),
    "redis": lambda target, rng: AddonCreate(target, "heroku-redis"),
    "postgres": lambda target, rng: AddonCreate(target, "heroku-postgresql"),
}
# Each role in the operations it takes part in (the router: what changes its route table),
# and whether it comes back at once: the worker holding the leases (building, leading the dyno
# and add-on managers) stays dead while the other copy must take its work over.
CASES = [
    ("worker", "push", True),
    ("worker", "scale", True),
    ("worker", "redis", True),
    ("lease-holder", "push", False),
    ("lease-holder", "postgres", False),
    ("api", "push", True),
    ("api", "config", True),
    ("api", "redis", True),
    ("router", "scale", True),
]


def test_kill_each_role_at_random_points_of_its_operations(
    platform: Platform, schedule: random.Random
) -> None:
    # One test for the whole sequence (see test_kill_up.py).
    for role, operation, restart in CASES:
        fault(platform, OPERATIONS[operation](platform.target, schedule), role, schedule, restart)
    codes = platform.deployment.stop()
    assert set(codes.values()) == {0}, f"{codes}\n{platform.deployment.log()[-4000:]}"
