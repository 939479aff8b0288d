"""kill -9 of `waka up` (the one-process platform) at seeded random points of a push, a scale,
a config change and add-on creation, its dynos Swarm services on a real multi-node Swarm
(tests/swarm_cluster.py): started again at once, it converges as on the local engine
(tests/faults/test_kill_up.py) by the same checks, read from the Swarm (tests/faults/
test_swarm.py covers the split roles and lost nodes)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.swarm_cluster import SwarmCluster

from .postgres_cluster import PostgresCluster
from .test_kill_up import Platform, operations, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture(scope="module")
def platform(
    heroku_cli: Path,
    own_postgres: PostgresCluster,
    swarm_cluster: SwarmCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("faults-swarm-up")
    # Not deployed yet: the first fault's push is the app's first deploy.
    with running_platform(
        tmp, heroku_cli, own_postgres, split=False, deploy=False, swarm=swarm_cluster
    ) as platform:
        yield platform


def test_kill_up_on_a_swarm_at_random_points_of_each_operation(
    platform: Platform, schedule: random.Random
) -> None:
    for make in operations(platform.target, schedule):
        operation = make()
        platform.fault(operation, "up", schedule)
        if operation.name == "push":  # its dynos are Swarm services (a scale may drop them)
            assert platform.observer.swarm is not None and platform.observer.swarm.services()
    codes = platform.deployment.stop()
    assert codes == {"up": 0}, platform.deployment.log()[-4000:]
