"""Two `waka worker` copies on one host with one WAKA_HOME (`waka worker & waka worker &`): a
worker that starts while the other builds must leave that build alone. Its sweep of what a
crash left behind (build containers, work directories) may only take what no live worker
holds: the containers are checked against their build's lease, the work directories are not
(waka/reactors/builder.py, Builder.sweep_leftovers), so the running build loses its
directory and fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Api, app_repo, git_url, unique_name, wait_for
from tests.e2e.test_push_crash import build_containers, slow_buildpack

from .postgres_cluster import PostgresCluster
from .roles import Deployment, waka_has_command

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture
def deployment(
    heroku_cli: Path, own_postgres: PostgresCluster, tmp_path: Path
) -> Iterator[Deployment]:
    if not waka_has_command("worker"):
        pytest.skip("this waka has no separate roles (`waka api`, `waka router`, `waka worker`)")
    deployment = Deployment(tmp_path, heroku_cli, own_postgres.url, split=True, shared_home=True)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.kill_all()
        deployment.server.remove_dynos()


def test_a_worker_starting_beside_a_running_build_leaves_it_alone(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.kill("worker2")  # one worker builds
    server = deployment.server
    api = Api(server)
    try:
        app = unique_name("shared-home")
        api.request("POST", "/apps", json={"name": app})
        buildpack = str(slow_buildpack(tmp_path / "slow-buildpack", seconds=6))
        api.request(
            "PUT",
            f"/apps/{app}/buildpack-installations",
            json={"updates": [{"buildpack": buildpack}]},
        )
        repo = app_repo("shell-app", tmp_path / "app")
        push = repo.popen("push", git_url(server, app), "main")
        build = wait_for(lambda: api.builds(app), timeout=60, what="the build")[0]
        wait_for(lambda: build_containers(build["id"]), timeout=60, what="the build to run")
        time.sleep(1.0)
        deployment.restart("worker2")  # the second copy starts on the same home
        output, _ = push.communicate(timeout=120)
        statuses = [b["status"] for b in api.builds(app)]
        assert push.returncode == 0 and statuses == ["succeeded"], f"{statuses}\n{output}"
    finally:
        api.close()
