"""Real apps need more than a bare stack: a Django app on Heroku Postgres, pushed with git.

It depends on psycopg2 built from source (`--no-binary psycopg2`: gcc, Python's headers and
libpq's pg_config in the stack image), runs `python manage.py migrate` as its release phase (the
`python` command), serves through the router with the ORM, and `heroku run python ...` and the
`#!/usr/bin/env python` shebang of `./manage.py` work in one-off dynos. Real parts throughout:
`waka up`, the official Heroku CLI, git, Docker containers of the stack image, PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import (
    DEFAULT_TEST_DATABASE_URL,
    GitResult,
    WakaServer,
    app_repo,
    git_url,
    running_server,
    unique_name,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

ADMIN_URL = os.environ.get("WAKA_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
PACKAGES = "/app/.heroku/python-packages"


@pytest.fixture(scope="module")
def server(heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WakaServer]:
    """`waka up` whose Heroku Postgres add-ons live on the test PostgreSQL server."""
    env = {"WAKA_ADDONS_POSTGRES_URL": ADMIN_URL}
    with running_server(tmp_path_factory.mktemp("waka-stack-apps"), heroku_cli, env) as server:
        yield server


@pytest.fixture(scope="module")
def deployed(
    server: WakaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, GitResult]]:
    """The django-postgres app with a Heroku Postgres database, pushed once: (name, push)."""
    app = unique_name("django")
    server.heroku("apps:create", app)
    server.heroku("addons:create", "heroku-postgresql:essential-0", "-a", app)
    repo = app_repo("django-postgres", tmp_path_factory.mktemp("repos") / app)
    assert os.access(repo.path / "manage.py", os.X_OK), "the fixture's manage.py lost its x bit"
    pushed = repo.push(git_url(server, app))
    try:
        yield app, pushed
    finally:  # its database goes with it
        server.heroku("apps:destroy", app, "--confirm", app, check=False)


def run(server: WakaServer, app: str, *command: str) -> str:
    """`heroku run -x -a APP -- COMMAND...`: its output; it must exit 0."""
    return server.heroku("run", "-x", "-a", app, "--", *command).stdout


def test_the_push_builds_psycopg2_from_source(deployed: tuple[str, GitResult]) -> None:
    _, pushed = deployed
    assert pushed.returncode == 0, pushed.output
    remote = pushed.remote()
    assert any(re.match(r"Building wheel for psycopg2\b", line) for line in remote), remote
    assert not any("psycopg2_binary" in line or "psycopg2-binary" in line for line in remote)
    assert any(line.startswith("Successfully installed") and "Django" in line for line in remote)
    assert any(re.search(r"\b1 static file copied", line) for line in remote), remote


def test_the_release_phase_runs_python_manage_py_migrate(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    app, pushed = deployed
    remote = pushed.remote()
    assert "-----> Running release command..." in remote, remote
    assert "Applying hello.0001_initial... OK" in remote, remote
    releases = json.loads(server.heroku("releases", "-a", app, "--json").stdout)
    latest = max(releases, key=lambda r: r["version"])
    assert latest["status"] == "succeeded" and latest["current"], latest


def test_the_web_dyno_serves_through_the_orm_with_psycopg2(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    app, _ = deployed

    def answer() -> dict | None:
        response = httpx.get(
            f"http://127.0.0.1:{server.router_port}/",
            headers={"Host": f"{app}.localhost"},
            timeout=30,
        )
        return response.json() if response.status_code == 200 else None

    first = wait_for(answer, timeout=120, what="the Django app answering through the router")
    second = answer()
    assert first["driver"] == "psycopg2", first
    assert first["driver_file"] == f"{PACKAGES}/psycopg2/__init__.py", first
    assert second is not None and second["visits"] == first["visits"] + 1, (first, second)


def test_heroku_run_python_uses_the_compiled_psycopg2(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    app, _ = deployed
    versions = run(
        server,
        app,
        "python",
        "-c",
        "import sys, django, psycopg2; "
        "print(sys.version_info[0], django.get_version(), psycopg2.__libpq_version__)",
    ).split()
    assert versions[0] == "3" and versions[1].startswith("4."), versions
    assert int(versions[2]) >= 150000, versions  # the stack's libpq (PostgreSQL 15)
    # Built here, linked to the stack's own libpq: a -binary wheel bundles a copy of its own.
    linked = run(server, app, "sh", "-c", f"ldd {PACKAGES}/psycopg2/_psycopg*.so")
    assert re.search(r"libpq\.so\.5 => (/usr)?/lib/\S+/libpq\.so\.5 ", linked), linked
    assert "psycopg2_binary.libs" not in linked, linked


def test_manage_py_runs_by_its_shebang_in_a_one_off_dyno(
    server: WakaServer, deployed: tuple[str, GitResult]
) -> None:
    app, _ = deployed
    shown = run(server, app, "./manage.py", "showmigrations", "--no-color", "hello")
    assert shown.split() == ["hello", "[X]", "0001_initial"], shown
