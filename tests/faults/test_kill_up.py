"""kill -9 of `waka up` (on PostgreSQL) at a random point of a push (receive, build, release),
a scale, a config change and the creation of a Redis and a Postgres add-on.

After each: `waka up` starts again at once on the same ports; the user's failed command, run
again, works; no event stored before the kill is gone; no build, release, dyno or add-on is
there twice; the running containers are the formation; no git, hook or build process is left;
and the ledger replayed into fresh read models equals the live ones. The random points come
from WAKA_FAULT_SEED (printed; set it to replay)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import app_repo, git_url, unique_name
from tests.e2e.test_git_push import deployed

from .convergence import Observer, listed_containers
from .operations import AddonCreate, ConfigSet, Push, Scale, Target, run_with_fault
from .postgres_cluster import PostgresCluster
from .roles import Deployment
from .swarm_seen import SwarmDynosSeen

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


class Platform:
    def __init__(
        self, deployment: Deployment, observer: Observer, target: Target, cluster: PostgresCluster
    ) -> None:
        self.deployment = deployment
        self.observer = observer
        self.target = target
        self.cluster = cluster

    def fault(self, operation, role: str, rng: random.Random, restart: bool = True):
        return run_with_fault(
            operation, role, self.deployment, self.observer, rng, self.cluster.url, restart
        )


@contextlib.contextmanager
def running_platform(
    tmp: Path,
    heroku_cli: Path,
    cluster: PostgresCluster,
    split: bool,
    deploy: bool = True,
    swarm: Any = None,
) -> Iterator[Platform]:
    """A deployment on the cluster with one app, deployed once (web and worker types) unless
    `deploy` is false; every process, dyno and add-on server of it gone afterwards. `swarm`: a
    tests/swarm_cluster.py SwarmCluster to run the dynos on (WAKA_RUNTIME=swarm), else the
    local Docker engine."""
    from waka.adapters.redis_addons import RedisProvider

    env = swarm.waka_env() if swarm is not None else {}
    deployment = Deployment(tmp, heroku_cli, cluster.url, split=split, env=env)
    deployment.start()
    key = deployment.server.extra_env.get("WAKA_CIPHER_KEY")
    observer = Observer(deployment.homes, cluster.url, "public", key)
    if swarm is not None:
        observer.swarm = SwarmDynosSeen(swarm, observer.platform_id)
    try:
        server = deployment.server
        app = unique_name("faults")
        server.heroku("apps:create", app)
        repo = app_repo("shell-app", tmp / "app")
        if deploy:
            deployed(repo.push(git_url(server, app)), 2)
        yield Platform(deployment, observer, Target(deployment, app, repo), cluster)
    finally:
        try:
            deployment.kill_all()
        finally:
            observer.close()
            deployment.server.remove_dynos()
            if observer.swarm is not None:
                observer.swarm.remove_all()
            for home in deployment.homes:
                RedisProvider(home / "addons" / "redis", ("127.0.0.1",), "127.0.0.1").stop_all()


@pytest.fixture(scope="module")
def platform(
    heroku_cli: Path, own_postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("faults-up")
    with running_platform(tmp, heroku_cli, own_postgres, split=False) as platform:
        yield platform


def operations(target: Target, rng: random.Random) -> list:
    """The operations, in order: each made when its turn comes (a scale reads the formation
    the previous faults left)."""
    return [
        lambda: Push(target),
        lambda: Scale(target, rng),
        lambda: ConfigSet(target, rng),
        lambda: AddonCreate(target, "heroku-redis"),
        lambda: AddonCreate(target, "heroku-postgresql"),
    ]


def test_kill_up_at_random_points_of_each_operation(
    platform: Platform, schedule: random.Random
) -> None:
    # One test for the whole sequence: under pytest-xdist a module's tests may be spread over
    # workers, and each would start a platform of its own.
    for make in operations(platform.target, schedule):
        platform.fault(make(), "up", schedule)
    checks_see_what_they_look_for(platform)
    codes = platform.deployment.stop()
    assert codes == {"up": 0}, platform.deployment.log()[-4000:]
    assert platform.deployment.log().rstrip().endswith("waka: stopped")


def checks_see_what_they_look_for(platform: Platform) -> None:
    """Each convergence check fails on the breakage it is there to find (else the suite
    above could pass on a broken platform)."""
    import subprocess
    import uuid

    import psycopg

    from tests.e2e.conftest import clean_env

    observer, cluster = platform.observer, platform.cluster
    fake_event = (10**9, str(uuid.uuid4()), 1)
    assert observer.no_event_lost([fake_event])()
    # An add-on role with no add-on: an orphan (or a second one of an add-on).
    role = f"u{uuid.uuid4().hex}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}"')
        try:
            assert observer.postgres_addon_resources(cluster.url)
        finally:
            conn.execute(f'DROP ROLE "{role}"')
    # A live read model that drifted from what the ledger says.
    app_id = observer.query("SELECT id FROM waka_apps")[0]["id"]
    with observer.live.transaction() as cur:
        cur.execute("UPDATE waka_apps SET maintenance = 1 - maintenance WHERE id = ?", (app_id,))
    try:
        assert observer.replay_equals_live()
    finally:
        with observer.live.transaction() as cur:
            cur.execute(
                "UPDATE waka_apps SET maintenance = 1 - maintenance WHERE id = ?", (app_id,)
            )
    # A process of this installation that nobody runs any more.
    home = platform.deployment.server.home
    stray = subprocess.Popen(["sleep", "30"], env=clean_env(WAKA_HOME=str(home)))
    try:
        assert observer.no_orphan_processes(platform.deployment.pids())
    finally:
        stray.kill()
        stray.wait()
    # A dyno more than the formation, and a build's container left behind (made up: the
    # running dyno manager would remove a real one before the check could see it).
    from types import SimpleNamespace

    from waka.adapters.runtime import docker_client

    client = docker_client()
    assert client is not None
    containers = listed_containers(client, observer.platform_id)
    assert observer.dyno_problems(containers) == []
    extra = {"waka.dyno": "web.99", "waka.app": app_id, "waka.type": "web"}
    problems = observer.dyno_problems(
        [*containers, SimpleNamespace(labels=extra, status="running")]
    )
    assert any("!=" in p for p in problems), problems
    build = SimpleNamespace(labels={"waka.build": "b-1"}, status="running")
    assert observer.dyno_problems([*containers, build])
    assert observer.no_duplicate_builds_or_releases() == []
