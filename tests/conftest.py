"""Fixtures shared by every test: settings and a bootstrapped platform on each backend.

`settings` (and so `platform`) is parametrized over the two event stores waka supports:
"sqlite" (files in a temporary WAKA home) and "postgres" (a fresh schema per test in the
server at $WAKA_TEST_DATABASE_URL). Without a reachable PostgreSQL the postgres variants are
skipped, except under CI (env CI set), where they fail: CI must never pass by skipping.

The platform settings a developer may have exported (WAKA_HOME, WAKA_DATABASE_URL, ...) are
removed for every test: each test builds its own Settings, and a stray WAKA_CIPHER_KEY would
otherwise reach the ledger (eventsourcing reads WAKA_-prefixed variables from os.environ).

Test directories may add their own conftest.py (tests/e2e/ does); keep this one general.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from waka.bootstrap import Platform, bootstrap
from waka.config import Settings
from waka.domain.actors import Actor

# The `swarm_cluster` fixture (a real multi-node Swarm) for any test that asks for it.
pytest_plugins = ("tests.swarm_cluster",)


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the group marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the test Swarm runs in one xdist worker (`--dist loadgroup`, as
    scripts/test runs): the session's Swarm is made once, not once per worker."""
    for item in items:
        if "swarm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("swarm"))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Under `--dist loadgroup`, xdist names a test's group in its node id: a test on the Swarm
    without it would make a second Swarm in another worker (two at once overload the machine)."""
    if not session.config.getoption("loadgroup", default=False):  # set in xdist workers
        return
    strays = [
        item.nodeid
        for item in session.items
        if "swarm_cluster" in getattr(item, "fixturenames", ())
        and not item.nodeid.endswith("@swarm")
    ]
    if strays:
        raise pytest.UsageError(f"tests on the Swarm outside its xdist group: {strays}")


DEFAULT_TEST_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgres")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def postgres_test_url() -> str:
    return os.environ.get("WAKA_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


# Variables that Settings.from_env() reads and that change where or how the ledger is stored.
PLATFORM_ENV = ("WAKA_HOME", "WAKA_DATABASE_URL", "WAKA_DATABASE_SCHEMA", "WAKA_CIPHER_KEY")


@pytest.fixture(autouse=True)
def _no_platform_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PLATFORM_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL server's URL, once it has answered a query."""
    import psycopg

    url = postgres_test_url()
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach or log in
        message = (
            f"PostgreSQL is not reachable at WAKA_TEST_DATABASE_URL={url!r} ({exc}). "
            "Start it (see .ci/run) or point WAKA_TEST_DATABASE_URL at a server."
        )
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh, empty schema for one test, dropped with everything in it afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for a platform of its own: a temporary home, and on postgres its own schema."""
    home = tmp_path / "waka"
    if backend == "sqlite":
        return Settings(home=home)
    schema = request.getfixturevalue("postgres_schema")
    return Settings(
        home=home, database_url=request.getfixturevalue("postgres_url"), database_schema=schema
    )


@pytest.fixture
def make_platform(settings: Settings) -> Iterator[Callable[..., Platform]]:
    """Bootstrap a platform (by default on `settings`); every one is closed after the test.

    Call it again to simulate another process or a restart on the same stores.
    """
    opened: list[Platform] = []

    def make(custom: Settings | None = None) -> Platform:
        platform = bootstrap(custom or settings)
        opened.append(platform)
        return platform

    yield make
    for platform in reversed(opened):
        platform.close()


@pytest.fixture
def platform(make_platform: Callable[..., Platform]) -> Platform:
    return make_platform()


def register_actor(platform: Platform, email: str) -> Actor:
    """Register a user on the platform's ledger and return who they are as an actor."""
    account, _key = platform.ledger.register_user(email)
    return account.as_actor()


@pytest.fixture
def make_actor(platform: Platform) -> Callable[[str], Actor]:
    """A function: email -> a newly registered user's actor on `platform`."""
    return lambda email: register_actor(platform, email)


@pytest.fixture
def actor(make_actor: Callable[[str], Actor]) -> Actor:
    """A registered user who owns the apps a test creates."""
    return make_actor("owner@example.com")
