"""PostgreSQL restarted while waka's split roles are idle: the first requests after it is back
must not meet a connection that died in the restart (a pool handing out a dead connection
answers 503 long after the server is back). `waka api` runs no reactors, so nothing else
flushes its pools' dead connections first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .postgres_cluster import PostgresCluster
from .roles import waka_has_command
from .test_kill_up import Platform, running_platform

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def platform(
    heroku_cli: Path, own_postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    if not waka_has_command("api"):
        pytest.skip("this waka has no separate roles (`waka api`, `waka router`, `waka worker`)")
    tmp = tmp_path_factory.mktemp("faults-idle")
    with running_platform(tmp, heroku_cli, own_postgres, split=True, deploy=False) as platform:
        yield platform


def test_the_first_requests_after_an_idle_restart_succeed(platform: Platform) -> None:
    """Once PostgreSQL is back, no request fails on a connection it held before the restart:
    pooled connections that died idle are not handed to the next request."""
    from tests.e2e.conftest import git_url

    target = platform.target
    url = git_url(target.server, target.app)
    for _ in range(3):  # every pool has idle connections: the ledger, read models, blobs
        target.get(f"/apps/{target.app}/config-vars")
        target.repo.run("ls-remote", url, "refs/heads/main")
    platform.cluster.restart("immediate")
    platform.cluster.wait_ready()
    time.sleep(0.3)
    failures = []
    for attempt in range(3):
        ls_remote = target.repo.run("ls-remote", url, "refs/heads/main", check=False)
        if ls_remote.returncode != 0:
            failures.append(f"git ls-remote #{attempt + 1}: {ls_remote.output.strip()}")
        api = target.api()
        try:
            for method, path, body in (
                ("GET", f"/apps/{target.app}", None),
                ("GET", f"/apps/{target.app}/releases", None),
                ("PATCH", f"/apps/{target.app}/config-vars", {f"IDLE_{attempt}": "1"}),
            ):
                response = api.client.request(method, path, json=body)
                if response.status_code not in (200, 206):
                    failures.append(f"{method} {path} #{attempt + 1}: {response.status_code}")
        finally:
            api.close()
    assert not failures, "requests failed after PostgreSQL was back:\n" + "\n".join(failures)
