"""Leases: one process at a time does a piece of work; a dead process's leases free at once.

On a real PostgreSQL: two PostgresLeases are two processes' connections. A process killed
(its connection terminated by the server, as when it dies) loses its leases and notices before
its next piece of work; the other takes them. A build container is swept by another worker only
once its build's lease is free.
"""

from __future__ import annotations

import contextlib
import uuid

import psycopg
import pytest

from tests.test_runtime import client  # noqa: F401 - the Docker engine with the stack image
from waka.adapters.leases import LocalLeases, PostgresLeases, leased
from waka.adapters.runtime import DockerRuntime
from waka.adapters.stack import STACK_IMAGE


@pytest.fixture
def two_processes(postgres_url: str, postgres_schema: str):  # type: ignore[no-untyped-def]
    first = PostgresLeases(postgres_url, postgres_schema)
    second = PostgresLeases(postgres_url, postgres_schema)
    yield first, second
    first.close()
    second.close()


def test_one_holder_at_a_time_and_release(two_processes) -> None:  # type: ignore[no-untyped-def]
    first, second = two_processes
    assert first.hold("dyno-manager")
    assert first.hold("dyno-manager")  # again: a check that it is still ours
    assert not second.hold("dyno-manager")
    assert second.taken("dyno-manager") and first.taken("dyno-manager")
    assert not second.taken("addon-manager")
    first.release("dyno-manager")
    assert not first.taken("dyno-manager")
    assert second.hold("dyno-manager")
    with leased(first, "build:1") as ours:
        assert ours
        with leased(second, "build:1") as theirs:
            assert not theirs
    assert second.hold("build:1")


def test_a_dead_process_loses_its_leases_at_once(two_processes, postgres_url: str) -> None:  # type: ignore[no-untyped-def]
    first, second = two_processes
    assert first.hold("webhooks")
    pid = first._conn.info.backend_pid  # the server side of the first process's connection
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert second.hold("webhooks")  # freed with the connection
    assert not first.hold("webhooks")  # and the first notices before its next tick
    second.close()  # the second dies too: the first takes over again
    assert first.hold("webhooks")


def test_schemas_are_separate_installations(postgres_url: str, postgres_schema: str) -> None:
    here, elsewhere = (
        PostgresLeases(postgres_url, postgres_schema),
        PostgresLeases(postgres_url, f"other_{uuid.uuid4().hex[:8]}"),
    )
    try:
        assert here.hold("dyno-manager") and elsewhere.hold("dyno-manager")
    finally:
        here.close()
        elsewhere.close()


def test_local_leases_are_this_process_alone() -> None:
    leases = LocalLeases()
    assert not leases.taken("api-log")
    assert leases.hold("api-log") and leases.taken("api-log")
    leases.release("api-log")
    assert not leases.taken("api-log")


def test_a_worker_sweeps_only_containers_whose_lease_is_free(
    client,  # noqa: F811
    two_processes,
) -> None:  # type: ignore[no-untyped-def]
    """Worker B's builder sweeps the build containers of a dead worker, never a live one's."""
    live_worker, sweeper = two_processes
    platform = uuid.uuid4().hex[:12]
    runtime = DockerRuntime(client, STACK_IMAGE, {"waka.platform": platform})
    held, free = f"build:{uuid.uuid4()}", f"build:{uuid.uuid4()}"
    assert live_worker.hold(held)
    started = {}
    for lease in (held, free):
        started[lease] = client.containers.run(
            STACK_IMAGE,
            ["sleep", "60"],
            detach=True,
            labels={"waka.role": "run", "waka.platform": platform, "waka.lease": lease},
        )
    try:
        removed = runtime.sweep(lambda labels: sweeper.taken(labels["waka.lease"]))
        assert removed == 1
        left = client.containers.list(all=True, filters={"label": f"waka.platform={platform}"})
        assert [c.labels["waka.lease"] for c in left] == [held]
    finally:
        for container in started.values():
            with contextlib.suppress(Exception):
                container.remove(force=True)
