"""Fixtures of the fault-injection suite.

- `fault_seed`: the seed of every random point in the run: $WAKA_FAULT_SEED to replay one, else
  a new one. It is printed at the start and added to every failing test's report; each test
  derives its own random schedule from it and its name (`schedule`), so one test replays alone.
- `own_postgres`: a PostgreSQL cluster of the module's own (initdb in a temporary directory, on
  a free port), which a test may restart; never the machine's shared server.
- `heroku_cli`, `stack_image`: those of tests/e2e.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import free_port, heroku_cli, skip_or_fail, stack_image

from .postgres_cluster import PostgresCluster, pg_bin_dir

__all__ = ["heroku_cli", "stack_image"]

SEED_ENV = "WAKA_FAULT_SEED"


def _run_seed() -> int:
    """$WAKA_FAULT_SEED, else one seed for the whole run: pytest-xdist's workers share the
    run's id, so they draw the same seed."""
    if os.environ.get(SEED_ENV):
        return int(os.environ[SEED_ENV])
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run:
        return int(hashlib.sha256(run.encode()).hexdigest()[:8], 16)
    return secrets.randbits(32)


_SEED = _run_seed()


def pytest_report_header() -> str:
    return f"fault injection: {SEED_ENV}={_SEED} (set it to replay these random points)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(
            ("fault seed", f"replay with {SEED_ENV}={_SEED} python -m pytest '{item.nodeid}'")
        )


@pytest.fixture(scope="session")
def fault_seed() -> int:
    print(f"\nfault injection: {SEED_ENV}={_SEED}")
    return _SEED


@pytest.fixture
def schedule(fault_seed: int, request: pytest.FixtureRequest) -> random.Random:
    """This test's random points: the same for the same seed and test, whatever else runs."""
    return random.Random(f"{fault_seed}:{request.node.name}")


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresCluster]:
    if pg_bin_dir() is None:
        skip_or_fail("PostgreSQL's initdb is not installed: the fault suite runs its own cluster")
    cluster = PostgresCluster(free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
